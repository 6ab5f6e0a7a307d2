"""Checks a config before a launch writes, compiles or trains anything.

`validate(config)` builds every piece a run needs from the config the same
way the loop will, so that a bad value fails in seconds with one clear
ValueError (or FileNotFoundError for missing data) instead of minutes later
inside a compiled step:

- the run's length and intervals, and the batch size against the devices;
- the task, the optimizer and its schedule, the loss, the evaluator and the
  checkpoint policy;
- the data: the training stream is opened and its first batch read (a
  missing or unprepared data directory fails here, with the loader's
  preparation instructions), and the evaluation split is sized;
- the model: parameter initialisation is traced with `jax.eval_shape` on
  that batch, which runs every shape check of the model (heads that do not
  divide channels, a grid that does not match the images) without
  compiling or allocating anything.
"""

import jax
import ml_collections
import numpy as np

from perceiver_jax import checks
from perceiver_jax.model import factory
from perceiver_jax.train import evaluators
from perceiver_jax.train import loop
from perceiver_jax.train import losses
from perceiver_jax.train import optim
from perceiver_jax.train import parallel
from perceiver_jax.train import tasks


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises a clear error for the first problem found in `config`.

  Raises:
    ValueError: a value that cannot work, naming the config field.
    FileNotFoundError: the task's data is missing (the message says how to
      prepare it).
  """
  tasks.complete_config(config)
  length = loop.run_length(config)
  task = tasks.get_task(config.task)
  batch_dims = parallel.local_batch_dims(config.train.batch_size)
  eval_batch = checks.positive_int(config.evaluator.batch_size,
                             'config.evaluator.batch_size')
  try:
    parallel.local_batch_dims(eval_batch)
  except ValueError as e:
    raise ValueError(f'config.evaluator.{e}') from None
  schedule = optim.learning_rate_schedule(
      config.optimizer, total_steps=length.total_steps,
      steps_per_epoch=length.steps_per_epoch)
  optimizer = optim.make_optimizer(config.optimizer, schedule)
  if config.loss.type not in losses.LOSSES:
    raise ValueError(f'config.loss.type must be one of {losses.LOSSES}, got '
                     f'{config.loss.type!r}.')
  smoothing = config.loss.get('label_smoothing', 0.0)
  if not 0.0 <= smoothing < 1.0:
    raise ValueError(f'config.loss.label_smoothing must be in [0, 1), got '
                     f'{smoothing!r}.')
  if config.evaluator.type not in evaluators.EVALUATORS:
    raise ValueError(f'config.evaluator.type must be one of '
                     f'{sorted(evaluators.EVALUATORS)}, got '
                     f'{config.evaluator.type!r}.')
  metric_names = evaluators.EVALUATORS[config.evaluator.type].metric_names(
      config)
  if config.evaluator.metric not in metric_names:
    raise ValueError(f'config.evaluator.metric must be one of the '
                     f'{config.evaluator.type} evaluator\'s metrics '
                     f'{list(metric_names)}, got {config.evaluator.metric!r}.')
  if config.evaluator.metric_mode not in ('max', 'min'):
    raise ValueError(f'config.evaluator.metric_mode must be "max" or "min", '
                     f'got {config.evaluator.metric_mode!r}.')
  checks.positive_int(config.checkpoint.keep, 'config.checkpoint.keep')
  max_examples = config.evaluator.get('max_examples')
  if max_examples is not None:
    checks.positive_int(max_examples, 'config.evaluator.max_examples')

  batches = task.data.load(task.train_split, is_training=True,
                           batch_dims=batch_dims, config=config.data,
                           seed=config.seed)
  try:
    batch = next(iter(batches))
  except StopIteration:
    raise ValueError(f'The {config.task} training data yielded no batch.'
                     ) from None
  num_eval = task.data.num_examples(config.evaluator.split, config.data)
  if num_eval < 1:
    raise ValueError(f'The {config.evaluator.split!r} split of '
                     f'{config.task} has no examples.')

  forward = factory.transform_classifier(config.model,
                                         config.data.num_classes)
  example = {k: np.asarray(v)[0] for k, v in batch.items()}
  params = jax.eval_shape(
      lambda key, b: forward.init(key, b, is_training=True),
      jax.random.PRNGKey(0), example)
  jax.eval_shape(optimizer.init, params)


def validate_everywhere(config: ml_collections.ConfigDict) -> None:
  """`validate` on every process; all fail together if any one does.

  A problem seen by one host only (its data directory is missing, say)
  would otherwise leave the others waiting in the run's first collective.

  Raises:
    The local problem where there is one; elsewhere, a ValueError naming
    the processes that found one.
  """
  problem = None
  try:
    validate(config)
  except (ValueError, FileNotFoundError) as e:
    problem = e
  failed = parallel.gather_from_hosts(int(problem is not None))
  if failed.any() and problem is None:
    raise ValueError(
        f'The config failed its checks on process(es) '
        f'{np.flatnonzero(failed).tolist()}; see their errors.')
  if problem is not None:
    raise problem
