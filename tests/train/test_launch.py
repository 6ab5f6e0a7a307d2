"""Nothing lost on a bad launch, and evaluation says what it scored.

Every case runs on a copy of conftest.py's `digits_run`; the commands run
as a user types them, on one device, in subprocesses.
"""

import glob
import json
import logging
import os
import re
import shutil

import pytest

from tests.helpers import command_utils
from configs import digits as digits_config
from perceiver_jax.train import checkpoint as checkpoint_lib
from perceiver_jax.train import loop
from perceiver_jax.train import run_config
from perceiver_jax.train import writers

RUNLOCAL = '--config=configs/digits.py:runlocal'
# What a run prints as it goes; everything else counts as "more output".
PROGRESS = re.compile(r'^(Training |Resumed from |step \d+/\d+ |eval \S+ at '
                      r'step |Checkpoint: |\{)')


def _config(**train):
  config = digits_config.get_config('runlocal')
  config.train.update(train)
  return config


@pytest.fixture
def run(digits_run):
  return digits_run[0]


@pytest.fixture
def copy(run, tmp_path):
  target = tmp_path / 'run'
  shutil.copytree(run, target)
  return target


def _damage(workdir, step=6):
  """Truncates the largest array file of a checkpoint to half its size."""
  arrays = glob.glob(f'{workdir}/checkpoints/{step}/default/d/*')
  damaged = max(arrays, key=os.path.getsize)
  with open(damaged, 'r+b') as f:
    f.truncate(os.path.getsize(damaged) // 2)
  return damaged


def _other_lines(result):
  return [line for line in (result.stdout + result.stderr).splitlines()
          if line.strip() and not PROGRESS.match(line)]


def test_model_override_on_relaunch_is_refused_and_changes_nothing(copy):
  before = command_utils.file_digests(copy)
  result = command_utils.run_module('experiments.train', RUNLOCAL,
                                    f'--workdir={copy}',
                                    '--config.model.encoder.num_latents=16')
  assert result.returncode == 2  # A user's mistake (perceiver_jax.cli).
  assert result.stderr.strip() == (
      'error: ValueError: config.model.encoder.num_latents is 8 in '
      f'{copy}/config.json but 16 in this launch: a relaunch of an existing run may change only '
      'its length, evaluation cadence, data paths and execution modes that '
      'compute the same function. Train the changed '
      'config in a new --workdir; nothing was written.')
  assert command_utils.file_digests(copy) == before


def test_without_config_json_the_checkpoint_shapes_refuse(copy):
  # The checkpoint's metadata alone tells that 16 latents do not fit: its
  # latent array is [num_latents, num_latent_channels] = [8, 16].
  os.remove(copy / 'config.json')
  before = command_utils.file_digests(copy)
  config = _config()
  config.model.encoder.num_latents = 16
  with pytest.raises(checkpoint_lib.CheckpointMismatchError,
                     match=re.escape('parameter perceiver/latents has shape '
                                     '(8, 16) there and shape (16, 16) in '
                                     'the config')):
    loop.train_and_evaluate(config, str(copy))
  assert command_utils.file_digests(copy) == before


def test_longer_run_is_allowed_and_the_old_config_kept(copy, capsys):
  original = (copy / 'config.json').read_bytes()
  result = loop.train_and_evaluate(_config(num_steps=8), str(copy))
  assert result['step'] == 8
  out = capsys.readouterr().out
  assert 'Config changed since the last launch: train.num_steps 6 -> 8' in out
  history = glob.glob(f'{copy}/config_history/config-*.json')
  assert len(history) == 1
  assert open(history[0], 'rb').read() == original
  assert json.loads((copy / 'config.json').read_text())['train'][
      'num_steps'] == 8


def test_relaunch_names_an_unreadable_config_json(copy):
  text = (copy / 'config.json').read_text()
  (copy / 'config.json').write_text(text[:len(text) // 2])
  before = command_utils.file_digests(copy)
  for module, flags in (('experiments.train', (RUNLOCAL,)),
                        ('experiments.evaluate', ())):
    result = command_utils.run_module(module, *flags, f'--workdir={copy}')
    assert result.returncode == 2, module
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith(
        f'error: ValueError: {copy}/config.json is not readable JSON'), lines
  assert command_utils.file_digests(copy) == before


def test_evaluate_refuses_a_damaged_checkpoint_then_falls_back(copy, run):
  _damage(copy)
  checkpoints = copy / 'checkpoints'
  before = command_utils.file_digests(copy)
  for flags in ((), (f'--checkpoint={checkpoints}/6',)):
    result = command_utils.run_module('experiments.evaluate',
                                      f'--workdir={copy}', *flags)
    assert result.returncode == 2
    assert result.stdout == ''
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith(
        f'error: DamagedCheckpointError: Checkpoint {checkpoints}/6 is '
        'damaged (')
    assert (f'the newest intact one is {checkpoints}/3. Pass --fallback'
            in lines[0])
    assert command_utils.file_digests(copy) == before  # No evaluations/ either.

  result = command_utils.run_module('experiments.evaluate',
                                    f'--workdir={copy}', '--fallback')
  assert result.returncode == 0, result.stderr[-3000:]
  assert len(_other_lines(result)) <= 3, _other_lines(result)
  assert 'Traceback' not in result.stderr
  scored = json.loads((copy / 'evaluations' / 'test-step3.json').read_text())
  assert scored['step'] == 3
  assert scored['skipped_steps'] == [6]
  assert scored['checkpoint'] == f'{checkpoints}/3'
  # The same numbers as step 3 of the intact run.
  intact = loop.evaluate_checkpoint(_config(), str(run / 'checkpoints'),
                                    step=3)
  assert intact['skipped_steps'] == []
  assert scored['top1'] == pytest.approx(intact['top1'], abs=1e-6)
  assert scored['num_examples'] == intact['num_examples'] == 360


def test_training_over_a_damaged_checkpoint_warns_once(copy):
  damaged = _damage(copy)
  result = command_utils.run_module('experiments.train', RUNLOCAL,
                                    f'--workdir={copy}')
  assert result.returncode == 0, result.stderr[-3000:]
  other = _other_lines(result)
  assert len(other) <= 3, other
  warnings = [line for line in other if line.startswith('warning: ')]
  assert len(warnings) == 1
  assert warnings[0].startswith(
      f'warning: checkpoint {copy}/checkpoints/6 is damaged (OUT_OF_RANGE '
      f'reading {damaged}); resuming from {copy}/checkpoints/3 instead')
  assert 'Event loop is closed' not in result.stderr
  assert f'Resumed from {copy}/checkpoints/3 (step 3).' in result.stdout
  assert len(glob.glob(f'{copy}/checkpoints.corrupt/6-*')) == 1
  assert sorted(os.listdir(copy / 'checkpoints')) == ['3', '6']


def test_check_relaunch_allows_length_and_cadence_only(copy):
  config = _config(num_steps=12, eval_every_steps=4)
  assert run_config.check_relaunch(str(copy), config) == [
      ('train.eval_every_steps', 3, 4), ('train.num_steps', 6, 12)]
  config = _config()
  config.optimizer.learning_rate = 0.5
  with pytest.raises(ValueError, match=r'config\.optimizer\.learning_rate '
                     r'is 0\.001 in .* but 0\.5 in this launch'):
    run_config.check_relaunch(str(copy), config)
  assert run_config.check_relaunch(str(copy.parent / 'new'), config) == []


def _record_of_error_raised_in(filename: str) -> logging.LogRecord:
  """asyncio's log record of a collected task whose exception was raised in
  code from `filename`."""
  try:
    exec(compile('raise ValueError("DATA_LOSS: read failed")', filename,
                 'exec'))  # pylint: disable=exec-used
  except ValueError as error:
    exc_info = (type(error), error, error.__traceback__)
  return logging.LogRecord('asyncio', logging.ERROR, 'base_events.py', 1,
                           'Task exception was never retrieved', (), exc_info)


def test_orbax_tasks_never_retrieved_are_counted_not_logged():
  errors = checkpoint_lib._ClosedLoopErrors()  # pylint: disable=protected-access
  before = errors.count
  orbax_failure = _record_of_error_raised_in(
      '/site-packages/orbax/checkpoint/_src/serialization/tensorstore.py')
  other_failure = _record_of_error_raised_in('/home/user/my_code.py')
  assert errors._log_filter(orbax_failure) is False  # pylint: disable=protected-access
  assert errors._log_filter(other_failure) is True  # pylint: disable=protected-access
  plain = logging.LogRecord('asyncio', logging.ERROR, 'x.py', 1,
                            'Task exception was never retrieved', (), None)
  assert errors._log_filter(plain) is True  # pylint: disable=protected-access
  assert errors.count == before + 1


def test_evaluating_all_checkpoints_refuses_a_damaged_one_or_skips_it(copy):
  _damage(copy, step=3)
  checkpoints = str(copy / 'checkpoints')
  before = command_utils.file_digests(copy)
  with pytest.raises(loop.DamagedCheckpointError,
                     match=f'Checkpoint {checkpoints}/3 is damaged'):
    loop.evaluate_checkpoints(_config(), checkpoints)
  results = loop.evaluate_checkpoints(_config(), checkpoints, fallback=True)
  assert [r['step'] for r in results] == [3, 6]
  assert set(results[0]) == {'step', 'damaged'}
  assert results[1]['num_examples'] == 360
  assert command_utils.file_digests(copy) == before  # Read only.


def test_an_older_runs_new_encoder_fields_compare_at_their_defaults(copy):
  """A run written before `mlp_activation` existed computed the tanh GELU:
  relaunching it with the exact GELU is a change of model, refused."""
  stored = json.loads((copy / 'config.json').read_text())
  del stored['model']['encoder']['mlp_activation']
  (copy / 'config.json').write_text(json.dumps(stored))
  assert run_config.check_relaunch(str(copy), _config()) == []
  changed = _config()
  changed.model.encoder.mlp_activation = 'gelu'
  with pytest.raises(ValueError, match='config.model.encoder.mlp_activation '
                     'is "gelu_tanh" in .* but "gelu" in this launch'):
    run_config.check_relaunch(str(copy), changed)


def test_build_directory_is_all_or_nothing(tmp_path):
  target = tmp_path / 'out'

  def failing(scratch):
    (tmp_path / 'seen').write_text(scratch)
    with open(os.path.join(scratch, 'half'), 'w') as f:
      f.write('x')
    raise OSError(28, 'No space left on device')

  with pytest.raises(OSError, match='No space left'):
    writers.build_directory(str(target), failing)
  assert sorted(os.listdir(tmp_path)) == ['seen']  # No target, no scratch.
  target.mkdir()  # An empty target is replaced.
  writers.build_directory(
      str(target), lambda scratch: open(os.path.join(scratch, 'done'),
                                        'w').close())
  assert sorted(os.listdir(tmp_path)) == ['out', 'seen']
  assert os.listdir(target) == ['done']
  with pytest.raises(ValueError, match='exists and is not empty'):
    writers.build_directory(str(target), lambda scratch: None)
