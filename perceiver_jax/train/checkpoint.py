"""Checkpoints with orbax: atomic, auto-resumed, the last few plus the best.

A checkpoint is a directory `<workdir>/checkpoints/<step>/` written by orbax
to a temporary name (`<step>.orbax-checkpoint-tmp-*`) and renamed when
complete, so a crash mid-save never leaves a half-written checkpoint under a
step's name; such temporary directories are never listed as checkpoints and
are removed by the next run once it has restored
(`Checkpointer.remove_unfinished_saves`). Arrays are stored with orbax's
array format (never pickle).

Faults:
- A checkpoint that cannot be read (a truncated or missing file) is skipped
  by `restore_newest`, which falls back to the next older one and reports
  what it skipped (`Restored.skipped`); the caller decides how to say so.
  When an older one restores, the unreadable newer ones are moved aside to
  `<directory>.corrupt/` (kept, never deleted) so that the resumed run can
  write those steps again.
- A checkpoint of another model (a config whose parameter shapes differ
  from those in the checkpoint's metadata) is refused with
  `CheckpointMismatchError` naming the parameter and both shapes, before
  anything is read or written: orbax would otherwise restore the stored
  shapes whatever the target says.
- A failed read or write leaves tensorstore callbacks aimed at orbax's
  closed event loop; their "Event loop is closed" errors are awaited and
  counted here instead of each printing a traceback.
- A save that fails (full disk, read-only file system) raises
  `CheckpointWriteError` naming the directory and the previous checkpoint,
  which the failed save never touches.

In a multi-process run every process calls `save` and `restore*`: orbax
writes host (numpy) arrays from process 0 only, and all processes read the
same step.
"""

import dataclasses
import logging as python_logging
import os
import re
import shutil
import signal
import sys
import threading
import time
import traceback
from typing import Any, Mapping, Optional

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from perceiver_jax import checks
from perceiver_jax.train import parallel

PyTree = Any

# Test hook (tests/train/test_checkpoint.py): when set to a step, the process kills
# itself with SIGKILL while saving that step, after every file is written
# and before the temporary directory is renamed: the worst moment to die.
KILL_DURING_SAVE_ENV = 'PERCEIVER_JAX_TEST_SIGKILL_DURING_SAVE_OF_STEP'


class CheckpointWriteError(OSError):
  """A checkpoint could not be written (full disk, permissions...)."""


class CheckpointReadError(ValueError):
  """No checkpoint of a directory could be restored."""


class CheckpointMismatchError(ValueError):
  """A checkpoint holds parameters of other shapes than the config's."""


@dataclasses.dataclass
class Restored:
  """What `restore_newest` restored and what it skipped.

  Attributes:
    state: the restored state, or None when there is no checkpoint.
    step: its step, or None.
    skipped: `(step, reason)` of each newer checkpoint that was unreadable,
      newest first.
  """
  state: Optional[PyTree]
  step: Optional[int]
  skipped: list[tuple[int, str]]


class _ClosedLoopErrors:
  """Counts the "Event loop is closed" errors of orbax's failed reads.

  When a restore fails, orbax closes its event loop while tensorstore still
  has reads in flight; each of them then reports `RuntimeError('Event loop
  is closed')` through `sys.unraisablehook`, one traceback apiece (about 150
  for a small model), and a task of orbax's that failed may be logged by
  asyncio as "Task exception was never retrieved" when collected. They say
  nothing the failed restore has not said, so they are counted here; every
  other unraisable error and log record goes on as before.
  """

  def __init__(self):
    self.count = 0
    self._previous = None
    self._lock = threading.Lock()

  def install(self) -> None:
    with self._lock:
      # Again whenever another hook replaced ours (pytest does, per test).
      if sys.unraisablehook != self._hook:
        self._previous = sys.unraisablehook
        sys.unraisablehook = self._hook
      asyncio_logger = python_logging.getLogger('asyncio')
      if self._log_filter not in asyncio_logger.filters:
        asyncio_logger.addFilter(self._log_filter)

  def _log_filter(self, record: python_logging.LogRecord) -> bool:
    """Drops (and counts) asyncio's "Task (or Future) exception was never
    retrieved" for a task of orbax's, or a future of tensorstore's, that
    failed reading or writing a checkpoint: the same stranded work,
    reported when it is garbage collected."""
    error = record.exc_info[1] if record.exc_info else None
    message = record.getMessage()
    if not (error is not None and
            message.startswith(('Task exception was never',
                                'Future exception was never'))):
      return True
    files = [frame.filename for frame in traceback.extract_tb(
        error.__traceback__)]
    # tensorstore's own errors carry its spec in their text.
    if not (any('orbax' in name or 'tensorstore' in name for name in files)
            or 'tensorstore_spec' in str(error)):
      return True
    with self._lock:
      self.count += 1
    return False

  def _hook(self, unraisable) -> None:
    error = unraisable.exc_value
    if (isinstance(error, RuntimeError) and
        str(error) == 'Event loop is closed'):
      with self._lock:
        self.count += 1
      return
    self._previous(unraisable)

  def settle(self, quiet_for: float = 0.2, at_most: float = 2.0) -> int:
    """Waits until no such error came for `quiet_for` s; their number."""
    deadline = time.time() + at_most
    seen = -1
    while seen != self.count and time.time() < deadline:
      seen = self.count
      time.sleep(quiet_for)
    return self.count


