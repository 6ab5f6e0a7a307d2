"""Products of bfloat16 arrays that XLA:CPU runs on its bfloat16 kernels.

In bfloat16 compute (`EncoderConfig.precision`) a product of two bfloat16
arrays should multiply bfloat16 numbers and accumulate in float32. XLA:CPU
(jaxlib 0.10) does so, on YNNPACK's bfloat16 kernels (AVX512-BF16 or AMX
where the CPU has them), only for a dot whose result is float32 and whose
left operand is `[rows, contracted]` in row-major order. Any other bfloat16
dot it runs by converting both operands to float32 first (about 5x slower
than the bfloat16 kernel on an AMX Xeon for a `[2048, 256] x [256, 256]`
product; docs/performance.md). Two cases matter:

- a dot whose result is bfloat16 (`jnp.dot(x, w)` on bfloat16 operands):
  asking for a float32 result and rounding it to bfloat16 afterwards gives
  the same numbers (the accumulation is in float32 either way);
- the weight gradient `x^T dy` of a Linear, which contracts the leading
  (row) axis of `x`. XLA folds an explicit `transpose(x)` back into the dot,
  so `transposed` writes the transpose as a reshape-transpose-reshape that
  XLA moves as data instead.

`linear_product` (the Linears) does both, in the forward pass and in its
gradients. `einsum` (the attention's weighted sum) does the first in the
forward pass only: its gradients are JAX's, products of a float32 cotangent
and a bfloat16 operand, which XLA:CPU runs in float32. In float32 every
function here is the plain product (the same program).
"""

import jax
import jax.numpy as jnp


def _accumulates_in_float32(*operands: jax.Array) -> bool:
  return all(x.dtype == jnp.bfloat16 for x in operands)


def transposed(x: jax.Array) -> jax.Array:
  """`x.T` for `x` `[R, K]`, as a copy XLA does not fold into a later dot.

  `[R, K] -> [R, K / f, f] -> [K / f, f, R] -> [K, R]` for the largest
  factor f <= 16 of K. For a prime K (f = 1, or f = K when K <= 16) this is
  a plain transpose, which XLA may fold: that costs speed, not correctness.
  """
  rows, columns = x.shape
  factor = max(f for f in range(1, 17) if columns % f == 0)
  return jnp.transpose(x.reshape(rows, columns // factor, factor),
                       (1, 2, 0)).reshape(columns, rows)


def _product(x: jax.Array, w: jax.Array) -> jax.Array:
  return jax.lax.dot_general(x, w, (((1,), (0,)), ((), ())),
                             preferred_element_type=jnp.float32).astype(
                                 x.dtype)


@jax.custom_vjp
def _low_precision_product(x: jax.Array, w: jax.Array) -> jax.Array:
  return _product(x, w)


def _forward(x, w):
  return _product(x, w), (x, w)


def _backward(residuals, output_gradient):
  x, w = residuals
  dy = output_gradient.astype(x.dtype)
  dx = jax.lax.dot_general(dy, w, (((1,), (1,)), ((), ())),
                           preferred_element_type=jnp.float32)
  # On CPU the transpose must be a real copy (module docstring); other
  # backends read the transposed operand as it is stored.
  x_t = transposed(x) if jax.default_backend() == 'cpu' else x.T
  dw = jax.lax.dot_general(x_t, dy, (((1,), (0,)), ((), ())),
                           preferred_element_type=jnp.float32)
  return dx.astype(x.dtype), dw.astype(w.dtype)


_low_precision_product.defvjp(_forward, _backward)


def linear_product(x: jax.Array, w: jax.Array) -> jax.Array:
  """`x @ w` for `x` `[R, K]` and `w` `[K, O]`: `[R, O]` in `x`'s dtype.

  bfloat16 operands multiply in bfloat16 and accumulate in float32, in the
  forward pass and in both gradients (module docstring); otherwise
  `jnp.dot`.
  """
  if _accumulates_in_float32(x, w):
    return _low_precision_product(x, w)
  return jnp.dot(x, w)


def einsum(spec: str, *operands: jax.Array) -> jax.Array:
  """`jnp.einsum(spec, *operands)`, accumulating bfloat16 operands in
  float32 and rounding the result back to bfloat16."""
  if _accumulates_in_float32(*operands):
    return jnp.einsum(spec, *operands,
                      preferred_element_type=jnp.float32).astype(jnp.bfloat16)
  return jnp.einsum(spec, *operands)
