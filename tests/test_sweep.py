"""Tests of perceiver_jax.sweep and `python -m experiments.sweep`."""

import csv
import json
import os
import subprocess
import sys

import pytest

import command_utils
from perceiver_jax import sweep as h


def test_sweep_product_and_zip_generate_the_points():
  assert h.sweep('config.seed', range(3)) == [
      {'config.seed': 0}, {'config.seed': 1}, {'config.seed': 2}]
  points = h.product([h.sweep('config.a', [1, 2]),
                      h.sweep('config.b.c', ['x', 'y', 'z'])])
  # 2 x 3 points, the first sweep varying slowest.
  assert points == [{'config.a': a, 'config.b.c': c}
                    for a in (1, 2) for c in ('x', 'y', 'z')]
  points = h.zip([h.sweep('config.a', [1, 2]),
                  h.sweep('config.b', [True, False])])
  assert points == [{'config.a': 1, 'config.b': True},
                    {'config.a': 2, 'config.b': False}]
  nested = h.product([h.zip([h.sweep('config.a', [1, 2]),
                             h.sweep('config.b', [3, 4])]),
                      h.fixed('config.c', None)])
  assert nested == [{'config.a': 1, 'config.b': 3, 'config.c': None},
                    {'config.a': 2, 'config.b': 4, 'config.c': None}]


def test_hyper_errors():
  with pytest.raises(ValueError, match=r'equal length.*\[2, 3\]'):
    h.zip([h.sweep('config.a', [1, 2]), h.sweep('config.b', [1, 2, 3])])
  with pytest.raises(ValueError, match="'config.a' is set by more than one"):
    h.product([h.sweep('config.a', [1]), h.sweep('config.a', [2])])
  with pytest.raises(ValueError, match="'model.x'"):
    h.sweep('model.x', [1])
  with pytest.raises(ValueError, match='no values'):
    h.sweep('config.x', [])


def test_point_names_and_command_values():
  keys = ['config.model.input.permutation_seed',
          'config.model.encoder.share_weights', 'config.data.seed',
          'config.seed']
  point = {'config.model.input.permutation_seed': None,
           'config.model.encoder.share_weights': False, 'config.data.seed': 3,
           'config.seed': 1}
  # 'seed' is ambiguous, so both seeds keep one more component.
  assert h.point_name(point, keys) == (
      'permutation_seed=None,share_weights=False,data.seed=3,seed=1')
  assert h.format_value((8, 8)) == '(8,8)'
  assert h.format_value([4]) == '(4,)'
  command = h.point_command('configs/x.py:a=b', point, '/r/p', python='py')
  # None is the config's default, left off the command line.
  assert command == ['py', '-m', 'experiments.train',
                     '--config=configs/x.py:a=b',
                     '--config.model.encoder.share_weights=False',
                     '--config.data.seed=3', '--config.seed=1',
                     '--workdir=/r/p']


def test_ablation_studies_points_and_dry_run(tmp_path):
  perm = h.get_points('configs/digits_ablations.py:study=permutation')
  assert len(perm) == 8  # 2 architectures x raw/permuted x 2 seeds.
  assert {p['config.model.architecture'] for p in perm} == {
      'perceiver', 'convnet'}
  cross = h.get_points('configs/digits_ablations.py:study=cross_attends,'
                       'seeds=1')
  assert [(p['config.model.encoder.num_cross_attends'],
           p['config.model.encoder.cross_attend_placement'])
          for p in cross] == [(1, 'interleaved'), (2, 'interleaved'),
                              (4, 'interleaved'), (4, 'start')]
  lines = []

  class _Out:
    def write(self, text):
      lines.append(text)

    def flush(self):
      pass

  assert h.run_sweep('configs/digits_ablations.py:study=sharing',
                     str(tmp_path), dry_run=True, python='py',
                     out=_Out()) == 0
  commands = ''.join(lines).splitlines()
  assert len(commands) == 4
  assert commands[0] == (
      'py -m experiments.train --config=configs/digits_ablations.py:'
      'study=sharing --config.model.encoder.share_weights=True --config.seed=0 '
      f'--workdir={tmp_path}/share_weights=True,seed=0')
  assert not os.listdir(tmp_path)  # A dry run writes nothing.