_CLOSED_LOOP_ERRORS = _ClosedLoopErrors()


def short_reason(error: Exception) -> str:
  """An exception as a short one-line reason (tensorstore's run long).

  Tensorstore's errors name the file they failed on last: the reason is
  then its status code and that file.
  """
  text = ' '.join(str(error).split())
  files = re.findall(r'local file "([^"]+)"', text)
  if files and not files[-1].endswith('/'):
    code = text.split(':', 1)[0]
    return f'{code} reading {files[-1]}'
  if len(text) > 160:
    text = text[:157] + '...'
  return f'{type(error).__name__}: {text}'


def _param_shapes(tree: Any, prefix: str = '') -> dict[str, tuple[int, ...]]:
  """`{'module/name': shape}` of a nested mapping of arrays (or metadata)."""
  shapes = {}
  for key, value in tree.items():
    name = f'{prefix}/{key}' if prefix else str(key)
    if isinstance(value, Mapping):
      shapes.update(_param_shapes(value, name))
    else:
      shapes[name] = tuple(value.shape)
  return shapes


class _KillBeforeRename(ocp.path.atomicity.AtomicRenameTemporaryPath):
  """Orbax's atomic-rename protocol, dying just before the rename."""

  async def finalize(self, *args, **kwargs):
    if self._final_path.name == os.environ.get(KILL_DURING_SAVE_ENV):
      os.kill(os.getpid(), signal.SIGKILL)
    return await super().finalize(*args, **kwargs)


