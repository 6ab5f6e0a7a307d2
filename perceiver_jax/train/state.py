"""The training state: one NamedTuple passed whole into the step."""

from typing import Any, NamedTuple

import haiku as hk
import jax
import optax


class TrainState(NamedTuple):
  """Everything a step reads and writes.

  Attributes:
    params: the model's parameters.
    opt_state: the optimizer's state.
    step: the number of updates taken, an int32 scalar.
    rng: the run's base PRNG key (raw uint32 data, so checkpoints store it as
      a plain array); per-step keys are derived by `fold_in`.
    num_skipped: updates skipped for a non-finite loss or gradient.
  """
  params: hk.Params
  opt_state: optax.OptState
  step: jax.Array
  rng: jax.Array
  num_skipped: jax.Array


def num_params(params: Any) -> int:
  """The number of scalars in a pytree of arrays."""
  return sum(int(x.size) for x in jax.tree.leaves(params))
