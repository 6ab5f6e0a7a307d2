"""The data-parallel training loop: build, train, evaluate, checkpoint, resume.

`train_and_evaluate` builds the run once (`Run`, its first batch and initial
state: every launch check, before anything is written), restores the newest
readable checkpoint and trains on. Data order and randomness are functions
of the step, so a resumed run continues exactly as an uninterrupted one.
"""

import dataclasses
import math
import os
import time
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from perceiver_jax import checks
from perceiver_jax import progress
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


class NonFiniteLossError(FloatingPointError):
  """The loss or gradients became NaN or Inf."""


class DamagedCheckpointError(checkpoint_lib.CheckpointReadError):
  """The checkpoint to evaluate is damaged (an intact one may exist)."""


@dataclasses.dataclass(frozen=True)
class RunLength:
  total_steps: int
  steps_per_epoch: float


def run_length(config: ml_collections.ConfigDict) -> RunLength:
  """`train.num_steps`, else `train.num_epochs` of the global batch.

  Derived at launch so that overriding the batch or epochs moves it.
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


def _check_loss_and_evaluation(config: ml_collections.ConfigDict) -> None:
  """The config fields no constructor checks, named when wrong."""
  checks.one_of(config.loss.type, 'config.loss.type', losses.LOSSES)
  smoothing = config.loss.get('label_smoothing', 0.0)
  if not 0.0 <= smoothing < 1.0:
    raise ValueError(f'config.loss.label_smoothing must be in [0, 1), got '
                     f'{smoothing!r}.')
  evaluator = config.evaluator
  checks.one_of(evaluator.type, 'config.evaluator.type',
                sorted(evaluators.EVALUATORS))
  names = evaluators.EVALUATORS[evaluator.type].metric_names(config)
  if evaluator.metric not in names:
    raise ValueError(f'config.evaluator.metric must be one of the '
                     f'{evaluator.type} evaluator\'s metrics {list(names)}, '
                     f'got {evaluator.metric!r}.')
  checks.one_of(evaluator.metric_mode, 'config.evaluator.metric_mode',
                ('max', 'min'))
  if evaluator.get('max_examples') is not None:
    checks.positive_int(evaluator.max_examples,
                        'config.evaluator.max_examples')


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
  """One device's step under a map on `parallel.AXIS`.

  A non-finite loss or gradient skips the update (counted in
  `num_skipped`). `control['stop']` (int32 `[devices]`) comes back as its
  maximum over all devices, `control['skipped_inputs']` summed: every
  process learns them without another synchronisation.
  """
  loss_type = loss_config['type']
  label_smoothing = loss_config.get('label_smoothing', 0.0)

  def train_step(state: state_lib.TrainState, batch, control=None):
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
    new_state = state_lib.TrainState(
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


class Run:
  """What a launch builds from its config: constructing it checks every
  field and writes nothing; `fresh_state` runs the model's shape checks.
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, *,
               checkpoint_dir: Optional[str] = None,
               read_only: bool = False):
    """`read_only` opens the checkpoints for evaluation, which reads only
    evaluation batches (so their size alone must divide the devices)."""
    self.config, self.workdir = config, workdir
    self.is_chief = jax.process_index() == 0
    self.length = run_length(config)
    self.task = tasks.get_task(config.task)
    try:
      self.eval_batch_dims = parallel.local_batch_dims(
          config.evaluator.batch_size)
    except ValueError as e:
      raise ValueError(f'config.evaluator.{e}') from None
    self.batch_dims = (self.eval_batch_dims if read_only else
                       parallel.local_batch_dims(config.train.batch_size))
    _check_loss_and_evaluation(config)
    self.schedule = optim.learning_rate_schedule(
        config.optimizer, total_steps=self.length.total_steps,
        steps_per_epoch=self.length.steps_per_epoch)
    self.optimizer = finetune.optimizer(
        config, optim.make_optimizer(config.optimizer, self.schedule))
    self.forward = factory.transform_classifier(config.model,
                                                config.data.num_classes)
    self.checkpointer = checkpoint_lib.Checkpointer(
        checkpoint_dir or os.path.join(workdir, 'checkpoints'),
        keep=config.checkpoint.keep, best_metric=config.evaluator.metric,
        best_mode=config.evaluator.metric_mode, read_only=read_only)

  def train_batches(self, start_step: int) -> Iterator[Mapping[str, Any]]:
    return self.task.data.load(
        self.task.train_split, is_training=True, batch_dims=self.batch_dims,
        config=self.config.data, seed=self.config.seed,
        start_step=start_step)

  def eval_batch(self, split: Optional[str] = None):
    """The first evaluation batch of `split` (default: the config's)."""
    return next(self.task.data.load(
        split or self.config.evaluator.split, is_training=False,
        batch_dims=self.eval_batch_dims, config=self.config.data))

  def evaluator(self, split: Optional[str] = None):
    return evaluators.make_evaluator(
        self.config, apply_fn=self.forward.apply, data_module=self.task.data,
        batch_dims=self.eval_batch_dims, split=split)

  def fresh_state(self, example_batch) -> state_lib.TrainState:
    """Initial parameters and optimizer state for the config's seed."""
    return state_lib.initial_state(self.forward, self.optimizer,
                         {k: v[0] for k, v in example_batch.items()},
                         self.config.seed)

  def host_target(self, example_batch) -> state_lib.TrainState:
    """A fresh state as host arrays: what a checkpoint restores into."""
    return jax.tree.map(np.asarray, self.fresh_state(example_batch))

  def restore_state(self, example_batch, step: int) -> state_lib.TrainState:
    return self.checkpointer.restore(self.host_target(example_batch), step)


