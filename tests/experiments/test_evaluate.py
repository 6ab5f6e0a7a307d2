"""Tests of `python -m experiments.evaluate --checkpoint=all` and overrides."""

import json
import os

import pytest

from tests.helpers import command_utils
from perceiver_jax.train import evaluation


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


def test_all_checkpoints_match_single_evaluations(tmp_path):
  workdir = tmp_path / 'run'
  trained = command_utils.run_module(
      'experiments.train', '--config=configs/digits.py:runlocal',
      f'--workdir={workdir}')
  assert trained.returncode == 0, trained.stderr[-3000:]
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['3', '6']
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
  for row in summary['evaluations']:
    assert row['num_examples'] == 100  # The override took effect.
    single = command_utils.run_module(
        'experiments.evaluate', f'--workdir={workdir}',
        f'--checkpoint={workdir}/checkpoints/{row["step"]}', *overrides)
    assert single.returncode == 0, single.stderr[-3000:]
    alone = json.loads(single.stdout.strip().splitlines()[-1])
    for metric in ('top1', 'top5', 'loss'):
      assert row[metric] == pytest.approx(alone[metric], rel=1e-6)
  best = max(summary['evaluations'], key=lambda r: r['top1'])
  assert (summary['best_step'], summary['best']) == (best['step'],
                                                     best['top1'])
  assert every.stdout.splitlines()[0] == (
      '| step | top1 | loss | num_examples | top5 |')
  assert (f'Best: step {best["step"]} (test top1 {best["top1"]:.4f}; max is '
          'best).') in every.stdout
