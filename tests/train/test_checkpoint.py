"""Faults provoked for real: signals, kills mid-save, corrupt checkpoints,
full disks, NaNs, bad configs, undecodable inputs, and two hosts.

Every run is the digits `runlocal` config (6 steps, checkpoints at 3 and 6)
on the 8 fake devices of conftest.py, in this process or in subprocesses
with the same devices, so that all of them share compiled programs through
the persistent compilation cache.
"""

import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

from absl import flags
import jax
import numpy as np
import pytest

from configs import digits as digits_config
from configs import imagenet as imagenet_config
from tests.helpers import fault_data
from perceiver_jax.data import digits
from perceiver_jax.train import checkpoint as checkpoint_lib
from perceiver_jax.train import launch
from perceiver_jax.train import loop
from tests.helpers.command_utils import REPO

RUNLOCAL = '--config=configs/digits.py:runlocal'
# The pieces gloo writes its "[Gloo] Rank 3 is connected to 3 peer ranks.
# Expected number of connected peer ranks is : 3" notes in.
_GLOO_NOTE_PIECES = (r'\[Gloo\] Rank|is connected to|peer ranks\.|'
                     r'Expected number of connected peer ranks is :|\d+|\s+')


def _config():
  return digits_config.get_config('runlocal')


def _env(**extra):
  # The fake devices of conftest.py (XLA_FLAGS) and its compilation cache
  # are inherited.
  return dict(os.environ, PYTHONPATH=REPO, **extra)


def _train_command(workdir, *flags):
  return [sys.executable, '-m', 'experiments.train', RUNLOCAL,
          f'--workdir={workdir}', *flags]


# experiments.train, killed (SIGKILL) while saving step $KILL_SAVING: every
# file written, the temporary directory not yet renamed.
_KILLED_MID_SAVE = """
import os, runpy, signal
from orbax.checkpoint import path
rename = path.atomicity.AtomicRenameTemporaryPath
finalize = rename.finalize
async def killed_before_rename(self, *args, **kwargs):
  if self._final_path.name == os.environ['KILL_SAVING']:
    os.kill(os.getpid(), signal.SIGKILL)
  return await finalize(self, *args, **kwargs)
rename.finalize = killed_before_rename
runpy.run_module('experiments.train', run_name='__main__')
"""


def _launch(workdir, *flags, **env):
  command = _train_command(workdir, *flags)
  if 'KILL_SAVING' in env:
    command[1:3] = ['-c', _KILLED_MID_SAVE]
  return subprocess.Popen(command, cwd=REPO,
                          env=_env(**env), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _wait_for_line(process, prefix, timeout=240):
  """Reads stdout until a line starting with `prefix`; returns all lines."""
  lines = []
  deadline = time.time() + timeout
  for line in process.stdout:
    lines.append(line)
    if line.startswith(prefix):
      return lines
    assert time.time() < deadline, f'No {prefix!r} line in time: {lines}'
  pytest.fail(f'The run ended before a {prefix!r} line: {lines}\n'
              f'{process.stderr.read()[-3000:]}')


def _steps(workdir):
  return checkpoint_lib.Checkpointer(
      os.path.join(workdir, 'checkpoints'), read_only=True).all_steps()


def _assert_same_params(a, b, atol=1e-6):
  assert int(a.step) == int(b.step)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=atol),
               a.params, b.params)


@pytest.fixture
def reference(digits_run):
  """An uninterrupted run (read only): its workdir and final state."""
  return str(digits_run[0]), digits_run[1]


def _resume(workdir):
  """Relaunches the runlocal config in `workdir` (in this process)."""
  return loop.train_and_evaluate(_config(), str(workdir), return_state=True)


