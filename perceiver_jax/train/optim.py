"""Optimizers and learning-rate schedules from `config.optimizer`.

Weight decay skips biases, LayerNorm parameters and the conv stem's fixed
BatchNorm statistics (docs/paper.md section 4); gradients are clipped by
global norm when `clip_global_norm` is set.
"""

import math
from typing import Any, Mapping

import haiku as hk
import optax

OPTIMIZERS = ('lamb', 'adamw', 'adam', 'sgd')
SCHEDULES = ('constant', 'step', 'cosine')
# Haiku's parameter names for biases and LayerNorm's scale and offset, and
# the conv stem's BatchNorm statistics.
_NO_DECAY_NAMES = ('b', 'scale', 'offset', 'mean', 'var')


def weight_decay_mask(params: hk.Params) -> hk.Params:
  """True for parameters that weight decay applies to."""
  return hk.data_structures.map(
      lambda module, name, _: name not in _NO_DECAY_NAMES, params)


def _check_number(value: Any, what: str, *, positive: bool = False,
                  non_negative: bool = False) -> float:
  if (isinstance(value, bool) or not isinstance(value, (int, float)) or
      not math.isfinite(value)):
    raise ValueError(f'config.optimizer.{what} must be a finite number, got '
                     f'{value!r}.')
  if (positive and value <= 0) or (non_negative and value < 0):
    raise ValueError(f'config.optimizer.{what} must be '
                     f'{"positive" if positive else "non-negative"}, got '
                     f'{value!r}.')
  return float(value)


def learning_rate_schedule(config: Mapping[str, Any], *, total_steps: int,
                           steps_per_epoch: float) -> optax.Schedule:
  """The schedule `config.schedule` names, after optional linear warm-up;
  the cosine ends at `total_steps`, `decay_epochs` count `steps_per_epoch`.
  """
  base = _check_number(config['learning_rate'], 'learning_rate', positive=True)
  warmup = config.get('warmup_steps', 0)
  if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
    raise ValueError(f'config.optimizer.warmup_steps must be a non-negative '
                     f'integer, got {warmup!r}.')
  name = config['schedule']
  if name == 'constant':
    schedule = optax.constant_schedule(base)
  elif name == 'step':
    factor = _check_number(config['decay_factor'], 'decay_factor',
                           positive=True)
    boundaries = {}
    for epoch in config['decay_epochs']:
      step = int(_check_number(epoch, 'decay_epochs', non_negative=True) *
                 steps_per_epoch) - warmup
      boundaries[step] = boundaries.get(step, 1.0) * factor
    schedule = optax.piecewise_constant_schedule(base, boundaries)
  elif name == 'cosine':
    schedule = optax.cosine_decay_schedule(base, max(total_steps - warmup, 1))
  else:
    raise ValueError(f'config.optimizer.schedule must be one of {SCHEDULES}, '
                     f'got {name!r}.')
  if warmup:
    schedule = optax.join_schedules(
        [optax.linear_schedule(0.0, base, warmup), schedule], [warmup])
  return schedule


def make_optimizer(config: Mapping[str, Any],
                   schedule: optax.Schedule) -> optax.GradientTransformation:
  """The optimizer `config.name` names, with clipping and masked decay."""
  name = config['name']
  weight_decay = _check_number(config.get('weight_decay', 0.0),
                               'weight_decay', non_negative=True)
  b1 = _check_number(config.get('b1', 0.9), 'b1', non_negative=True)
  b2 = _check_number(config.get('b2', 0.999), 'b2', non_negative=True)
  eps = _check_number(config.get('eps', 1e-6), 'eps', positive=True)
  if name in ('lamb', 'adamw'):
    decoupled = optax.lamb if name == 'lamb' else optax.adamw
    optimizer = decoupled(schedule, b1=b1, b2=b2, eps=eps,
                          weight_decay=weight_decay, mask=weight_decay_mask)
  elif name == 'adam':
    optimizer = optax.adam(schedule, b1=b1, b2=b2, eps=eps)
  elif name == 'sgd':
    optimizer = optax.chain(
        optax.add_decayed_weights(weight_decay, mask=weight_decay_mask),
        optax.sgd(schedule, momentum=_check_number(
            config.get('momentum', 0.9), 'momentum', non_negative=True)))
  else:
    raise ValueError(f'config.optimizer.name must be one of {OPTIMIZERS}, got '
                     f'{name!r}.')
  clip = config.get('clip_global_norm')
  if clip is not None:
    clip = _check_number(clip, 'clip_global_norm', positive=True)
    optimizer = optax.chain(optax.clip_by_global_norm(clip), optimizer)
  return optimizer
