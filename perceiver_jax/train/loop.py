"""The data-parallel training loop: train, evaluate, checkpoint, resume.

`train_and_evaluate(config, workdir)` runs a config to its end. A workdir
that already holds a checkpoint resumes from the newest one; because data
order and randomness are functions of the step, the resumed run continues
exactly as an uninterrupted run would.

A relaunch is checked before it writes anything: a config that differs from
the run's `config.json` in more than its length and cadence
(`run_config.check_relaunch`), or whose parameters do not fit the newest
checkpoint's shapes, is refused; the run's files are written only after the
restore succeeded.

Workdir layout (written by process 0 only):
  config.json          the resolved config of the run
  config_history/      earlier config.json files, kept at each accepted change
  metrics.jsonl        one JSON line per log step and per evaluation
  tensorboard/         TensorBoard events
  checkpoints/<step>/  orbax checkpoints (the newest few plus the best)
  permutation.npy      the input permutation, for permuted-input runs
"""

import dataclasses
import math
import os
import time
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from perceiver_jax import checks
from perceiver_jax.model import factory
from perceiver_jax.model import inputs as model_inputs
from perceiver_jax.train import checkpoint as checkpoint_lib
from perceiver_jax.train import evaluators
from perceiver_jax.train import finetune
from perceiver_jax.train import losses
from perceiver_jax.train import optim
from perceiver_jax.train import parallel
from perceiver_jax.train import run_config
from perceiver_jax.train import state as state_lib
from perceiver_jax.train import stopping
from perceiver_jax.train import tasks
from perceiver_jax.train import writers

TrainState = state_lib.TrainState


class NonFiniteLossError(FloatingPointError):
  """The loss or gradients became NaN or Inf."""


@dataclasses.dataclass(frozen=True)
class RunLength:
  """How long a run is, derived from the final config at launch."""
  total_steps: int
  steps_per_epoch: float


def run_length(config: ml_collections.ConfigDict) -> RunLength:
  """Total steps and steps per epoch for the global batch size.

  `train.num_steps` wins when set; otherwise `train.num_epochs` epochs of
  `data.num_train_examples`. Derived here, not in the config, so that
  overriding the batch size or the epochs moves every dependent value.
  """
  batch_size = checks.positive_int(config.train.batch_size,
                                   'config.train.batch_size')
  steps_per_epoch = config.data.num_train_examples / batch_size
  num_steps = config.train.get('num_steps')
  if num_steps is None:
    num_epochs = config.train.get('num_epochs')
    if num_epochs is None or not math.isfinite(num_epochs) or num_epochs <= 0:
      raise ValueError(
          'Set config.train.num_steps or a positive config.train.num_epochs; '
          f'got num_steps=None, num_epochs={num_epochs!r}.')
    num_steps = int(math.ceil(num_epochs * steps_per_epoch))
  checks.positive_int(num_steps, 'config.train.num_steps')
  for name in ('log_every_steps', 'eval_every_steps',
               'checkpoint_every_steps'):
    checks.positive_int(config.train[name], f'config.train.{name}')
  return RunLength(num_steps, steps_per_epoch)


def make_train_step(apply_fn: Callable[..., jax.Array],
                    optimizer: optax.GradientTransformation,
                    schedule: optax.Schedule,
                    loss_config: Mapping[str, Any]) -> Callable[..., Any]:
  """The pmapped step `(state, batch) -> (state, metrics)`; state donated."""
  return jax.pmap(
      train_step_fn(apply_fn, optimizer, schedule, loss_config),
      axis_name=parallel.AXIS, donate_argnums=0)


