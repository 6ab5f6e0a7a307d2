"""Checkpoints with orbax: atomic, auto-resumed, the last few plus the best.

Orbax's manager lists steps, keeps the newest plus the best, and saves to a
temporary directory renamed when complete. Added here: `restore_newest`
falls back past damaged checkpoints (moved to `<dir>.corrupt/`), another
model's checkpoint is refused before reading, write failures name the
intact previous checkpoint. Every process calls every method.
"""

import dataclasses
import logging as python_logging
import os
import re
import shutil
import sys
import time
import traceback
from typing import Any, Mapping, Optional

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp

from perceiver_jax import checks
from perceiver_jax.train import parallel

PyTree = Any
# Orbax writes step N into `N<TMP_MARKER><time>` and renames it when done.
TMP_MARKER = '.orbax-checkpoint-tmp'


class CheckpointWriteError(OSError):
  """A checkpoint could not be written (full disk, permissions...)."""


class CheckpointReadError(ValueError):
  """No checkpoint of a directory could be restored."""


class CheckpointMismatchError(ValueError):
  """A checkpoint holds parameters of other shapes than the config's."""


@dataclasses.dataclass
class Restored:
  """State and step (None: no checkpoint); skipped: damaged (step, reason)."""
  state: Optional[PyTree]
  step: Optional[int]
  skipped: list[tuple[int, str]]


class _ClosedLoopErrors:
  """Counts, unprinted, the errors of reads a failed restore strands.

  Each in-flight tensorstore read reports "Event loop is closed" (a
  traceback apiece) and asyncio logs orbax's failed tasks when collected.
  """

  def __init__(self):
    self.count = 0  # A lost increment only shortens `settle`.
    self._previous = None

  def install(self) -> None:
    if sys.unraisablehook != self._hook:  # pytest replaces it per test.
      self._previous, sys.unraisablehook = sys.unraisablehook, self._hook
    asyncio_logger = python_logging.getLogger('asyncio')
    if self._log_filter not in asyncio_logger.filters:
      asyncio_logger.addFilter(self._log_filter)

  def _log_filter(self, record: python_logging.LogRecord) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    stranded = (
        error is not None and record.getMessage().startswith(
            ('Task exception was never', 'Future exception was never')) and
        ('tensorstore_spec' in str(error) or any(
            'orbax' in f.filename or 'tensorstore' in f.filename
            for f in traceback.extract_tb(error.__traceback__))))
    self.count += stranded
    return not stranded

  def _hook(self, unraisable) -> None:
    if str(unraisable.exc_value) != 'Event loop is closed':
      return self._previous(unraisable)
    self.count += 1

  def settle(self, quiet_for: float = 0.2, at_most: float = 2.0) -> int:
    """Waits until none came for `quiet_for` seconds."""
    deadline, seen = time.time() + at_most, -1
    while seen != self.count and time.time() < deadline:
      seen = self.count
      time.sleep(quiet_for)
    return self.count


_CLOSED_LOOP_ERRORS = _ClosedLoopErrors()


def short_reason(error: Exception) -> str:
  """One short line (tensorstore's: its code and the file)."""
  text = ' '.join(str(error).split())
  files = re.findall(r'local file "([^"]+)"', text)
  if files and not files[-1].endswith('/'):
    return f'{text.split(":", 1)[0]} reading {files[-1]}'
  if len(text) > 160:
    text = text[:157] + '...'
  return f'{type(error).__name__}: {text}'


