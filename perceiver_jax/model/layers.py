"""The layers every block is made of: Linear, LayerNorm and dropout.

docs/paper.md section 1: every Linear has a bias and uses
`VarianceScaling(1.0)` weights and zero biases; every LayerNorm normalises
the channel axis with scale, offset and eps 1e-5; dropout is off in every
paper config (rate 0) and a no-op in evaluation.

Both layers can also hand out their parameters unapplied (same names,
shapes and initialisers), for the optimised cross-attend
(`fast_cross_attend`), which applies them on the queries' side.
"""

from typing import Optional

import haiku as hk
import jax
import jax.numpy as jnp

from perceiver_jax.model import matmul

LAYER_NORM_EPS = 1e-5


class FlatLinear(hk.Linear):
  """`hk.Linear` that multiplies its inputs as one `[prod(leading), C]` matrix.

  The parameters (`w`, `b`) and outputs are `hk.Linear`'s. Why: on
  `[B, T, C]` inputs, the weight gradient `x^T dy` contracts over two axes
  (B and T). XLA:CPU then stores the output gradient `dy` transposed for
  the matmul and fuses into that transposing copy the whole elementwise
  chain that produces `dy` (the residual stream's gradient through every
  later LayerNorm), recomputing it, with strided reads, once per weight
  gradient. With one contracting axis `dy` is read as it is stored. On the
  digits model (batch 64) this cuts the gradient's time by about 40%
  (docs/performance.md).

  bfloat16 inputs (with a bias and an explicit `w_init`, as `linear` makes
  them) multiply the bfloat16-cast weight through `matmul.linear_product`:
  bfloat16 products, float32 accumulation, also in the gradients.
  """

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
    """The weight `[input_size, output_size]` and bias `[output_size]` that
    `__call__` on inputs of width `input_size` would use."""
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
  """`(x - mean) / sqrt(var + eps)` over the channel axis, statistics in
  float32, the result in `x`'s dtype: a LayerNorm without scale and offset.
  """
  x32 = x.astype(jnp.float32)
  mean = jnp.mean(x32, axis=-1, keepdims=True)
  variance = jnp.var(x32, axis=-1, keepdims=True)
  return ((x32 - mean) * jax.lax.rsqrt(variance + eps)).astype(x.dtype)


class LayerNorm(hk.LayerNorm):
  """`hk.LayerNorm` over the last axis whose statistics and affine map run
  in float32 whatever the input's dtype; the result has the input's dtype.

  In float32 this is `hk.LayerNorm` itself; in bfloat16 the statistics over
  a wide channel axis keep their precision (the parameters stay float32,
  see `encoder_config.EncoderConfig.precision`).
  """

  def __call__(self, inputs: jax.Array, *args, **kwargs) -> jax.Array:
    if inputs.dtype == jnp.float32:
      return super().__call__(inputs, *args, **kwargs)
    return super().__call__(inputs.astype(jnp.float32), *args,
                            **kwargs).astype(inputs.dtype)

  def parameters(self, channels: int) -> tuple[jax.Array, jax.Array]:
    """The scale `[channels]` and offset `[channels]` (float32) that
    `__call__` would apply."""
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