def train_step_fn(apply_fn: Callable[..., jax.Array],
                  optimizer: optax.GradientTransformation,
                  schedule: optax.Schedule,
                  loss_config: Mapping[str, Any]) -> Callable[..., Any]:
  """One device's step, to run under a map with axis `parallel.AXIS`.

  A non-finite loss or gradient never reaches the parameters: the update is
  skipped and counted in `state.num_skipped`. Whether the run then goes on
  is the loop's decision (`config.train.skip_nonfinite_updates`).

  The optional `control` carries host-side facts into the step's
  collectives, so that every process learns them without another
  synchronisation: `'stop'` (int32 `[devices]`, 1 where this process was
  asked to stop) comes back as `metrics['stop']`, the maximum over all
  devices; `'skipped_inputs'` (int32 `[devices]`, this host's count of
  undecodable inputs on its first device, 0 elsewhere) comes back summed
  over all devices.
  """
  loss_type = loss_config['type']
  label_smoothing = loss_config.get('label_smoothing', 0.0)

  def train_step(state: TrainState, batch, control=None):
    rng = parallel.device_rng(state.rng, state.step)

    def loss_fn(params):
      logits = apply_fn(params, rng, batch, is_training=True)
      return losses.batch_loss(logits, batch, loss_type=loss_type,
                               label_smoothing=label_smoothing)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    # Every device holds an equal share of the global batch, so the mean of
    # the per-device means is the mean over the global batch.
    loss, grads = jax.lax.pmean((loss, grads), parallel.AXIS)
    grad_norm = optax.global_norm(grads)
    updates, opt_state = optimizer.update(grads, state.opt_state,
                                          state.params)
    params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    keep_new = lambda new, old: jnp.where(finite, new, old)
    new_state = TrainState(
        params=jax.tree.map(keep_new, params, state.params),
        opt_state=jax.tree.map(keep_new, opt_state, state.opt_state),
        step=state.step + 1,
        rng=state.rng,
        num_skipped=state.num_skipped + (1 - finite.astype(jnp.int32)))
    metrics = {
        'loss': loss,
        'grad_norm': grad_norm,
        # The rate this step's update used: the optimizer's count advances
        # only on applied updates, so it lags the step by the skipped ones.
        'learning_rate': schedule(state.step - state.num_skipped),
        'finite': finite,
    }
    if control is not None:
      metrics['stop'] = jax.lax.pmax(control['stop'], parallel.AXIS)
      metrics['skipped_inputs'] = jax.lax.psum(control['skipped_inputs'],
                                               parallel.AXIS)
    return new_state, metrics

  return train_step


def initial_state(forward: hk.Transformed,
                  optimizer: optax.GradientTransformation,
                  example_batch: Mapping[str, np.ndarray],
                  seed: int) -> TrainState:
  """Fresh parameters and optimizer state (host arrays) from `seed`."""
  init_key, run_key = jax.random.split(jax.random.PRNGKey(seed))
  params = jax.jit(lambda key, batch: forward.init(
      key, batch, is_training=True))(init_key, example_batch)
  return TrainState(
      params=params,
      opt_state=optimizer.init(params),
      step=jnp.zeros([], jnp.int32),
      rng=run_key,
      num_skipped=jnp.zeros([], jnp.int32))


def _first_device_slice(batch: Mapping[str, np.ndarray]):
  return {k: v[0] for k, v in batch.items()}