def test_sigterm_finishes_the_step_checkpoints_and_exits_0(tmp_path,
                                                            reference,
                                                            capsys):
  workdir = tmp_path / 'run'
  process = _launch(workdir)
  lines = _wait_for_line(process, 'step 2/6')
  process.send_signal(signal.SIGTERM)
  out, err = process.communicate(timeout=120)
  out = ''.join(lines) + out
  assert process.returncode == 0, err[-3000:]
  match = re.search(r'Stopped by SIGTERM after step (\d); checkpoint: (\S+)\.'
                    r' Relaunch', out)
  assert match, out
  stopped = int(match.group(1))
  assert 2 <= stopped < 6
  assert match.group(2) == f'{workdir}/checkpoints/{stopped}'
  assert _steps(workdir)[-1] == stopped

  result = _resume(workdir)
  assert f'Resumed from {workdir}/checkpoints/{stopped}' in (
      capsys.readouterr().out)
  _assert_same_params(result['state'], reference[1])


def test_sigint_in_process_stops_at_an_agreed_step(tmp_path):
  fault_data.register()
  config = fault_data.config(signal_at_step=2)
  # Python's default_int_handler, or SIG_IGN in a background job.
  handler_before = signal.getsignal(signal.SIGINT)
  result = loop.train_and_evaluate(config, str(tmp_path))
  # SIGINT while reading batch 2 (0-based): step 3 carries the request
  # through its collectives; step 3 is a checkpoint step, so the loop waits
  # for it, reads the request and stops there, saving at once.
  assert result['stopped'] == 'SIGINT'
  assert result['step'] == 3
  assert result['checkpoint'] == f'{tmp_path}/checkpoints/3'
  assert _steps(tmp_path) == [3]
  # The handlers are gone after the run: SIGINT acts as before it.
  assert signal.getsignal(signal.SIGINT) is handler_before


def test_sigkill_mid_run_then_mid_save_resumes_exactly(tmp_path, reference):
  workdir = tmp_path / 'run'
  # Killed while training, after checkpoint 3.
  process = _launch(workdir)
  _wait_for_line(process, 'step 4/6')  # Printed after checkpoint 3.
  process.kill()
  process.communicate(timeout=60)
  assert process.returncode == -signal.SIGKILL
  assert _steps(workdir) == [3]

  # Relaunched, and killed while saving step 6: every file written to the
  # temporary directory, which was not yet renamed.
  process = _launch(workdir, KILL_SAVING='6')
  out, err = process.communicate(timeout=300)
  assert process.returncode == -signal.SIGKILL, err[-3000:]
  assert f'Resumed from {workdir}/checkpoints/3' in out
  leftovers = glob.glob(f'{workdir}/checkpoints/6.orbax-checkpoint-tmp*')
  assert len(leftovers) == 1
  assert glob.glob(f'{leftovers[0]}/default/*')
  assert _steps(workdir) == [3]

  # The next launch ignores and removes the leftover, resumes from 3 and
  # ends where the uninterrupted run did.
  result = _resume(workdir)
  assert not glob.glob(f'{workdir}/checkpoints/*tmp*')
  assert _steps(workdir) == [3, 6]
  _assert_same_params(result['state'], reference[1])


def _largest_array_file(step_dir):
  files = [f for f in glob.glob(f'{step_dir}/default/d/*')]
  return max(files, key=os.path.getsize)


def test_evaluation_needs_only_the_evaluation_batch_to_divide(reference):
  # Trained with 16 examples a step on 8 devices; evaluated where the
  # training batch would not divide (12 on 8 devices): only the evaluation
  # batch is read, so this works and gives the same metrics.
  checkpoints = os.path.join(reference[0], 'checkpoints')
  expected = loop.evaluate_checkpoint(_config(), checkpoints)
  config = _config()
  config.train.batch_size = 12
  assert loop.evaluate_checkpoint(config, checkpoints) == expected


