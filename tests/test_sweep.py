"""Tests of perceiver_jax.sweep and `python -m experiments.sweep`."""

import csv
import io
import json
import os
import subprocess
import sys

import pytest

from tests.helpers import command_utils
from configs import digits
from perceiver_jax import cli
from perceiver_jax import sweep as h
from perceiver_jax.train import run_config


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
  out = io.StringIO()
  assert h.run_sweep('configs/digits_ablations.py:study=sharing',
                     str(tmp_path), dry_run=True, python='py',
                     out=out) == 0
  commands = out.getvalue().splitlines()
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


def test_command_line_axes_cross_or_zip_with_parsed_values():
  config = digits.get_config('runlocal')
  points = h.command_line_points(
      config, ['optimizer.learning_rate=3e-4,1e-3', 'config.seed=0,1,2'])
  # Values parsed by the fields' types (float, int), the first axis slowest.
  assert points == [{'config.optimizer.learning_rate': lr, 'config.seed': s}
                    for lr in (0.0003, 0.001) for s in (0, 1, 2)]
  assert all(type(p['config.optimizer.learning_rate']) is float and
             type(p['config.seed']) is int for p in points)
  names = [h.point_name(p, h.sweep_keys(points)) for p in points]
  assert names == ['learning_rate=0.0003,seed=0', 'learning_rate=0.0003,seed=1',
                   'learning_rate=0.0003,seed=2', 'learning_rate=0.001,seed=0',
                   'learning_rate=0.001,seed=1', 'learning_rate=0.001,seed=2']
  zipped = h.command_line_points(
      config, ['model.encoder.share_weights=true,False',
               'model.input.index_dims=(4,4),(2,8)'], zip_axes=True)
  assert zipped == [
      {'config.model.encoder.share_weights': True,
       'config.model.input.index_dims': (4, 4)},
      {'config.model.encoder.share_weights': False,
       'config.model.input.index_dims': (2, 8)}]
  assert [h.point_name(p, h.sweep_keys(zipped)) for p in zipped] == [
      'share_weights=True,index_dims=4_4', 'share_weights=False,index_dims=2_8']
  # None only where None is the default.
  assert h.command_line_points(config, ['evaluator.max_examples=None,7']) == [
      {'config.evaluator.max_examples': None},
      {'config.evaluator.max_examples': 7}]


@pytest.mark.parametrize('axes, zip_axes, message', [
    (['seed'], False, "--sweep='seed' is not FIELD=VALUE"),
    (['seed=0,,1'], False, 'has an empty value'),
    (['seed=0', 'seed=1'], False, '--sweep gives seed twice'),
    (['seed=zero'], False, "'zero' is not a valid int for seed"),
    (['optimizer.learnin_rate=1'], False,
     'optimizer.learnin_rate is not a field of the config'),
    (['model=1'], False, 'model is a group of fields'),
    (['seed=0,1', 'optimizer.learning_rate=1e-3'], True,
     'differ in length (seed has 2, optimizer.learning_rate has 1)'),
])
def test_malformed_axes_are_refused(axes, zip_axes, message):
  with pytest.raises(cli.UsageError) as error:
    h.command_line_points(digits.get_config('runlocal'), axes,
                          zip_axes=zip_axes)
  assert message in str(error.value)


def test_config_points_cross_command_line_points(tmp_path):
  points = h.get_points('configs/digits_ablations.py:study=sharing',
                        ['optimizer.learning_rate=1e-3,2e-3'])
  # get_hyper's 2 x 2 points (sharing x seed), each with both rates.
  assert points == [{'config.model.encoder.share_weights': share, 'config.seed': seed,
                     'config.optimizer.learning_rate': lr}
                    for share in (True, False) for seed in (0, 1)
                    for lr in (0.001, 0.002)]
  with pytest.raises(cli.UsageError, match='get_hyper of .* sweeps too'):
    h.get_points('configs/digits_ablations.py:study=sharing', ['seed=3'])
  with pytest.raises(cli.UsageError, match='defines no get_hyper'):
    h.get_points('configs/digits.py')
  with pytest.raises(cli.UsageError, match='repeats points'):
    h.get_points('configs/digits.py', ['seed=1,1'])
  out = io.StringIO()
  assert h.run_sweep('configs/digits.py:runlocal', str(tmp_path / 'r'),
                     axes=['seed=0,1'], dry_run=True, python='py',
                     out=out) == 0
  assert out.getvalue().splitlines() == [
      'py -m experiments.train --config=configs/digits.py:runlocal '
      f'--config.seed={s} --workdir={tmp_path}/r/seed={s}' for s in (0, 1)]
  assert not os.path.exists(tmp_path / 'r')