class Run:
  """Everything a launch builds from its config before the first step."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, *,
               checkpoint_dir: Optional[str] = None,
               read_only: bool = False):
    """Builds the run.

    Args:
      config: the experiment config.
      workdir: the run's directory.
      checkpoint_dir: where checkpoints live (default `workdir/checkpoints`).
      read_only: open the checkpoints for restoring only (evaluation).
    """
    self.config = config
    self.workdir = workdir
    self.is_chief = jax.process_index() == 0
    self.length = run_length(config)
    self.task = tasks.get_task(config.task)
    # `[devices, per_device]` of the batches this run reads: an evaluation
    # (read-only) reads evaluation batches only, so a machine whose device
    # count does not divide the training batch can still evaluate.
    self.batch_dims = parallel.local_batch_dims(
        config.evaluator.batch_size if read_only else config.train.batch_size)
    self.schedule = optim.learning_rate_schedule(
        config.optimizer, total_steps=self.length.total_steps,
        steps_per_epoch=self.length.steps_per_epoch)
    self.optimizer = finetune.optimizer(
        config, optim.make_optimizer(config.optimizer, self.schedule))
    self.forward = factory.transform_classifier(config.model,
                                                config.data.num_classes)
    self.checkpointer = checkpoint_lib.Checkpointer(
        checkpoint_dir or os.path.join(workdir, 'checkpoints'),
        keep=config.checkpoint.keep,
        best_metric=config.evaluator.metric,
        best_mode=config.evaluator.metric_mode,
        read_only=read_only)

  def train_batches(self, start_step: int) -> Iterator[Mapping[str, Any]]:
    return self.task.data.load(
        self.task.train_split, is_training=True, batch_dims=self.batch_dims,
        config=self.config.data, seed=self.config.seed,
        start_step=start_step)

  def evaluator(self, split: Optional[str] = None):
    return evaluators.make_evaluator(
        self.config, apply_fn=self.forward.apply, data_module=self.task.data,
        batch_dims=parallel.local_batch_dims(
            self.config.evaluator.batch_size), split=split)

  def fresh_state(self, example_batch) -> TrainState:
    """Initial parameters and optimizer state for the config's seed."""
    return initial_state(self.forward, self.optimizer,
                         _first_device_slice(example_batch), self.config.seed)

  def restore_state(self, example_batch, step: int) -> TrainState:
    """The checkpoint of `step`, shaped like a fresh state."""
    target = jax.tree.map(np.asarray, self.fresh_state(example_batch))
    return self.checkpointer.restore(target, step)

  def initial_or_restored_state(self, example_batch) -> TrainState:
    """Restores the newest readable checkpoint, else initialises.

    An unreadable newest checkpoint is skipped (see
    `Checkpointer.restore_newest`), the previous one restored and one
    warning line printed.

    Raises:
      checkpoint_lib.CheckpointMismatchError: the checkpoint's parameters
        have other shapes than this config's model.
    """
    target = jax.tree.map(np.asarray, self.fresh_state(example_batch))
    restored = self.checkpointer.restore_newest(target)
    if restored.state is None:
      return target
    if self.is_chief:
      directory = self.checkpointer.directory
      if restored.skipped:
        damaged = ', '.join(f'{directory}/{step}'
                            for step, _ in restored.skipped)
        kept = (f'kept in {", ".join(self.checkpointer.set_aside_to)}'
                if self.checkpointer.set_aside_to else 'left in place')
        writers.warn(f'checkpoint {damaged} is damaged '
                     f'({restored.skipped[0][1]}); resuming from '
                     f'{directory}/{restored.step} instead, the damaged one '
                     f'{kept}.')
      writers.console(f'Resumed from {directory}/{restored.step} '
                      f'(step {int(restored.state.step)}).')
    return restored.state


def _write_run_files(run: Run,
                     changes: list[run_config.Change]) -> None:
  """config.json (its previous version kept if `changes`) and the rest."""
  os.makedirs(run.workdir, exist_ok=True)
  if changes:
    kept = run_config.keep_history(run.workdir)
    writers.console(f'Config changed since the last launch: '
                    f'{run_config.describe(changes)}; the previous config is '
                    f'kept in {kept}.')
  run_config.write(run.workdir, run.config)
  permutation = model_inputs.input_permutation(run.config.model.input)
  if permutation is not None:
    np.save(os.path.join(run.workdir, 'permutation.npy'), permutation)