def _sync(name: str) -> None:
  """A barrier across processes (nothing to do on a single host)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def _same_on_all_processes(value: int) -> bool:
  return bool(np.all(parallel.gather_from_hosts(value) == value))


def _true_on_all_processes(value: bool) -> bool:
  return bool(np.all(parallel.gather_from_hosts(int(value))))


# Orbax writes step N into `N<TMP_MARKER><time>` and renames it when done.
TMP_MARKER = '.orbax-checkpoint-tmp'


def _remove_unfinished_saves(directory: str) -> None:
  """Deletes the temporary directories of saves that never finished.

  They are left by a process killed mid-save and are never taken for
  checkpoints; process 0 deletes them while the others wait.
  """
  if jax.process_index() == 0:
    for name in os.listdir(directory):
      if TMP_MARKER in name:
        logging.warning('Removing %s/%s, a save that never finished.',
                        directory, name)
        shutil.rmtree(os.path.join(directory, name))
  _sync('perceiver_jax_checkpoint_removed_unfinished_saves')


class Checkpointer:
  """Saves and restores the training state of one workdir."""

  def __init__(self, directory: str, *, keep: int = 3,
               best_metric: Optional[str] = None, best_mode: str = 'max',
               read_only: bool = False):
    """Opens (creating unless `read_only`) a checkpoint directory.

    Args:
      directory: where step directories live.
      keep: the newest `keep` checkpoints are kept.
      best_metric: the metric (from `save(..., metrics=...)`) whose best
        checkpoint is kept as well; None keeps only the newest.
      best_mode: 'max' or 'min' for `best_metric`.
      read_only: open for restoring only (evaluation never writes).
    """
    checks.positive_int(keep, 'config.checkpoint.keep')
    if best_mode not in ('max', 'min'):
      raise ValueError(f'best_mode must be "max" or "min", got {best_mode!r}.')
    self.directory = os.path.abspath(directory)
    self._read_only = read_only
    # Where `restore_newest` moved damaged checkpoints to, for the report.
    self.set_aside_to: list[str] = []
    policies = [ocp.checkpoint_managers.LatestN(keep)]
    if best_metric is not None:
      policies.append(ocp.checkpoint_managers.BestN(
          get_metric_fn=lambda metrics: metrics[best_metric],
          reverse=best_mode == 'min',
          n=1,
          keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        create=not read_only,
        read_only=read_only,
        # Unfinished saves are removed by `_remove_unfinished_saves`, here
        # and now: orbax's own clean-up runs in a background thread, where
        # file-system mocks of other code (TFDS mock data) can reach it.
        cleanup_tmp_directories=False,
        temporary_path_class=(_KillBeforeRename if os.environ.get(
            KILL_DURING_SAVE_ENV) else None),
        # Synchronous saves: when save() returns, the checkpoint is complete.
        enable_async_checkpointing=False,
        preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(
            policies))
    self._manager = ocp.CheckpointManager(self.directory, options=options)
    _CLOSED_LOOP_ERRORS.install()

  def remove_unfinished_saves(self) -> None:
    """Deletes the leftovers of saves killed midway (see the docstring).

    Called by a run once it has restored (or found nothing to restore):
    until then, a launch writes nothing, so that a refused one leaves the
    directory as it was.
    """
    if not self._read_only:
      _remove_unfinished_saves(self.directory)

  def latest_step(self) -> Optional[int]:
    """The newest complete checkpoint's step, or None."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """Steps of every complete checkpoint, oldest first."""
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: PyTree,
           metrics: Optional[Mapping[str, float]] = None) -> None:
    """Writes `state` (host arrays) as the checkpoint of `step`.

    Raises:
      CheckpointWriteError: the write failed; earlier checkpoints are
        untouched (orbax writes to a temporary directory).
    """
    previous = self.latest_step()
    try:
      self._manager.save(
          step, args=ocp.args.StandardSave(state),
          metrics=None if metrics is None else {
              k: float(v) for k, v in metrics.items()},
          force=True)
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      _CLOSED_LOOP_ERRORS.settle()  # A failed write strands callbacks too.
      kept = ('no earlier checkpoint' if previous is None else
              f'the previous checkpoint {self.directory}/{previous} is '
              'untouched')
      raise CheckpointWriteError(
          f'Could not write the checkpoint of step {step} to '
          f'{self.directory}: {type(e).__name__}: {e}. Free space or fix '
          f'permissions there and relaunch; {kept}.') from e

  def check_shapes(self, target: PyTree, step: int) -> None:
    """Refuses a checkpoint whose parameters differ in shape from `target`'s.

    Reads only the step's metadata (no array).

    Raises:
      CheckpointMismatchError: a parameter is missing, extra or of another
        shape; the first such is named with both shapes.
      Exception: the metadata cannot be read (a damaged checkpoint).
    """
    # The item orbax stores a `StandardSave` under, in the step's folder.
    item = epath.Path(self.directory) / str(step) / (
        ocp.checkpoint_manager.DEFAULT_ITEM_NAME)
    stored = _param_shapes(
        ocp.StandardCheckpointHandler().metadata(item)['params'])
    wanted = _param_shapes(target.params)
    where = f'{self.directory}/{step}'
    for name in sorted(set(stored) | set(wanted)):
      if stored.get(name) != wanted.get(name):
        has = lambda shapes: ('no such parameter' if name not in shapes
                              else f'shape {shapes[name]}')
        raise CheckpointMismatchError(
            f'Checkpoint {where} does not fit this config: parameter {name} '
            f'has {has(stored)} there and {has(wanted)} in the config. Use '
            'the config the run was trained with, or a new --workdir.')

  def restore(self, target: PyTree, step: Optional[int] = None) -> PyTree:
    """Restores the checkpoint of `step` (default: newest) shaped as `target`.

    Raises:
      FileNotFoundError: there is no checkpoint (of that step).
      CheckpointMismatchError: its parameters have other shapes.
      Exception: the checkpoint is damaged (orbax's or tensorstore's error).
    """
    if step is None:
      step = self.latest_step()
    if step is None or step not in self._manager.all_steps():
      raise FileNotFoundError(
          f'No checkpoint{"" if step is None else f" for step {step}"} in '
          f'{self.directory}.')
    try:
      self.check_shapes(target, step)
      return self._manager.restore(step,
                                   args=ocp.args.StandardRestore(target))
    except CheckpointMismatchError:
      raise
    except Exception:
      # Let the failed read's stray callbacks land before anything else is
      # printed (see `_ClosedLoopErrors`).
      _CLOSED_LOOP_ERRORS.settle()
      raise

  def try_restore(self, target: PyTree,
                  step: int) -> tuple[Optional[PyTree], Optional[str]]:
    """`(state, None)` for the checkpoint of `step`, or `(None, reason)`
    when it is damaged (on any process: a step counts only if every process
    read it).

    Raises:
      CheckpointMismatchError: its parameters have other shapes.
    """
    message = None
    try:
      state = self.restore(target, step)
    except CheckpointMismatchError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      # Damage shows up as many kinds of error (tensorstore, orbax
      # metadata, missing files); all mean this step cannot be used.
      state, message = None, short_reason(e)
    if not _true_on_all_processes(message is None):
      return None, message or 'unreadable on another process'
    return state, None

  def restore_newest(self, target: PyTree, *, up_to: Optional[int] = None,
                     set_aside: bool = True) -> Restored:
    """The newest checkpoint that restores, shaped as `target`.

    Unreadable checkpoints are skipped and listed in the result. If an older
    one restores (so the newer ones are damaged, not of another model), the
    damaged ones are moved to `<directory>.corrupt/` when `set_aside` and
    the directory is writable. Every process restores the same step.

    Args:
      target: the state's structure, shapes and dtypes (host arrays).
      up_to: consider only checkpoints of this step and older.
      set_aside: move the damaged newer checkpoints aside (see above).

    Returns:
      The restored state and step (None and None when there is no
      checkpoint) and the skipped steps.

    Raises:
      CheckpointMismatchError: the newest readable metadata has parameters
        of other shapes than `target` (a config of another model).
      CheckpointReadError: no checkpoint restores; the error of each is
        given (nothing is moved).
    """
    failures = []
    steps = [s for s in self.all_steps() if up_to is None or s <= up_to]
    # Every process must try the same steps in the same order: each try
    # below ends in a collective.
    if not (_same_on_all_processes(len(steps)) and
            _same_on_all_processes(steps[-1] if steps else -1)):
      raise CheckpointReadError(
          f'Processes see different checkpoints in {self.directory} (this '
          f'one steps {steps}); is the directory shared?')
    for step in reversed(steps):
      state, message = self.try_restore(target, step)
      if message is not None:
        failures.append((step, message))
        continue
      if failures and set_aside:
        self._set_aside([s for s, _ in failures])
      return Restored(state, step, failures)
    if failures:
      listed = '; '.join(f'step {s}: {m}' for s, m in failures)
      raise CheckpointReadError(
          f'No checkpoint in {self.directory} could be restored ({listed}).')
    return Restored(None, None, [])

  def _set_aside(self, steps: list[int]) -> None:
    """Moves unreadable step directories out of the way, keeping them."""
    if self._read_only:
      return
    _sync('perceiver_jax_checkpoint_set_aside_start')
    error = None
    if jax.process_index() == 0:
      corrupt = f'{self.directory}.corrupt'
      try:
        os.makedirs(corrupt, exist_ok=True)
        for step in steps:
          target = os.path.join(
              corrupt, f'{step}-{time.strftime("%Y%m%d-%H%M%S")}')
          os.replace(os.path.join(self.directory, str(step)), target)
          self.set_aside_to.append(target)
      except OSError as e:
        error = e
    # Every process learns of a failure on process 0 (none waits forever).
    if not _true_on_all_processes(error is None):
      raise CheckpointWriteError(
          f'Could not move the unreadable checkpoints {steps} of '
          f'{self.directory} aside to {self.directory}.corrupt'
          + (f': {type(error).__name__}: {error}' if error else
             ' (see process 0)') + '; nothing was deleted.') from error
    self._manager.reload()

  def close(self) -> None:
    self._manager.close()
