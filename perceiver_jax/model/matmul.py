"""Products of bfloat16 arrays that XLA:CPU runs on its bfloat16 kernels.

XLA:CPU multiplies bfloat16 numbers with float32 accumulation only for a
dot with a float32 result whose left operand is `[rows, contracted]` in
row-major order; any other bfloat16 dot it runs in float32, several times
slower (docs/performance.md). So `linear_product` (the Linears) asks for a
float32 result and rounds it, and writes the weight gradient's transpose
as a copy XLA does not fold back (`transposed`); `einsum` (the attention's
weighted sum) does the first, in the forward pass only. In float32 both
are the plain product.
"""

import jax
import jax.numpy as jnp


def _accumulates_in_float32(*operands: jax.Array) -> bool:
  return all(x.dtype == jnp.bfloat16 for x in operands)


def transposed(x: jax.Array) -> jax.Array:
  """`x.T` for `x` `[R, K]` via `[R, K / f, f]`, f the largest factor of K
  up to 16: a copy XLA does not fold into a later dot (for a prime K it may,
  which costs speed only)."""
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
  """`x @ w`, `[R, K] x [K, O] -> [R, O]` in `x`'s dtype; bfloat16
  operands accumulate in float32, gradients too."""
  if _accumulates_in_float32(x, w):
    return _low_precision_product(x, w)
  return jnp.dot(x, w)


def einsum(spec: str, *operands: jax.Array) -> jax.Array:
  """`jnp.einsum`, bfloat16 operands accumulated in float32."""
  if _accumulates_in_float32(*operands):
    return jnp.einsum(spec, *operands,
                      preferred_element_type=jnp.float32).astype(jnp.bfloat16)
  return jnp.einsum(spec, *operands)
