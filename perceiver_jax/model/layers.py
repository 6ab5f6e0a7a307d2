"""The layers every block is made of (docs/paper.md section 1).

Every Linear has a bias, `VarianceScaling(1.0)` weights and zero biases;
every LayerNorm normalises channels with scale, offset and eps 1e-5. Both
can hand out their parameters unapplied, for `fast_cross_attend`.
"""

from typing import Optional

import haiku as hk
import jax
import jax.numpy as jnp

from perceiver_jax.model import matmul

LAYER_NORM_EPS = 1e-5


class FlatLinear(hk.Linear):
  """`hk.Linear` on its inputs as one `[prod(leading), C]` matrix: with two
  contracting axes in the weight gradient XLA:CPU recomputes `dy`'s chain
  in a transposing copy (docs/performance.md). bfloat16 goes through
  `matmul.linear_product`."""

  def __call__(self, inputs: jax.Array, *,
               precision: Optional[jax.lax.Precision] = None) -> jax.Array:
    flat = inputs.reshape(-1, inputs.shape[-1])
    if (inputs.dtype == jnp.bfloat16 and self.with_bias and
        self.w_init is not None):
      w, b = self.parameters(flat.shape[-1], inputs.dtype)
      outputs = matmul.linear_product(flat, w) + b
    else:
      outputs = super().__call__(flat, precision=precision)
    return outputs.reshape(*inputs.shape[:-1], outputs.shape[-1])

  def parameters(self, input_size: int,
                 dtype: jnp.dtype) -> tuple[jax.Array, jax.Array]:
    """The `w` `[input_size, output_size]` and `b` that `__call__` uses."""
    w = hk.get_parameter('w', [input_size, self.output_size], dtype,
                         init=self.w_init)
    b = hk.get_parameter('b', [self.output_size], dtype, init=self.b_init)
    return w, b


def linear(output_size: int, name: str) -> FlatLinear:
  """A Linear layer with the paper's initialisers."""
  return FlatLinear(
      output_size,
      with_bias=True,
      w_init=hk.initializers.VarianceScaling(1.0),
      b_init=jnp.zeros,
      name=name)


def standardize(x: jax.Array, eps: float = LAYER_NORM_EPS) -> jax.Array:
  """A LayerNorm without scale and offset (statistics in float32)."""
  x32 = x.astype(jnp.float32)
  mean = jnp.mean(x32, axis=-1, keepdims=True)
  variance = jnp.var(x32, axis=-1, keepdims=True)
  return ((x32 - mean) * jax.lax.rsqrt(variance + eps)).astype(x.dtype)


class LayerNorm(hk.LayerNorm):
  """`hk.LayerNorm` computed in float32 whatever the input's dtype (so
  bfloat16 statistics keep their precision); the result in the input's."""

  def __call__(self, inputs: jax.Array, *args, **kwargs) -> jax.Array:
    if inputs.dtype == jnp.float32:
      return super().__call__(inputs, *args, **kwargs)
    return super().__call__(inputs.astype(jnp.float32), *args,
                            **kwargs).astype(inputs.dtype)

  def parameters(self, channels: int) -> tuple[jax.Array, jax.Array]:
    """The float32 scale and offset `[channels]` that `__call__` applies."""
    scale = hk.get_parameter('scale', [channels], jnp.float32,
                             init=self.scale_init)
    offset = hk.get_parameter('offset', [channels], jnp.float32,
                              init=self.offset_init)
    return scale, offset


def layer_norm(name: str) -> LayerNorm:
  """LayerNorm over the channel axis with scale, offset and eps 1e-5."""
  return LayerNorm(axis=-1, create_scale=True, create_offset=True,
                   eps=LAYER_NORM_EPS, name=name)


def dropout(x: jax.Array, rate: float, is_training: bool) -> jax.Array:
  """Dropout that is a no-op (and needs no rng) at rate 0 or in evaluation."""
  if rate == 0.0 or not is_training:
    return x
  return hk.dropout(hk.next_rng_key(), rate, x)