def _control(stop: bool, skipped_inputs: int) -> dict[str, jax.Array]:
  """The step's `control` input (see `train_step_fn`) for this host."""
  num_devices = jax.local_device_count()
  skipped = np.zeros([num_devices], np.int32)
  skipped[0] = skipped_inputs
  return parallel.shard({'stop': np.full([num_devices], int(stop), np.int32),
                         'skipped_inputs': skipped})


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       *, stop_after_steps: Optional[int] = None,
                       return_state: bool = False) -> dict[str, Any]:
  """Trains `config` in `workdir` (resuming if possible) and evaluates.

  SIGTERM or SIGINT during the call stops the run after the current step
  with a checkpoint (all processes agree on the step); the result then has
  'stopped' set to the signal's name.

  Args:
    config: the experiment config.
    workdir: the run's directory.
    stop_after_steps: stop (with a checkpoint) once this many steps have
      run in this call, before the run's end; for tests of resumption.
    return_state: add this process's final `TrainState` (host arrays) to
      the result under 'state'.

  Returns:
    The last evaluation's metrics plus 'step', 'num_skipped', 'stopped'
    (None, or the signal that stopped the run) and 'checkpoint' (the last
    checkpoint written or restored, or None).

  Raises:
    NonFiniteLossError: a non-finite loss or gradient, unless
      `config.train.skip_nonfinite_updates`.
    checkpoint_lib.CheckpointWriteError: a checkpoint could not be written.
  """
  with stopping.StopSignals() as signals:
    return _train_and_evaluate(config, workdir, signals,
                               stop_after_steps=stop_after_steps,
                               return_state=return_state)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                        signals: stopping.StopSignals, *,
                        stop_after_steps: Optional[int],
                        return_state: bool) -> dict[str, Any]:
  tasks.complete_config(config)  # Values the data decides, first.
  plan = finetune.prepare(config, workdir)  # config.init_from, if any.
  # A relaunch that would change the run's model (or anything but its
  # length and cadence) is refused here, before anything is written.
  changes = run_config.check_relaunch(workdir, config)
  run = Run(config, workdir)
  length = run.length

  latest = run.checkpointer.latest_step() or 0
  batches = run.train_batches(start_step=latest)
  first_batch = next(batches)
  state = run.initial_or_restored_state(first_batch)
  if plan is not None:
    state = finetune.initial_state(plan, state)
  start_step = int(state.step)
  if start_step != latest:
    # The newest checkpoint was unreadable: read the data from the step of
    # the one restored instead.
    batches = run.train_batches(start_step=start_step)
    first_batch = next(batches)
  # Only now: a config that cannot restore the run's checkpoints must not
  # replace the one that can, nor change anything else.
  run.checkpointer.remove_unfinished_saves()
  if run.is_chief:
    _write_run_files(run, changes)
  writer = writers.MetricWriter(workdir, enabled=run.is_chief)
  num_params = state_lib.num_params(state.params)
  if run.is_chief:
    writers.console(
        f'Training {config.task} for {length.total_steps} steps '
        f'({length.steps_per_epoch:.1f} steps/epoch) with global batch '
        f'{config.train.batch_size} on {jax.device_count()} device(s) of '
        f'{jax.process_count()} process(es); {num_params:,} parameters; '
        f'workdir {workdir}')

  train_step = make_train_step(
      run.forward.apply, run.optimizer, run.schedule, config.loss)
  evaluator = run.evaluator()
  state = parallel.replicate(state)

  eval_metrics: dict[str, Any] = {}
  last_saved = start_step if start_step else None
  window_start, window_time = start_step, time.time()
  pending = None  # The previous step's metrics, read one step late.
  end_step = length.total_steps
  if stop_after_steps is not None:
    end_step = min(end_step, start_step + stop_after_steps)

  def inspect(metrics, step) -> bool:
    """Checks finished step `step`'s loss; True if a stop was requested.

    `step` counts from 1, as progress lines and checkpoints do.
    """
    if metrics is None:
      return False
    # np.asarray first: indexing a device array would dispatch a gather.
    if (not bool(np.asarray(metrics['finite'])[0]) and
        not config.train.skip_nonfinite_updates):
      good = run.checkpointer.latest_step()
      raise NonFiniteLossError(
          f'Non-finite loss or gradient at step {step}; the update was not '
          'applied. Last good checkpoint: '
          + ('none' if good is None else
             f'{run.checkpointer.directory}/{good}') +
          '. Set config.train.skip_nonfinite_updates=True to skip such '
          'updates instead.')
    return bool(np.asarray(metrics['stop'])[0])

  def save(done, metrics=None):
    host_state = jax.tree.map(np.asarray, parallel.unreplicate(state))
    if jax.process_count() > 1:
      # Only process 0's copy is written: make sure it is everyone's.
      parallel.assert_same_on_all_hosts(host_state.params,
                                        f'parameters at step {done}')
    run.checkpointer.save(done, host_state, metrics=metrics)

  stop_requested = False
  batch = first_batch
  for step in range(start_step, end_step):
    if step > start_step:
      batch = next(batches)
    # Loaders built on data/pipeline.py count the inputs they could not
    # decode (and dropped) in `num_skipped`.
    skipped_inputs = int(getattr(batches, 'num_skipped', 0))
    state, metrics = train_step(state, parallel.shard(batch),
                                _control(signals.requested, skipped_inputs))
    # Reading the previous step's flags waits for it, not for this one, so
    # the host stays a step ahead of the devices.
    stop_requested = inspect(pending, step)
    pending = metrics
    done = step + 1
    is_last = done == end_step
    should_log = done % config.train.log_every_steps == 0 or is_last
    should_evaluate = (done % config.train.eval_every_steps == 0 or
                       done == length.total_steps)
    should_save = done % config.train.checkpoint_every_steps == 0 or is_last
    if should_log or should_evaluate or should_save or stop_requested:
      # Wait for this step: never log, evaluate or checkpoint a step whose
      # update was refused for a non-finite loss.
      stop_requested = inspect(pending, done) or stop_requested
      pending = None
    if stop_requested:
      # Save at once: an evaluation could outlast a preemption's grace.
      should_log, should_evaluate, should_save = True, False, True

    if should_log:
      scalars = jax.tree.map(lambda x: float(np.asarray(x)[0]), metrics)
      scalars['num_skipped'] = int(np.asarray(state.num_skipped)[0])
      scalars['skipped_inputs'] = int(scalars['skipped_inputs'])
      elapsed = time.time() - window_time
      steps_per_sec = (done - window_start) / max(elapsed, 1e-9)
      scalars['steps_per_sec'] = steps_per_sec
      scalars['examples_per_sec'] = steps_per_sec * config.train.batch_size
      del scalars['finite'], scalars['stop']
      writer.write(done, scalars, prefix='train')
      if run.is_chief:
        eta = (length.total_steps - done) / max(steps_per_sec, 1e-9)
        skipped_text = ''
        if scalars['num_skipped']:
          skipped_text += f'  skipped updates {scalars["num_skipped"]}'
        if scalars['skipped_inputs']:
          skipped_text += (f'  undecodable inputs '
                           f'{scalars["skipped_inputs"]}')
        writers.console(
            f'step {done}/{length.total_steps}  loss {scalars["loss"]:.4f}  '
            f'lr {scalars["learning_rate"]:.2e}  '
            f'{scalars["examples_per_sec"]:.0f} ex/s  '
            f'ETA {writers.format_duration(eta)}{skipped_text}')
      window_start, window_time = done, time.time()

    evaluated_now = False
    if should_evaluate:
      eval_metrics = evaluator.run(state.params)
      evaluated_now = True
      writer.write(done, eval_metrics, prefix=evaluator.split)
      if run.is_chief:
        shown = '  '.join(f'{k} {v:.4f}' if isinstance(v, float) else
                          f'{k} {v}' for k, v in eval_metrics.items())
        writers.console(f'eval {evaluator.split} at step {done}: {shown}')

    if should_save:
      save(done, metrics={config.evaluator.metric: eval_metrics[
          config.evaluator.metric]} if evaluated_now else None)
      last_saved = done

    if evaluated_now or last_saved == done:
      # Throughput windows measure training steps only.
      window_start, window_time = done, time.time()
    if stop_requested:
      break

  writer.close()
  final_state = parallel.unreplicate(state)
  checkpoint = (None if last_saved is None else
                f'{run.checkpointer.directory}/{last_saved}')
  stopped = None
  if stop_requested:
    stopped = signals.signal_name or 'a signal to another process'
    if run.is_chief:
      writers.console(
          f'Stopped by {stopped} after step {last_saved}; checkpoint: '
          f'{checkpoint}. Relaunch with the same workdir to resume.')
  elif run.is_chief and checkpoint is not None:
    writers.console(f'Checkpoint: {checkpoint}')
  run.checkpointer.close()
  result = {**eval_metrics, 'step': int(final_state.step),
            'num_skipped': int(final_state.num_skipped),
            'stopped': stopped, 'checkpoint': checkpoint}
  if return_state:
    result['state'] = final_state
  return result