def _agreed(build: Callable[[], Any]) -> Any:
  """`build()`, raising on every process if it failed on any (a host
  alone missing its data would leave the others waiting).
  """
  problem, result = None, None
  try:
    result = build()
  except (ValueError, FileNotFoundError) as e:
    problem = e
  failed = parallel.gather_from_hosts(int(problem is not None))
  if problem is not None:
    raise problem
  if failed.any():
    raise ValueError(f'The config failed its checks on process(es) '
                     f'{np.flatnonzero(failed).tolist()}; see their errors.')
  return result


def _start(config: ml_collections.ConfigDict, workdir: str):
  """The run, its fine-tuning plan (or None), its batches from the newest
  checkpoint's step, the first of them, and the fresh host state they
  shape; writes nothing."""
  tasks.complete_config(config)  # Values the data decides, first.
  plan = finetune.prepare(config, workdir)  # config.init_from, if any.
  run = Run(config, workdir)
  split = config.evaluator.split
  if run.task.data.num_examples(split, config.data) < 1:
    raise ValueError(f'The {split!r} split of {config.task} has no '
                     'examples.')
  batches = run.train_batches(run.checkpointer.latest_step() or 0)
  try:
    first = next(batches)
  except StopIteration:
    raise ValueError(f'The {config.task} training data yielded no batch.'
                     ) from None
  return run, plan, batches, first, run.host_target(first)


def _restore(run: Run, batches, first_batch, target):
  """The newest readable checkpoint's state (else `target`), and the
  batches from its step; a damaged newer one is reported once."""
  restored = run.checkpointer.restore_newest(target)
  if restored.state is None:
    return target, batches, first_batch
  if run.is_chief:
    directory = run.checkpointer.directory
    if restored.skipped:
      damaged = ', '.join(f'{directory}/{s}' for s, _ in restored.skipped)
      kept = (f'kept in {", ".join(run.checkpointer.set_aside_to)}'
              if run.checkpointer.set_aside_to else 'left in place')
      writers.warn(f'checkpoint {damaged} is damaged '
                   f'({restored.skipped[0][1]}); resuming from '
                   f'{directory}/{restored.step} instead, the damaged one '
                   f'{kept}.')
    writers.console(f'Resumed from {directory}/{restored.step} '
                    f'(step {int(restored.state.step)}).')
  if restored.skipped:  # Read the data from the restored step instead.
    batches = run.train_batches(int(restored.state.step))
    first_batch = next(batches)
  return restored.state, batches, first_batch