def test_none_override_needs_a_none_default(tmp_path):
  config = tmp_path / 'bad.py'
  config.write_text(
      'from configs import digits\n'
      'def get_config():\n  return digits.get_config("runlocal")\n'
      'def get_hyper(h):\n  return h.sweep("config.train.num_steps", '
      '[None, 3])\n')
  with pytest.raises(ValueError, match='num_steps=None but its default'):
    h.run_sweep(str(config), str(tmp_path / 'root'), dry_run=False)


def test_sweep_is_interrupted_reruns_skips_and_summarizes(tmp_path):
  # The runs are test_train_loop.py's runlocal digits config (so the
  # persistent compilation cache hits), swept over two seeds.
  config = tmp_path / 'two_seeds.py'
  config.write_text(
      'from configs import digits\n'
      'def get_config():\n  return digits.get_config("runlocal")\n'
      'def get_hyper(h):\n  return h.sweep("config.seed", [0, 1])\n')
  root = tmp_path / 'root'
  command = [sys.executable, '-m', 'experiments.sweep', f'--config={config}',
             f'--workdir={root}']
  # Interrupt the sweep as soon as the second point starts.
  sweep_process = subprocess.Popen(
      command, cwd=command_utils.REPO, env=command_utils.one_device_env(),
      stdout=subprocess.PIPE, text=True)
  first_lines = []
  for line in sweep_process.stdout:
    first_lines.append(line)
    if line.startswith('running seed=1'):
      sweep_process.terminate()
      break
  rest, _ = sweep_process.communicate(timeout=120)
  first = ''.join(first_lines) + rest
  assert sweep_process.returncode != 0
  assert 'finished seed=0' in first
  assert 'interrupted' in first
  status = json.loads((root / 'seed=0' / h.POINT_FILE).read_text())
  assert status['finished'] and status['returncode'] == 0
  assert status['overrides'] == {'config.seed': 0}
  status = json.loads((root / 'seed=1' / h.POINT_FILE).read_text())
  assert not status['finished'] and status['returncode'] != 0
  first_log = (root / 'seed=0' / h.LOG_FILE).read_text()

  again = subprocess.run(
      command, cwd=command_utils.REPO, env=command_utils.one_device_env(),
      capture_output=True, text=True, timeout=400)
  assert again.returncode == 0, again.stderr[-3000:]
  assert 'skipping seed=0: finished' in again.stdout
  assert 'seed=0' not in again.stdout.replace('skipping seed=0: finished', '')
  assert 'finished seed=1' in again.stdout
  assert (root / 'seed=0' / h.LOG_FILE).read_text() == first_log
  status = json.loads((root / 'seed=1' / h.POINT_FILE).read_text())
  assert status['finished'] and status['attempts'] == 2

  markdown = h.summarize(str(root))
  with open(root / 'summary.csv') as f:
    rows = list(csv.DictReader(f))
  assert sorted(r['config.seed'] for r in rows) == ['0', '1']
  finals = []
  for row in rows:
    records = [json.loads(line) for line in (
        root / row['point'] / 'metrics.jsonl').read_text().splitlines()]
    evals = [r['test/top1'] for r in records if 'test/top1' in r]
    assert float(row['final test/top1']) == pytest.approx(evals[-1])
    assert float(row['best test/top1']) == pytest.approx(max(evals))
    assert row['steps'] == '6'
    # The trainer prints its own count of the parameters.
    log = (root / row['point'] / h.LOG_FILE).read_text()
    assert f'{int(row["params"]):,} parameters' in log
    assert float(row['wall_s']) > 0
    finals.append(float(row['final test/top1']))
  assert finals == sorted(finals, reverse=True)  # Best first.
  assert (root / 'summary.md').read_text() == markdown
  assert markdown.splitlines()[0].startswith('| seed | final test/top1 |')
  assert len([l for l in markdown.splitlines()
              if l.startswith('| 0 |') or l.startswith('| 1 |')]) == 2
