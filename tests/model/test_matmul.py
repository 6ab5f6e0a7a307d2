"""bfloat16 products that accumulate in float32 (`perceiver_jax.model.matmul`).

References are float64 numpy products of the same (bfloat16-rounded)
operands; the only admissible difference is the final rounding to bfloat16
(relative 2^-8) and float32 accumulation.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_jax.model import matmul
from tests.helpers.model_test_utils import nested_equations

BF16_ROUNDING = 2.0 ** -8


def _bf16(rng, *shape):
  return jnp.asarray(rng.standard_normal(shape), jnp.bfloat16)


def _f64(x):
  return np.asarray(x.astype(jnp.float32), np.float64)


def _dots(fn, *args):
  """Every dot_general of `fn`'s jaxpr, nested ones included."""
  return [eqn for eqn in nested_equations(jax.make_jaxpr(fn)(*args).jaxpr)
          if eqn.primitive.name == 'dot_general']


@pytest.mark.parametrize('columns', [261, 256, 19, 1])
def test_transposed_is_the_transpose(columns):
  x = np.arange(7 * columns, dtype=np.float32).reshape(7, columns)
  np.testing.assert_array_equal(jax.jit(matmul.transposed)(x), x.T)


def test_float32_is_the_plain_product():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((5, 4)).astype(np.float32)
  w = rng.standard_normal((4, 3)).astype(np.float32)
  np.testing.assert_array_equal(matmul.linear_product(x, w), jnp.dot(x, w))
  dots = _dots(matmul.linear_product, x, w)
  assert len(dots) == 1 and dots[0].params['preferred_element_type'] in (
      None, jnp.float32)
  np.testing.assert_array_equal(matmul.einsum('ij,jk->ik', x, w),
                                jnp.einsum('ij,jk->ik', x, w))


def test_bfloat16_product_and_its_gradients_match_float64():
  rng = np.random.default_rng(1)
  x, w = _bf16(rng, 48, 261), _bf16(rng, 261, 24)
  upstream = _bf16(rng, 48, 24)

  def loss(x, w):
    y = matmul.linear_product(x, w)
    assert y.dtype == jnp.bfloat16
    return jnp.sum(y.astype(jnp.float32) * upstream.astype(jnp.float32))

  y = jax.jit(matmul.linear_product)(x, w)
  want = _f64(x) @ _f64(w)
  np.testing.assert_allclose(_f64(y), want, rtol=BF16_ROUNDING,
                             atol=1e-6 * np.abs(want).max())
  dx, dw = jax.jit(jax.grad(loss, argnums=(0, 1)))(x, w)
  assert dx.dtype == jnp.bfloat16 and dw.dtype == jnp.bfloat16
  for got, want in ((dx, _f64(upstream) @ _f64(w).T),
                    (dw, _f64(x).T @ _f64(upstream))):
    np.testing.assert_allclose(_f64(got), want, rtol=BF16_ROUNDING,
                               atol=1e-6 * np.abs(want).max())


def test_bfloat16_products_accumulate_in_float32_forward_and_backward():
  rng = np.random.default_rng(2)
  x, w = _bf16(rng, 16, 12), _bf16(rng, 12, 8)
  gradient = jax.grad(lambda x, w: jnp.sum(
      matmul.linear_product(x, w).astype(jnp.float32)), argnums=(0, 1))
  dots = _dots(gradient, x, w)
  assert len(dots) == 3  # The product and its two gradients.
  for dot in dots:
    assert [v.aval.dtype for v in dot.invars] == [jnp.bfloat16] * 2
    assert dot.params['preferred_element_type'] == jnp.float32


def test_bfloat16_einsum_accumulates_in_float32():
  rng = np.random.default_rng(3)
  a, b = _bf16(rng, 2, 3, 40), _bf16(rng, 2, 40, 5)
  out = matmul.einsum('bnm,bmd->bnd', a, b)
  assert out.dtype == jnp.bfloat16
  want = np.einsum('bnm,bmd->bnd', _f64(a), _f64(b))
  np.testing.assert_allclose(_f64(out), want, rtol=BF16_ROUNDING,
                             atol=1e-6 * np.abs(want).max())
  (dot,) = _dots(lambda a, b: matmul.einsum('bnm,bmd->bnd', a, b), a, b)
  assert dot.params['preferred_element_type'] == jnp.float32