def _param_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """`{'module/name': shape}` of nested mappings of arrays or metadata."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {'/'.join(str(k.key) for k in path): tuple(leaf.shape)
          for path, leaf in leaves}


def _same_everywhere(value: int) -> bool:
  return bool((parallel.gather_from_hosts(int(value)) == int(value)).all())


def _true_everywhere(flag: bool) -> bool:
  return bool(parallel.gather_from_hosts(int(flag)).all())


class Checkpointer:
  """Saves and restores the training state of one checkpoint directory."""

  def __init__(self, directory: str, *, keep: int = 3,
               best_metric: Optional[str] = None, best_mode: str = 'max',
               read_only: bool = False):
    """Opens `directory` (created by the first save): keeps the newest
    `keep` and the best by `save(metrics=...)[best_metric]`."""
    checks.positive_int(keep, 'config.checkpoint.keep')
    if best_mode not in ('max', 'min'):
      raise ValueError(f'best_mode must be "max" or "min", got {best_mode!r}.')
    self.directory = os.path.abspath(directory)
    self._read_only = read_only
    self.set_aside_to: list[str] = []  # Damaged checkpoints moved there.
    policies = [ocp.checkpoint_managers.LatestN(keep)]
    if best_metric is not None:
      policies.append(ocp.checkpoint_managers.BestN(
          get_metric_fn=lambda metrics: metrics[best_metric],
          reverse=best_mode == 'min', n=1,
          keep_checkpoints_without_metrics=False))
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(
            # A refused launch must leave a new workdir unwritten.
            create=False, read_only=read_only,
            # Orbax's clean-up runs in a thread, where other code's
            # file-system mocks (TFDS mock data) can reach it.
            cleanup_tmp_directories=False,
            enable_async_checkpointing=False,  # Complete when save returns.
            preservation_policy=(
                ocp.checkpoint_managers.AnyPreservationPolicy(policies))))
    _CLOSED_LOOP_ERRORS.install()

  def remove_unfinished_saves(self) -> None:
    """Deletes killed saves' temporary directories (after a restore)."""
    if (not self._read_only and jax.process_index() == 0 and
        os.path.isdir(self.directory)):
      for name in os.listdir(self.directory):
        if TMP_MARKER in name:
          logging.warning('Removing %s/%s, a save that never finished.',
                          self.directory, name)
          shutil.rmtree(os.path.join(self.directory, name))
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices('checkpoint_tmp_removed')

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:  # Complete checkpoints, oldest first.
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: PyTree,
           metrics: Optional[Mapping[str, float]] = None) -> None:
    """Writes `state` (host arrays); CheckpointWriteError if it fails."""
    previous = self.latest_step()
    try:
      os.makedirs(self.directory, exist_ok=True)
      self._manager.save(step, args=ocp.args.StandardSave(state), force=True,
                         metrics=None if metrics is None else {
                             k: float(v) for k, v in metrics.items()})
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      _CLOSED_LOOP_ERRORS.settle()
      kept = ('no earlier checkpoint' if previous is None else
              f'the previous checkpoint {self.directory}/{previous} is '
              'untouched')
      raise CheckpointWriteError(
          f'Could not write the checkpoint of step {step} to '
          f'{self.directory}: {type(e).__name__}: {e}. Free space or fix '
          f'permissions there and relaunch; {kept}.') from e

  def check_shapes(self, target: PyTree, step: int) -> None:
    """CheckpointMismatchError unless the step's metadata has `target`'s
    parameter shapes."""
    item = epath.Path(self.directory) / str(step) / (
        ocp.checkpoint_manager.DEFAULT_ITEM_NAME)
    stored = _param_shapes(
        ocp.StandardCheckpointHandler().metadata(item)['params'])
    wanted = _param_shapes(target.params)
    for name in sorted(set(stored) | set(wanted)):
      if stored.get(name) != wanted.get(name):
        has = lambda shapes: (f'shape {shapes[name]}' if name in shapes else
                              'no such parameter')
        raise CheckpointMismatchError(
            f'Checkpoint {self.directory}/{step} does not fit this config: '
            f'parameter {name} has {has(stored)} there and {has(wanted)} in '
            'the config. Use the config the run was trained with, or a new '
            '--workdir.')

  def restore(self, target: PyTree, step: Optional[int] = None) -> PyTree:
    """The checkpoint of `step` (default: newest), shaped as `target`.

    Raises FileNotFoundError, CheckpointMismatchError, or the read's error.
    """
    step = self.latest_step() if step is None else step
    if step is None or step not in self._manager.all_steps():
      raise FileNotFoundError(
          f'No checkpoint{"" if step is None else f" for step {step}"} in '
          f'{self.directory}.')
    self.check_shapes(target, step)
    try:
      return self._manager.restore(step,
                                   args=ocp.args.StandardRestore(target))
    except Exception:
      _CLOSED_LOOP_ERRORS.settle()  # Before anything else is printed.
      raise

  def try_restore(self, target: PyTree,
                  step: int) -> tuple[Optional[PyTree], Optional[str]]:
    """`(state, None)`, or `(None, reason)` if damaged on any process."""
    state, message = None, None
    try:
      state = self.restore(target, step)
    except CheckpointMismatchError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      message = short_reason(e)  # Damage takes many forms.
    if not _true_everywhere(message is None):
      return None, message or 'unreadable on another process'
    return state, None

  def restore_newest(self, target: PyTree, *, up_to: Optional[int] = None,
                     set_aside: bool = True) -> Restored:
    """The newest checkpoint (at most `up_to`) that restores; the damaged
    newer ones are moved to `<directory>.corrupt/` if `set_aside`.

    Raises CheckpointMismatchError, or CheckpointReadError if none restores.
    """
    steps = [s for s in self.all_steps() if up_to is None or s <= up_to]
    # Each try ends in a collective: every process tries the same steps.
    if not (_same_everywhere(len(steps)) and
            _same_everywhere(steps[-1] if steps else -1)):
      raise CheckpointReadError(
          f'Processes see different checkpoints in {self.directory} (this '
          f'one steps {steps}); is the directory shared?')
    failures = []
    for step in reversed(steps):
      state, message = self.try_restore(target, step)
      if message is None:
        if failures and set_aside and not self._read_only:
          self._set_aside([s for s, _ in failures])
        return Restored(state, step, failures)
      failures.append((step, message))
    if failures:
      raise CheckpointReadError(
          f'No checkpoint in {self.directory} could be restored ('
          + '; '.join(f'step {s}: {m}' for s, m in failures) + ').')
    return Restored(None, None, [])

  def _set_aside(self, steps: list[int]) -> None:
    """Moves damaged step directories to `<directory>.corrupt/`."""
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices('checkpoint_set_aside')
    error = None
    if jax.process_index() == 0:
      try:
        os.makedirs(f'{self.directory}.corrupt', exist_ok=True)
        for step in steps:
          moved = os.path.join(f'{self.directory}.corrupt',
                               f'{step}-{time.strftime("%Y%m%d-%H%M%S")}')
          os.replace(os.path.join(self.directory, str(step)), moved)
          self.set_aside_to.append(moved)
      except OSError as e:
        error = e
    if not _true_everywhere(error is None):
      raise CheckpointWriteError(
          f'Could not move the unreadable checkpoints {steps} of '
          f'{self.directory} aside to {self.directory}.corrupt'
          + (f': {type(error).__name__}: {error}' if error else
             ' (see process 0)') + '; nothing was deleted.') from error
    self._manager.reload()

  def close(self) -> None:
    self._manager.close()
