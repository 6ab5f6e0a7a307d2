"""The training state: what a step reads and writes, and its initialisation."""

from typing import Any, Mapping, NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from perceiver_jax.model import factory
from perceiver_jax.train import optim


class TrainState(NamedTuple):
  """Everything a step reads and writes; `rng` is the run's base key (raw
  uint32), `num_skipped` the updates skipped for a non-finite loss."""
  params: hk.Params
  opt_state: optax.OptState
  step: jax.Array
  rng: jax.Array
  num_skipped: jax.Array


def num_params(params: Any) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(params))


def initial_state(forward: hk.Transformed,
                  optimizer: optax.GradientTransformation,
                  example_batch: Mapping[str, np.ndarray],
                  seed: int) -> TrainState:
  """Fresh parameters and optimizer state from `seed`, for one device's
  `example_batch`."""
  init_key, run_key = jax.random.split(jax.random.PRNGKey(seed))
  params = jax.jit(lambda key, batch: forward.init(
      key, batch, is_training=True))(init_key, example_batch)
  return TrainState(params=params, opt_state=optimizer.init(params),
                    step=jnp.zeros([], jnp.int32), rng=run_key,
                    num_skipped=jnp.zeros([], jnp.int32))


def abstract_state(model: ml_collections.ConfigDict, num_classes: int,
                   optimizer_config: ml_collections.ConfigDict) -> TrainState:
  """The shapes and dtypes of a fresh `TrainState` (nothing computed)."""
  forward = factory.transform_classifier(model, num_classes)
  optimizer = optim.make_optimizer(optimizer_config, lambda _: 0.0)
  example = factory.example_batch(model['input'], 1)
  return jax.eval_shape(
      lambda: initial_state(forward, optimizer, example, 0))