def _fake_point(root, name, overrides, finals, *, metric_mode='max'):
  """A finished point whose run evaluated test/top1 = `finals` in turn."""
  workdir = root / name
  workdir.mkdir(parents=True)
  config = digits.get_config('runlocal')
  config.evaluator.metric_mode = metric_mode
  run_config.write(str(workdir), config)
  (workdir / h.POINT_FILE).write_text(json.dumps(dict(
      overrides=overrides, finished=True, wall_s=1.0)))
  (workdir / 'metrics.jsonl').write_text(''.join(
      json.dumps({'step': 3 * (i + 1), 'test/top1': v}) + '\n'
      for i, v in enumerate(finals)))


@pytest.mark.parametrize('mode', ['max', 'min'])
def test_summary_statistics_over_seeds(tmp_path, monkeypatch, mode):
  monkeypatch.setattr(h, '_num_params', lambda config: 1234)
  finals = {0.001: (0.90, 0.92, 0.94), 0.003: (0.80, 0.86, 0.83)}
  for lr, values in finals.items():
    for seed, final in enumerate(values):
      _fake_point(tmp_path, f'learning_rate={lr},seed={seed}',
                  {'config.optimizer.learning_rate': lr, 'config.seed': seed},
                  [0.5, final], metric_mode=mode)
  keys, rows, metric, got_mode = h.summary_rows(str(tmp_path))
  assert (metric, got_mode) == ('test/top1', mode)
  groups = h.seed_statistics(keys, rows, mode)
  # By hand: means 0.92 and 0.83; sample stds sqrt((0.02^2 + 0.02^2) / 2)
  # = 0.02 and sqrt((0.03^2 + 0.03^2) / 2) = 0.03.
  expected = [('learning_rate=0.001', 0.92, 0.02),
              ('learning_rate=0.003', 0.83, 0.03)]
  if mode == 'min':
    expected.reverse()
  assert [(g['name'], g['seeds'], g['params']) for g in groups] == [
      (name, 3, 1234) for name, _, _ in expected]
  for group, (_, mean, std) in zip(groups, expected):
    assert group['mean'] == pytest.approx(mean)
    assert group['std'] == pytest.approx(std)
  text = h.summarize(str(tmp_path))
  best = expected[0]
  assert text.splitlines()[-1] == (
      f'Best: {best[0]} (mean final test/top1 {best[1]:.4f} ± '
      f'{best[2]:.4f} over 3 seeds; {mode} is best).')
  assert f'| {best[0].split("=")[1]} | {best[1]:.4f} | {best[2]:.4f} | 3 |' \
      in text


def test_bare_summarize_takes_the_workdir():
  assert h.bare_summarize(
      ['prog', '--workdir=w', '--summarize']) == ['prog', '--workdir=w',
                                                 '--summarize=w']
  assert h.bare_summarize(
      ['prog', '--summarize', '--workdir=w']) == ['prog', '--summarize=w',
                                                 '--workdir=w']
  # The value as the next argument is left to the flag parser.
  assert h.bare_summarize(['prog', '--summarize', 'r']) == [
      'prog', '--summarize', 'r']


def test_summarize_refuses_a_directory_without_points(tmp_path):
  with pytest.raises(cli.UsageError, match='holds no sweep points'):
    h.summarize(str(tmp_path))
  assert not os.listdir(tmp_path)


def test_sweep_is_interrupted_reruns_skips_and_summarizes(tmp_path):
  # The runs are train/test_loop.py's runlocal digits config (so the
  # persistent compilation cache hits), swept over two seeds from the
  # command line.
  root = tmp_path / 'root'
  command = [sys.executable, '-m', 'experiments.sweep',
             '--config=configs/digits.py:runlocal', '--sweep=seed=0,1',
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