def test_corrupt_latest_checkpoint_falls_back_and_is_kept(tmp_path,
                                                           reference,
                                                           capsys):
  workdir = tmp_path / 'run'
  shutil.copytree(reference[0], workdir)
  damaged = _largest_array_file(workdir / 'checkpoints' / '6')
  size = os.path.getsize(damaged)
  with open(damaged, 'r+b') as f:
    f.truncate(size // 2)

  # Evaluation refuses it, or (fallback) reads the previous checkpoint, and
  # writes nothing there.
  checkpoints = workdir / 'checkpoints'
  before = {p: os.path.getmtime(p) for p in glob.glob(
      f'{checkpoints}/**', recursive=True)}
  with pytest.raises(loop.DamagedCheckpointError, match='newest intact one '
                     f'is {checkpoints}/3'):
    loop.evaluate_checkpoint(_config(), str(checkpoints))
  metrics = loop.evaluate_checkpoint(_config(), str(checkpoints),
                                     fallback=True)
  assert metrics['step'] == 3
  assert metrics['skipped_steps'] == [6]
  assert {p: os.path.getmtime(p) for p in glob.glob(
      f'{checkpoints}/**', recursive=True)} == before

  # Training resumes from 3, sets 6 aside (kept) and writes a new 6.
  result = _resume(workdir)
  assert f'Resumed from {checkpoints}/3' in capsys.readouterr().out
  _assert_same_params(result['state'], reference[1])
  kept = glob.glob(f'{workdir}/checkpoints.corrupt/6-*')
  assert len(kept) == 1
  kept_file = os.path.join(kept[0], os.path.relpath(
      damaged, checkpoints / '6'))
  assert os.path.getsize(kept_file) == size // 2
  assert _steps(workdir) == [3, 6]


def _tmpfs_pages(directory):
  """The 4 KiB pages the files under `directory` would take on a tmpfs."""
  sizes = [os.path.getsize(os.path.join(root, name))
           for root, _, names in os.walk(directory) for name in names]
  return sum(-(-size // 4096) for size in sizes)


def _mount_tmpfs(path, size):
  os.makedirs(path)
  result = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}',
                           'tmpfs', str(path)], capture_output=True,
                          text=True)
  if result.returncode:
    pytest.skip(f'Cannot mount a tmpfs here ({result.stderr.strip()}).')


def test_full_disk_fails_clearly_and_keeps_the_previous_checkpoint(
    tmp_path, reference):
  # A real full disk: the checkpoints live on a tmpfs of 1.5 times the
  # reference run's checkpoint 3, in tmpfs's 4 KiB pages, which holds a copy
  # of that checkpoint; the run resumes from it and has no room for step 6.
  # (Orbax's file layout, and so a checkpoint's size, varies from save to
  # save: the disk is sized from the files it holds. chmod cannot refuse
  # root, who runs these tests; a full file system refuses everyone.)
  workdir = tmp_path / 'run'
  checkpoints = workdir / 'checkpoints'
  source = os.path.join(reference[0], 'checkpoints', '3')
  _mount_tmpfs(checkpoints, f'{_tmpfs_pages(source) * 4 * 3 // 2}k')
  try:
    shutil.copytree(source, checkpoints / '3')
    shutil.copy(os.path.join(reference[0], 'config.json'), workdir)
    with pytest.raises(checkpoint_lib.CheckpointWriteError) as error:
      loop.train_and_evaluate(_config(), str(workdir))
    message = str(error.value)
    assert 'No space left on device' in message
    assert (f'checkpoint of step 6 to {checkpoints}' in message)
    assert f'previous checkpoint {checkpoints}/3 is untouched' in message
    assert _steps(workdir) == [3]
    run = loop.Run(_config(), str(workdir), read_only=True)
    three = run.checkpointer.restore(
        jax.tree.map(np.asarray, reference[1]), 3)
    reference_three = loop.Run(_config(), reference[0], read_only=True
                               ).checkpointer.restore(
                                   jax.tree.map(np.asarray, reference[1]), 3)
    _assert_same_params(three, reference_three, atol=0)

    # A read-only file system (a permissions failure root cannot bypass).
    shutil.rmtree(glob.glob(f'{checkpoints}/*tmp*')[0])
    subprocess.run(['mount', '-o', 'remount,ro', str(checkpoints)],
                   check=True)
    with pytest.raises(checkpoint_lib.CheckpointWriteError) as error:
      loop.train_and_evaluate(_config(), str(workdir))
    assert 'Read-only file system' in str(error.value)
    assert f'previous checkpoint {checkpoints}/3 is untouched' in str(
        error.value)
    assert _steps(workdir) == [3]
  finally:
    subprocess.run(['umount', str(checkpoints)], check=False)