class DamagedCheckpointError(checkpoint_lib.CheckpointReadError):
  """The checkpoint to evaluate is damaged (an intact one may exist)."""


def evaluate_checkpoint(config: ml_collections.ConfigDict, checkpoint_dir: str,
                        *, step: Optional[int] = None,
                        split: Optional[str] = None,
                        fallback: bool = False) -> dict[str, Any]:
  """Evaluates a checkpoint without writing anything next to it.

  Args:
    config: the run's config (its `config.json`).
    checkpoint_dir: the directory holding step directories.
    step: the checkpoint to read (default: the newest).
    split: the split to evaluate (default: `config.evaluator.split`).
    fallback: when that checkpoint is damaged, evaluate the newest intact
      older one instead of refusing.

  Returns:
    The evaluator's metrics plus 'step' (the step scored) and
    'skipped_steps' (the damaged steps passed over, newest first; empty
    unless `fallback` was needed).

  Raises:
    DamagedCheckpointError: the checkpoint is damaged and not `fallback`;
      the message names it and the newest intact one.
    checkpoint_lib.CheckpointMismatchError: the config does not fit it.
  """
  run = Run(config, workdir=os.path.dirname(checkpoint_dir),
            checkpoint_dir=checkpoint_dir, read_only=True)
  example = next(run.task.data.load(
      config.evaluator.split if split is None else split, is_training=False,
      batch_dims=run.batch_dims, config=config.data))
  target = jax.tree.map(np.asarray, run.fresh_state(example))
  directory = run.checkpointer.directory
  if step is not None and step not in run.checkpointer.all_steps():
    raise FileNotFoundError(f'No checkpoint {directory}/{step} (there are '
                            f'steps {run.checkpointer.all_steps()}).')
  # The newest readable checkpoint at or before `step`; nothing is moved
  # (evaluation writes nothing there).
  restored = run.checkpointer.restore_newest(target, up_to=step,
                                             set_aside=False)
  if restored.state is None:
    raise FileNotFoundError(f'No checkpoint in {directory}.')
  skipped = [s for s, _ in restored.skipped]
  if skipped and not fallback:
    damaged, reason = restored.skipped[0]
    raise DamagedCheckpointError(
        f'Checkpoint {directory}/{damaged} is damaged ({reason}); the newest '
        f'intact one is {directory}/{restored.step}. Pass --fallback to '
        'evaluate that one, or --checkpoint to choose.')
  if skipped and jax.process_index() == 0:
    writers.warn(f'checkpoint {directory}/{skipped[0]} is damaged '
                 f'({restored.skipped[0][1]}); evaluating '
                 f'{directory}/{restored.step}, the newest intact one.')
  metrics = run.evaluator(split).run(parallel.replicate(restored.state.params))
  run.checkpointer.close()
  return {**metrics, 'step': int(restored.state.step),
          'skipped_steps': skipped}


