"""Checkpoints with orbax: atomic, auto-resumed, the last few plus the best.

A checkpoint is a directory `<workdir>/checkpoints/<step>/` written by orbax
to a temporary name and renamed when complete, so a crash mid-save never
leaves a half-written checkpoint under a step's name. Arrays are stored with
orbax's array format (never pickle).
"""

import os
from typing import Any, Mapping, Optional

import orbax.checkpoint as ocp

PyTree = Any


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
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
      raise ValueError(f'config.checkpoint.keep must be a positive integer, '
                       f'got {keep!r}.')
    if best_mode not in ('max', 'min'):
      raise ValueError(f'best_mode must be "max" or "min", got {best_mode!r}.')
    self.directory = os.path.abspath(directory)
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
        # Synchronous saves: when save() returns, the checkpoint is complete.
        enable_async_checkpointing=False,
        preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(
            policies))
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> Optional[int]:
    """The newest complete checkpoint's step, or None."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """Steps of every complete checkpoint, oldest first."""
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: PyTree,
           metrics: Optional[Mapping[str, float]] = None) -> None:
    """Writes `state` (host arrays) as the checkpoint of `step`."""
    self._manager.save(
        step, args=ocp.args.StandardSave(state),
        metrics=None if metrics is None else {
            k: float(v) for k, v in metrics.items()},
        force=True)
    self._manager.wait_until_finished()

  def restore(self, target: PyTree, step: Optional[int] = None) -> PyTree:
    """Restores the checkpoint of `step` (default: newest) shaped as `target`.

    Raises:
      FileNotFoundError: there is no checkpoint (of that step).
    """
    if step is None:
      step = self.latest_step()
    if step is None or step not in self._manager.all_steps():
      raise FileNotFoundError(
          f'No checkpoint{"" if step is None else f" for step {step}"} in '
          f'{self.directory}.')
    return self._manager.restore(step, args=ocp.args.StandardRestore(target))

  def close(self) -> None:
    self._manager.close()