def _write_run_files(run: Run, changes: list[run_config.Change]) -> None:
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

  SIGTERM or SIGINT stops after the current step, with a checkpoint, as
  `stop_after_steps` does. Returns the last evaluation's metrics plus 'step',
  'num_skipped', 'stopped' (a signal's name), 'checkpoint' and, with
  `return_state`, the final host 'state'. A bad config or missing data
  raises ValueError or FileNotFoundError on every process before anything
  is written; a diverged loss, NonFiniteLossError.
  """
  run, plan, batches, first_batch, target = _agreed(
      lambda: _start(config, workdir))
  # A relaunch that would change the run's model is refused here.
  changes = run_config.check_relaunch(workdir, config)
  with stopping.StopSignals() as signals:
    state, batches, first_batch = _restore(run, batches, first_batch, target)
    if plan is not None:  # A fresh fine-tuning run.
      state = finetune.initial_state(plan, state)
    # Only now: a launch that cannot restore changes nothing.
    run.checkpointer.remove_unfinished_saves()
    if run.is_chief:
      _write_run_files(run, changes)
    return _train(run, state, batches, first_batch, signals,
                  stop_after_steps=stop_after_steps,
                  return_state=return_state)


def _train(run: Run, state: state_lib.TrainState, batches, first_batch,
           signals: stopping.StopSignals, *, stop_after_steps: Optional[int],
           return_state: bool) -> dict[str, Any]:
  config, length = run.config, run.length
  start_step = int(state.step)
  writer = writers.MetricWriter(run.workdir, enabled=run.is_chief)
  if run.is_chief:
    writers.console(
        f'Training {config.task} for {length.total_steps} steps '
        f'({length.steps_per_epoch:.1f} steps/epoch) with global batch '
        f'{config.train.batch_size} on {jax.device_count()} device(s) of '
        f'{jax.process_count()} process(es); '
        f'{state_lib.num_params(state.params):,} parameters; '
        f'workdir {run.workdir}')
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
      steps_per_sec = (done - window_start) / max(time.time() - window_time,
                                                   1e-9)
      scalars['steps_per_sec'] = steps_per_sec
      scalars['examples_per_sec'] = steps_per_sec * config.train.batch_size
      del scalars['finite'], scalars['stop']
      writer.write(done, scalars, prefix='train')
      if run.is_chief:
        eta = (length.total_steps - done) / max(steps_per_sec, 1e-9)
        skipped = ''.join(f'  {label} {scalars[key]}' for key, label in (
            ('num_skipped', 'skipped updates'),
            ('skipped_inputs', 'undecodable inputs')) if scalars[key])
        writers.console(
            f'step {done}/{length.total_steps}  loss {scalars["loss"]:.4f}  '
            f'lr {scalars["learning_rate"]:.2e}  '
            f'{scalars["examples_per_sec"]:.0f} ex/s  '
            f'ETA {progress.format_duration(eta)}{skipped}')

    if should_evaluate:
      eval_metrics = evaluator.run(state.params)
      writer.write(done, eval_metrics, prefix=evaluator.split)
      if run.is_chief:
        shown = '  '.join(f'{k} {v:.4f}' if isinstance(v, float) else
                          f'{k} {v}' for k, v in eval_metrics.items())
        writers.console(f'eval {evaluator.split} at step {done}: {shown}')

    if should_save:
      host_state = jax.tree.map(np.asarray, parallel.unreplicate(state))
      if jax.process_count() > 1:
        # Only process 0's copy is written: make sure it is everyone's.
        parallel.assert_same_on_all_hosts(host_state.params,
                                          f'parameters at step {done}')
      metric = config.evaluator.metric
      run.checkpointer.save(done, host_state, metrics={
          metric: eval_metrics[metric]} if should_evaluate else None)
      last_saved = done

    if should_log or should_evaluate or should_save:
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


def evaluate_checkpoints(config: ml_collections.ConfigDict,
                         checkpoint_dir: str,
                         steps: Optional[Sequence[int]] = None, *,
                         split: Optional[str] = None, fallback: bool = False,
                         newest_intact: bool = False
                         ) -> list[dict[str, Any]]:
  """Evaluates checkpoints (default: all, oldest first), writing nothing;
  metrics plus 'step' each. A damaged one raises `DamagedCheckpointError`
  (`fallback`: listed as `{'step', 'damaged'}`). `newest_intact` evaluates
  only the newest of `steps` (`fallback`: the newest intact one before it)
  and adds 'skipped_steps'.
  """
  run = Run(config, os.path.dirname(checkpoint_dir),
            checkpoint_dir=checkpoint_dir, read_only=True)
  directory, kept = run.checkpointer.directory, run.checkpointer.all_steps()
  missing = [s for s in steps or () if s not in kept]
  if missing:
    raise FileNotFoundError(f'No checkpoint {directory}/{missing[0]} (there '
                            f'are steps {kept}).')
  if not kept:
    raise FileNotFoundError(f'No checkpoint in {directory}.')
  if newest_intact:
    newest = max(steps or kept)
    steps = [s for s in reversed(kept) if s <= newest]
  try:
    target = run.host_target(run.eval_batch(split))
    evaluator = run.evaluator(split)
    evaluate = lambda state: {**evaluator.run(parallel.replicate(
        state.params)), 'step': int(state.step)}
    if not newest_intact:
      results = []
      for step in steps or kept:
        state, reason = run.checkpointer.try_restore(target, step)
        if reason is None:
          results.append(evaluate(state))
        elif fallback:
          results.append({'step': step, 'damaged': reason})
        else:
          raise DamagedCheckpointError(
              f'Checkpoint {directory}/{step} is damaged ({reason}). Pass '
              '--fallback to evaluate the intact ones and list it as '
              'skipped.')
      return results
    damaged = []
    for step in steps:
      state, reason = run.checkpointer.try_restore(target, step)
      if reason is not None:
        damaged.append((step, reason))
        continue
      if damaged and not fallback:
        raise DamagedCheckpointError(
            f'Checkpoint {directory}/{damaged[0][0]} is damaged '
            f'({damaged[0][1]}); the newest intact one is {directory}/'
            f'{step}. Pass --fallback to evaluate that one, or '
            '--checkpoint to choose.')
      if damaged and run.is_chief:
        writers.warn(f'checkpoint {directory}/{damaged[0][0]} is damaged '
                     f'({damaged[0][1]}); evaluating {directory}/{step}, '
                     'the newest intact one.')
      return [{**evaluate(state), 'skipped_steps': [s for s, _ in damaged]}]
  finally:
    run.checkpointer.close()
  raise checkpoint_lib.CheckpointReadError(
      f'No checkpoint in {directory} could be restored (' + '; '.join(
          f'step {s}: {m}' for s, m in damaged) + ').')


def evaluate_checkpoint(config: ml_collections.ConfigDict, checkpoint_dir: str,
                        *, step: Optional[int] = None,
                        split: Optional[str] = None,
                        fallback: bool = False) -> dict[str, Any]:
  """The newest checkpoint (or `step`'s) evaluated: `evaluate_checkpoints`
  with `newest_intact`; its metrics plus 'step' and 'skipped_steps'."""
  return evaluate_checkpoints(
      config, checkpoint_dir, None if step is None else [step], split=split,
      fallback=fallback, newest_intact=True)[0]
