"""A run trained by an earlier version of the code (the commit before the
training package was restructured) evaluates to the same top-1 and resumes
with today's code: the workdir and checkpoint format did not change."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from perceiver_jax.train import loop
from perceiver_jax.train import run_config
from tests.helpers.command_utils import REPO

OLD_COMMIT = '066973e'


def _old(root, *args):
  """`python -m *args` with the old code (cwd and PYTHONPATH)."""
  process = subprocess.run(
      [sys.executable, '-m', *args], cwd=root,
      env=dict(os.environ, PYTHONPATH=str(root)), capture_output=True,
      text=True, timeout=600)
  assert process.returncode == 0, process.stderr[-3000:]


@pytest.fixture(scope='module')
def old_run(tmp_path_factory):
  """The old code's runlocal digits run, and its final evaluation by that
  code (the last test record of its metrics.jsonl)."""
  root = tmp_path_factory.mktemp('old')
  archive = subprocess.run(
      ['git', '-C', REPO, 'archive', OLD_COMMIT, 'perceiver_jax',
       'experiments', 'configs'], capture_output=True, check=True)
  subprocess.run(['tar', '-x', '-C', str(root)], input=archive.stdout,
                 check=True)
  workdir = root / 'run'
  _old(root, 'experiments.train', '--config=configs/digits.py:runlocal',
       f'--workdir={workdir}')
  records = [json.loads(line) for line in
             (workdir / 'metrics.jsonl').read_text().splitlines()]
  final = [r for r in records if 'test/top1' in r][-1]
  return workdir, {'step': final['step'], 'top1': final['test/top1'],
                   'num_examples': final['test/num_examples']}


def test_an_old_run_evaluates_to_the_same_top1(old_run):
  workdir, old = old_run
  new = loop.evaluate_checkpoint(run_config.read(str(workdir)),
                                 str(workdir / 'checkpoints'))
  assert new['step'] == old['step'] == 6
  assert new['top1'] == old['top1']
  assert new['num_examples'] == old['num_examples'] == 360


def test_an_old_run_resumes_for_more_steps(old_run, tmp_path, capsys):
  workdir = tmp_path / 'run'
  shutil.copytree(old_run[0], workdir)
  config = run_config.read(str(workdir))
  config.train.num_steps = 8  # A longer run is an accepted relaunch.
  result = loop.train_and_evaluate(config, str(workdir))
  assert f'Resumed from {workdir}/checkpoints/6 (step 6)' in (
      capsys.readouterr().out)
  assert result['step'] == 8
  assert result['checkpoint'] == f'{workdir}/checkpoints/8'