def evaluate_checkpoints(config: ml_collections.ConfigDict,
                         checkpoint_dir: str,
                         steps: Optional[Sequence[int]] = None, *,
                         split: Optional[str] = None,
                         fallback: bool = False) -> list[dict[str, Any]]:
  """Evaluates several checkpoints with one model and one compiled step.

  Writes nothing next to the checkpoints.

  Args:
    config: the run's config (its `config.json`, with any evaluation
      overrides applied).
    checkpoint_dir: the directory holding step directories.
    steps: the checkpoints to evaluate, in this order (default: every
      complete one, oldest first).
    split: the split to evaluate (default: `config.evaluator.split`).

    fallback: a damaged checkpoint is listed as `{'step', 'damaged'}`
      instead of ending the evaluation (`DamagedCheckpointError`).

  Returns:
    One dict per step: the evaluator's metrics plus 'step'.
  """
  run = Run(config, workdir=os.path.dirname(checkpoint_dir),
            checkpoint_dir=checkpoint_dir, read_only=True)
  example = next(run.task.data.load(
      config.evaluator.split if split is None else split, is_training=False,
      batch_dims=run.batch_dims, config=config.data))
  evaluator = run.evaluator(split)
  if steps is None:
    steps = run.checkpointer.all_steps()
  if not steps:
    raise FileNotFoundError(f'No checkpoint in {run.checkpointer.directory}.')
  target = jax.tree.map(np.asarray, run.fresh_state(example))
  directory = run.checkpointer.directory
  results = []
  try:
    for step in steps:
      state, reason = run.checkpointer.try_restore(target, step)
      if reason is not None:
        if not fallback:
          raise DamagedCheckpointError(
              f'Checkpoint {directory}/{step} is damaged ({reason}). Pass '
              '--fallback to evaluate the intact ones and list it as '
              'skipped.')
        results.append({'step': step, 'damaged': reason})
        continue
      metrics = evaluator.run(parallel.replicate(state.params))
      results.append({**metrics, 'step': int(state.step)})
  finally:
    run.checkpointer.close()
  return results
