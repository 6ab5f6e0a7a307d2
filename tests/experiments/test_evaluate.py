"""Tests of `python -m experiments.evaluate --checkpoint=all` and overrides."""

import json
import shutil

import pytest

from tests.helpers import command_utils
from perceiver_jax.train import evaluation
from perceiver_jax.train import loop
from perceiver_jax.train import run_config


def test_best_step_and_table_by_hand():
  results = [{'step': 3, 'top1': 0.5, 'loss': 1.25},
             {'step': 6, 'top1': 0.75, 'loss': 1.5},
             {'step': 9, 'top1': 0.75, 'loss': 1.0}]
  assert evaluation.best_step(results, 'top1', 'max')['step'] == 6  # First tie.
  assert evaluation.best_step(results, 'loss', 'min')['step'] == 9
  assert evaluation.results_table(results, 'top1') == (
      '| step | top1 | loss |\n|---|---|---|\n| 3 | 0.5000 | 1.2500 |\n'
      '| 6 | 0.7500 | 1.5000 |\n| 9 | 0.7500 | 1.0000 |\n')


def test_overrides_are_split_from_the_flags():
  argv, overrides = evaluation.take_config_overrides(
      ['prog', '--workdir=w', '--config.evaluator.max_examples=7'])
  assert argv == ['prog', '--workdir=w']
  assert overrides == ['evaluator.max_examples=7']


def test_all_checkpoints_match_single_evaluations(tmp_path, digits_run):
  workdir = tmp_path / 'run'
  shutil.copytree(digits_run[0], workdir)
  overrides = ['--config.evaluator.max_examples=100',
               '--config.evaluator.batch_size=64']
  every = command_utils.run_module(
      'experiments.evaluate', f'--workdir={workdir}', '--checkpoint=all',
      *overrides)
  assert every.returncode == 0, every.stderr[-3000:]
  summary = json.loads((workdir / 'evaluations' / 'test-all.json').read_text())
  assert [r['step'] for r in summary['evaluations']] == [3, 6]
  assert summary['config_overrides'] == [o[len('--config.'):]
                                         for o in overrides]
  # Progress of the evaluation on stderr (not a terminal: whole lines).
  assert 'evaluating test: 2 batches in' in every.stderr
  # Each step alone: step 3 by the command (`--checkpoint=<its directory>`,
  # the same overrides), every step the way that command evaluates it.
  single = command_utils.run_module(
      'experiments.evaluate', f'--workdir={workdir}',
      f'--checkpoint={workdir}/checkpoints/3', *overrides)
  assert single.returncode == 0, single.stderr[-3000:]
  by_command = json.loads(single.stdout.strip().splitlines()[-1])
  assert by_command['step'] == 3
  config = run_config.read(str(workdir))
  evaluation.apply_overrides(config, summary['config_overrides'])
  for row in summary['evaluations']:
    assert row['num_examples'] == 100  # The override took effect.
    alone = loop.evaluate_checkpoint(config, str(workdir / 'checkpoints'),
                                     step=row['step'])
    for result in [alone] + [by_command] * (row['step'] == 3):
      assert result['num_examples'] == 100
      for metric in ('top1', 'top5', 'loss'):
        assert row[metric] == pytest.approx(result[metric], rel=1e-6)
  best = max(summary['evaluations'], key=lambda r: r['top1'])
  assert (summary['best_step'], summary['best']) == (best['step'],
                                                     best['top1'])
  assert every.stdout.splitlines()[0] == (
      '| step | top1 | loss | num_examples | top5 |')
  assert (f'Best: step {best["step"]} (test top1 {best["top1"]:.4f}; max is '
          'best).') in every.stdout