def test_nan_skip_mode_skips_and_counts(tmp_path):
  fault_data.register()
  config = fault_data.config(nan_at_step=3)
  config.train.skip_nonfinite_updates = True
  result = loop.train_and_evaluate(config, str(tmp_path), return_state=True)
  assert result['num_skipped'] == 1
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(
      result['state'].params))
  records = [json.loads(line) for line in
             (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  skipped = {r['step']: r['train/num_skipped'] for r in records
             if 'train/num_skipped' in r}
  assert skipped == {2: 0, 4: 1, 6: 1}
  # The logged rate is the one the optimizer applied: its count stops at a
  # skipped update (step 4's; AdamW's count after 6 steps with 1 skipped is
  # 5), so the update of step 6 ran at count 4, not 5.
  counts = [int(np.asarray(x)) for x in jax.tree.leaves(
      result['state'].opt_state) if np.ndim(x) == 0]
  assert counts and set(counts) == {5}
  run = loop.Run(config, str(tmp_path), read_only=True)
  rates = {r['step']: r['train/learning_rate'] for r in records
           if 'train/learning_rate' in r}
  np.testing.assert_allclose(
      [rates[2], rates[4], rates[6]],
      [run.schedule(1), run.schedule(3), run.schedule(4)], rtol=1e-6)
  assert run.schedule(4) != run.schedule(5)  # The check can tell them apart.


def test_nan_at_a_checkpoint_step_is_never_saved(tmp_path):
  # Step 3 (batch index 2) is a checkpoint step but not a log step: the
  # refused update must be caught before the save, not after it.
  fault_data.register()
  with pytest.raises(loop.NonFiniteLossError) as error:
    loop.train_and_evaluate(fault_data.config(nan_at_step=2), str(tmp_path))
  assert str(error.value).startswith(
      'Non-finite loss or gradient at step 3; the update was not applied. '
      'Last good checkpoint: none.')
  assert _steps(tmp_path) == []


def _error_lines(stderr):
  assert 'Traceback' not in stderr, stderr
  return [line for line in stderr.splitlines() if line.startswith('error:')]


def test_undecodable_jpegs_are_skipped_and_counted(tmp_path, capsys):
  fault_data.register()
  config = fault_data.config(jpeg_with_corrupt=True)
  result = loop.train_and_evaluate(config, str(tmp_path))
  assert result['step'] == 6
  records = [json.loads(line) for line in
             (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  counts = {r['step']: r['train/skipped_inputs'] for r in records
            if 'train/skipped_inputs' in r}
  # 40 records read in order, those at 5 and 20 undecodable, 16 per step:
  # by hand, step 2 ends at record 33 (2 skipped), step 4 at record 26 of
  # the second pass (4), step 6 at record 21 of the third pass (6).
  assert counts == {2: 2, 4: 4, 6: 6}
  assert 'undecodable inputs 6' in capsys.readouterr().out


@pytest.mark.parametrize('change, message', [
    (lambda c: c.train.update(batch_size=12),
     'batch_size=12 does not divide across the 8 devices'),
    (lambda c: c.model.encoder.update(num_self_heads=3),
     'num_self_heads=3 does not divide'),
    (lambda c: c.optimizer.update(learning_rate=-1e-3),
     'config.optimizer.learning_rate must be positive, got -0.001'),
    (lambda c: c.train.update(num_steps=0),
     'config.train.num_steps must be a positive integer, got 0'),
    (lambda c: c.update(task='digitz'), "Unknown config.task 'digitz'"),
    (lambda c: c.evaluator.update(split='validation'),
     "Unknown digits split 'validation'"),
    (lambda c: c.evaluator.update(metric='top_1'),
     "config.evaluator.metric must be one of the classification evaluator's "
     "metrics ['top1', 'top5', 'loss', 'num_examples'], got 'top_1'"),
])
def test_launch_checks_name_the_bad_value_and_write_nothing(
    change, message, tmp_path):
  config = _config()
  change(config)
  with pytest.raises(ValueError, match=re.escape(message)):
    loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')


def test_launch_reports_unprepared_imagenet_with_instructions(tmp_path):
  config = imagenet_config.get_config('runlocal')
  config.data.data_dir = str(tmp_path / 'nowhere')
  with pytest.raises(FileNotFoundError) as error:
    loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')
  assert 'python -m perceiver_jax.data.imagenet --manual_dir=' in str(
      error.value)
  assert not os.path.exists(tmp_path / 'nowhere' / 'imagenet2012')


def test_command_line_errors_are_one_line(tmp_path):
  # Launched together: each pays its own imports, in parallel.
  cases = {
      'heads': [RUNLOCAL, '--config.model.encoder.num_self_heads=3'],
      'variant': ['--config=configs/imagenet.py:variant=fourierr'],
      'nan': ['--config=tests/helpers/fault_config.py:nan_at_step=3'],
  }
  processes = {
      name: subprocess.Popen(
          [sys.executable, '-m', 'experiments.train', *flags,
           f'--workdir={tmp_path / name}'], cwd=REPO, env=_env(),
          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for name, flags in cases.items()}
  errors = {}
  for name, process in processes.items():
    _, err = process.communicate(timeout=300)
    # A mistake in the config: status 2; a run that diverged: status 1.
    assert process.returncode == (1 if name == 'nan' else 2), (
        name, err[-3000:])
    (errors[name],) = _error_lines(err)
  # Bad configs fail before anything is written.
  assert not os.path.exists(tmp_path / 'heads')
  assert not os.path.exists(tmp_path / 'variant')
  assert errors['heads'].startswith(
      'error: ValueError: config.model.encoder.num_self_heads=3 does not '
      'divide')
  assert "Unknown variant 'fourierr'; choose one of" in errors['variant']
  assert errors['nan'] == (
      'error: NonFiniteLossError: Non-finite loss or gradient at step 4; '
      'the update was not applied. Last good checkpoint: '
      f'{tmp_path}/nan/checkpoints/3. Set config.train.skip_nonfinite_'
      'updates=True to skip such updates instead.')


def test_no_pickle_anywhere_in_the_package():
  offenders = []
  for path in glob.glob(f'{REPO}/perceiver_jax/**/*.py', recursive=True) + (
      glob.glob(f'{REPO}/experiments/*.py')):
    text = open(path).read()
    if re.search(r'import (cloud)?pickle|import dill|pickle\.loads?\(|'
                 r'allow_pickle\s*=\s*True|PyTreeCheckpointer|'
                 r'ocp\.args\.PyTree', text):
      offenders.append(path)
  assert not offenders
  # Checkpoints are read with orbax's standard (array) restore only.
  source = open(f'{REPO}/perceiver_jax/train/checkpoint.py').read()
  assert re.findall(r'ocp\.args\.(\w+)', source) == [
      'StandardSave', 'StandardRestore']


@pytest.mark.parametrize('environment, expected', [
    ({}, None),
    # An sbatch script running one process: SLURM_NTASKS alone.
    ({'SLURM_NTASKS': '4'}, None),
    ({'SLURM_NTASKS': '4', 'SLURM_STEP_NUM_TASKS': '4'}, 'SLURM'),
    ({'SLURM_STEP_NUM_TASKS': '1'}, None),
    ({'OMPI_COMM_WORLD_SIZE': '2'}, 'Open MPI'),
    ({'JAX_COORDINATOR_ADDRESS': '10.0.0.1:1234'}, 'JAX_COORDINATOR_ADDRESS'),
])
def test_cluster_environment_is_detected_only_with_several_tasks(
    monkeypatch, environment, expected):
  for name in ('SLURM_NTASKS', 'SLURM_STEP_NUM_TASKS', 'OMPI_COMM_WORLD_SIZE',
               'JAX_COORDINATOR_ADDRESS'):
    monkeypatch.delenv(name, raising=False)
  for name, value in environment.items():
    monkeypatch.setenv(name, value)
  assert launch.cluster_environment() == expected


def test_multihost_flags_must_come_together():
  try:
    flags.FLAGS(['prog', '--num_processes=2', '--process_id=0'])
    with pytest.raises(ValueError, match='need --coordinator_address'):
      launch.initialize_distributed()
    flags.FLAGS(['prog', '--coordinator_address=127.0.0.1:1',
                 '--num_processes=2', '--process_id=2'])
    with pytest.raises(ValueError, match=re.escape(
        '--process_id must be in [0, --num_processes), got 2 of 2')):
      launch.initialize_distributed()
  finally:
    flags.FLAGS.unparse_flags()


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_equal_one_process_with_as_many_devices(tmp_path):
  # SGD: its update is linear in the gradient, so the different order of
  # the gradient sums (2 x 2 devices over gloo, 4 devices in one process)
  # stays at rounding level. (Adam's normalisation turns rounding noise in
  # near-zero gradients into differences of ~3e-5 after 6 steps.)
  sgd = ['--config.optimizer.name=sgd', '--config.optimizer.learning_rate=0.1']
  port = _free_port()
  shared = tmp_path / 'two_hosts'
  single_dir = tmp_path / 'one_host'
  commands = [(_train_command(
      shared, *sgd, f'--coordinator_address=127.0.0.1:{port}',
      '--num_processes=2', f'--process_id={i}'), 2) for i in range(2)]
  commands.append((_train_command(single_dir, *sgd), 4))
  processes = [subprocess.Popen(
      command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True, env=_env(
          XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}'))
               for command, devices in commands]
  outputs = [p.communicate(timeout=500) for p in processes]
  for process, (_, err) in zip(processes, outputs):
    assert process.returncode == 0, err[-3000:]

  assert 'on 4 device(s) of 2 process(es)' in outputs[0][0]
  assert 'step 6/6' in outputs[0][0]
  assert 'on 4 device(s) of 1 process(es)' in outputs[2][0]
  # Process 1 prints nothing but gloo's connection notes, which gloo's
  # threads write piece by piece, so that notes can interleave mid-line...
  assert not re.sub(_GLOO_NOTE_PIECES, '', outputs[1][0]), outputs[1][0]
  # ...and writes nothing: one train and one eval record at step 6.
  records = (shared / 'metrics.jsonl').read_text().splitlines()
  assert [json.loads(r)['step'] for r in records].count(6) == 2
  # At each checkpoint both processes checked that their parameters are
  # bit-identical (parallel.assert_same_on_all_hosts), else they would have
  # failed; process 0's checkpoints equal the one-process run's.
  config = _config()
  config.optimizer.update(name='sgd', learning_rate=0.1)
  example = next(digits.load('train', is_training=True, batch_dims=[1, 16],
                             config=config.data))
  for step in (3, 6):
    two, one = [loop.Run(config, str(d), read_only=True).restore_state(
        example, step) for d in (shared, single_dir)]
    _assert_same_params(two, one, atol=1e-6)
  moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()),
                       two.params, loop.Run(
                           config, str(single_dir), read_only=True
                       ).restore_state(example, 3).params)
  assert max(jax.tree.leaves(moved)) > 1e-4  # Steps 4-6 did train.
