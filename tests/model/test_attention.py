"""Tests of the reference blocks (perceiver_jax.model.attention), their
layers (perceiver_jax.model.layers) and the encoder settings' checks
(perceiver_jax.model.encoder_config), against plain numpy references.

The optimised cross-attend's own paths (absorbed projections) are tied to
the reference block in tests/model/test_fast_cross_attend.py.
"""

import re

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_jax.model import attention
from perceiver_jax.model import encoder_config
from perceiver_jax.model import fast_cross_attend
from perceiver_jax.model import layers
from tests.helpers.model_test_utils import f64
from tests.helpers.model_test_utils import jit
from tests.helpers.model_test_utils import np_attention
from tests.helpers.model_test_utils import np_cross_attend_block
from tests.helpers.model_test_utils import np_gelu_erf
from tests.helpers.model_test_utils import np_layer_norm
from tests.helpers.model_test_utils import np_linear
from tests.helpers.model_test_utils import np_mlp
from tests.helpers.model_test_utils import np_norm
from tests.helpers.model_test_utils import np_self_attend_layer
from tests.helpers.model_test_utils import random_params

IMPLS = ('einsum', 'dot_product')


def init_shapes(transformed, *args):
  """Parameter shapes without compiling any initialiser."""
  return jax.eval_shape(transformed.init, jax.random.PRNGKey(0), *args)


# ----------------------------------------------------------------------------
# scaled_dot_product_attention.


@pytest.mark.parametrize('impl', IMPLS)
def test_scaled_dot_product_attention_matches_numpy(impl):
  rng = np.random.default_rng(1)
  q = rng.standard_normal((2, 3, 2, 4)).astype(np.float32)
  k = rng.standard_normal((2, 6, 2, 4)).astype(np.float32)
  v = rng.standard_normal((2, 6, 2, 4)).astype(np.float32)
  sdpa = jit(attention.scaled_dot_product_attention,
             static_argnames='impl')
  out = sdpa(q, k, v, impl=impl)
  assert out.shape == (2, 3, 2, 4)
  np.testing.assert_allclose(out, np_attention(f64(q), f64(k), f64(v)),
                             atol=1e-5, rtol=1e-5)

  mask = np.array([[1, 1, 0, 1, 0, 0], [0, 1, 1, 1, 1, 1]], bool)
  masked = sdpa(q, k, v, key_mask=mask, impl=impl)
  np.testing.assert_allclose(masked,
                             np_attention(f64(q), f64(k), f64(v), mask),
                             atol=1e-5, rtol=1e-5)
  # Masked keys get no weight: their keys and values may hold anything (here
  # huge numbers) without changing the result.
  junk = 1e4 * rng.standard_normal(k.shape).astype(np.float32)
  out2 = sdpa(
      q, np.where(mask[..., None, None], k, junk),
      np.where(mask[..., None, None], v, junk), key_mask=mask, impl=impl)
  np.testing.assert_allclose(out2, masked, atol=1e-6)


def test_einsum_supports_value_width_other_than_key_width():
  rng = np.random.default_rng(2)
  q = rng.standard_normal((1, 3, 2, 4)).astype(np.float32)
  k = rng.standard_normal((1, 5, 2, 4)).astype(np.float32)
  v = rng.standard_normal((1, 5, 2, 3)).astype(np.float32)
  out = attention.scaled_dot_product_attention(q, k, v, impl='einsum')
  np.testing.assert_allclose(out, np_attention(f64(q), f64(k), f64(v)),
                             atol=1e-5, rtol=1e-5)


def test_unknown_attention_impl_raises():
  """Neither the function nor the encoder settings run an unknown impl as
  some other one."""
  x = jnp.zeros((1, 2, 1, 4))
  with pytest.raises(ValueError, match="impl.*'flash'"):
    attention.scaled_dot_product_attention(x, x, x, impl='flash')
  with pytest.raises(ValueError, match="attention_impl.*'flash'"):
    encoder_config.EncoderConfig(attention_impl='flash')


# ----------------------------------------------------------------------------
# Blocks against numpy, both implementations.


@pytest.mark.parametrize('impl', IMPLS)
def test_blocks_match_numpy(impl):
  """A masked cross-attend, then a self-attend layer with widening factor
  2; and the same cross-attend through precomputed K/V
  (`FastCrossAttendBlock.attend(keys_values(x))`) on the same parameters."""
  mask = np.array([[1, 1, 1, 0, 1, 0, 1], [1, 0, 0, 1, 1, 1, 1]], bool)

  def fn(z, x):
    block = attention.CrossAttendBlock(num_heads=2, attention_impl=impl,
                                       name='cross')
    direct = block(z, x, input_mask=mask, is_training=False)
    layer = attention.SelfAttendLayer(num_heads=2, widening_factor=2,
                                      attention_impl=impl, name='layer')
    return direct, layer(direct, is_training=False)

  def cached_fn(z, x):
    # Same module name, so the reference block's parameters apply.
    block = fast_cross_attend.FastCrossAttendBlock(
        input_channels=6, absorb_projections=False, num_heads=2,
        attention_impl=impl, name='cross')
    keys_values = block.keys_values(x, is_training=False)
    assert isinstance(keys_values, fast_cross_attend.KeysValues)
    return block.attend(z, keys_values, input_mask=mask, is_training=False)

  f = hk.transform(fn)
  rng = np.random.default_rng(5)
  z = rng.standard_normal((2, 4, 8)).astype(np.float32)
  x = rng.standard_normal((2, 7, 6)).astype(np.float32)
  shapes = init_shapes(f, z, x)
  # Q/K/V width is the input width C = 6; the output goes back to D = 8.
  assert shapes['cross/attention/query']['w'].shape == (8, 6)
  assert shapes['cross/attention/key']['w'].shape == (6, 6)
  assert shapes['cross/attention/value']['w'].shape == (6, 6)
  assert shapes['cross/attention/output']['w'].shape == (6, 8)
  assert shapes['layer/mlp/hidden']['w'].shape == (8, 16)
  assert shapes['layer/attention/query']['w'].shape == (8, 8)
  params = random_params(shapes, seed=6, scale=0.5)

  direct, layer_out = jit(f.apply)(params, None, z, x)
  cached = jit(hk.transform(cached_fn).apply)(params, None, z, x)
  expected = np_cross_attend_block(params, 'cross', f64(z), f64(x), 2, mask)
  np.testing.assert_allclose(direct, expected, atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(cached, expected, atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(
      layer_out, np_self_attend_layer(params, 'layer', expected, heads=2),
      atol=1e-4, rtol=1e-4)


def test_layer_norms_of_a_block_match_numpy_with_eps_1e_5():
  """Every LayerNorm inside a block, seen through an interceptor."""
  names = []  # Filled while tracing.

  def fn(z):
    seen = []
    active = []  # LayerNorm calls in progress.

    def interceptor(next_f, args, kwargs, context):
      if not (isinstance(context.module, hk.LayerNorm) and
              context.method_name == '__call__'):
        return next_f(*args, **kwargs)
      # layers.LayerNorm.__call__ calls hk.LayerNorm.__call__, which is
      # intercepted too: record the outer call (the block's view) only.
      active.append(context.module)
      try:
        out = next_f(*args, **kwargs)
      finally:
        active.pop()
      if not active:
        names.append(context.module.module_name)
        seen.append((args[0], out))
      return out

    with hk.intercept_methods(interceptor):
      attention.SelfAttendLayer(num_heads=2, name='layer')(
          z, is_training=False)
    return seen

  f = hk.transform(fn)
  # A tiny spread (variance ~1e-6) makes eps matter: with eps 1e-5 the
  # normalised values are ~0.3, with a much smaller eps they would be ~1.
  rng = np.random.default_rng(7)
  z = (1e-3 * rng.standard_normal((2, 3, 8)) + 2.0).astype(np.float32)
  params = random_params(init_shapes(f, z), seed=8, scale=0.1)
  names.clear()
  seen = jit(f.apply)(params, None, z)
  assert names == ['layer/attention_norm', 'layer/mlp_norm']
  for name, (x, out) in zip(names, seen):
    np.testing.assert_allclose(out, np_norm(params, name, f64(x)), atol=2e-4)
  # The check can tell eps apart: eps 1e-6 would give a different answer.
  x, out = seen[0]
  other = np_layer_norm(f64(x), f64(params[names[0]]['scale']),
                        f64(params[names[0]]['offset']), eps=1e-6)
  assert np.abs(other - out).max() > 0.1
  assert layers.LAYER_NORM_EPS == 1e-5


def test_mlp_uses_tanh_gelu():
  f = hk.transform(lambda x: attention.MLP(widening_factor=3, name='mlp')(
      x, is_training=False))
  x = (2.0 * np.random.default_rng(9).standard_normal((2, 5, 4))).astype(
      np.float32)
  params = random_params(init_shapes(f, x), seed=10, scale=1.0)
  assert params['mlp/hidden']['w'].shape == (4, 12)
  assert params['mlp/output']['w'].shape == (12, 4)
  out = jit(f.apply)(params, None, x)
  np.testing.assert_allclose(out, np_mlp(params, 'mlp', f64(x)),
                             atol=1e-4, rtol=1e-4)
  # The erf form differs by more than the tolerance on these inputs.
  erf_out = np_linear(params['mlp/output'],
                      np_gelu_erf(np_linear(params['mlp/hidden'], f64(x))))
  assert np.abs(erf_out - np.asarray(out)).max() > 1e-3


# ----------------------------------------------------------------------------
# Initialisers.


def test_linear_initialisers():
  """VarianceScaling(1.0) fan-in truncated normal weights, zero biases."""
  f = hk.transform(lambda x: layers.linear(300, 'proj')(x))
  params = jit(f.init)(jax.random.PRNGKey(0), jnp.zeros((1, 400)))
  w, b = np.asarray(params['proj']['w']), np.asarray(params['proj']['b'])
  assert w.shape == (400, 300)
  np.testing.assert_array_equal(b, np.zeros(300))
  # Truncated at two (untruncated) standard deviations, rescaled so that the
  # final standard deviation is sqrt(1 / fan_in) = 0.05.
  assert abs(w.std() - 0.05) < 0.05 * 0.03
  assert abs(w.mean()) < 1e-3
  assert np.abs(w).max() <= 2 * 0.05 / 0.87962566 + 1e-6


def test_flat_linear_equals_hk_linear_in_parameters_values_and_gradients():
  """FlatLinear only reshapes: hk.Linear's parameter tree, outputs and
  gradients (against a float64 numpy matmul), on 3D and 4D inputs."""
  x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(
      np.float32)
  for inputs in (x, x[0]):
    flat = hk.transform(lambda v: layers.linear(6, 'proj')(v))
    plain = hk.transform(lambda v: hk.Linear(6, name='proj')(v))
    params = flat.init(jax.random.PRNGKey(0), inputs)
    assert (jax.tree.map(jnp.shape, params) ==
            jax.tree.map(jnp.shape, plain.init(jax.random.PRNGKey(0),
                                               inputs)))
    params = random_params(params, seed=1)
    w, b = f64(params['proj']['w']), f64(params['proj']['b'])
    out = np.asarray(jit(flat.apply)(params, None, inputs))
    assert out.shape == (*inputs.shape[:-1], 6)
    np.testing.assert_allclose(out, f64(inputs) @ w + b, atol=1e-5)
    # d/dw of sum(out * g) = sum over leading axes of x^T g.
    g = np.random.default_rng(2).standard_normal(out.shape)
    grads = jax.grad(lambda p: jnp.sum(flat.apply(p, None, inputs) * g))(
        params)
    lead = tuple(range(inputs.ndim - 1))
    np.testing.assert_allclose(
        grads['proj']['w'],
        np.tensordot(f64(inputs), g, axes=(lead, lead)), atol=1e-4)
    np.testing.assert_allclose(grads['proj']['b'], g.sum(lead), atol=1e-4)


def test_flat_linear_weight_gradient_contracts_one_axis():
  """The point of FlatLinear: the weight gradient's dot_general contracts a
  single axis (batch and positions folded), not two."""
  f = hk.transform(lambda v: layers.linear(6, 'proj')(v))
  x = jnp.ones((2, 3, 5))
  params = f.init(jax.random.PRNGKey(0), x)
  jaxpr = jax.make_jaxpr(jax.grad(
      lambda p: jnp.sum(f.apply(p, None, x) ** 2)))(params)
  contractions = [eqn.params['dimension_numbers'][0]
                  for eqn in jaxpr.jaxpr.eqns
                  if eqn.primitive.name == 'dot_general']
  assert contractions  # Forward and weight-gradient matmuls.
  assert all(len(lhs) == 1 and len(rhs) == 1 for lhs, rhs in contractions)


def test_block_parameters_start_as_the_paper_says():
  f = hk.transform(lambda z, x: attention.CrossAttendBlock(name='cross')(
      z, x, is_training=False))
  params = jit(f.init)(jax.random.PRNGKey(0), jnp.zeros((1, 4, 8)),
                       jnp.zeros((1, 5, 6)))
  assert sorted(params) == sorted(
      ['cross/input_norm', 'cross/query_norm', 'cross/mlp_norm',
       'cross/attention/query', 'cross/attention/key',
       'cross/attention/value', 'cross/attention/output', 'cross/mlp/hidden',
       'cross/mlp/output'])
  for module, leaves in params.items():
    if module.endswith('_norm'):
      assert sorted(leaves) == ['offset', 'scale']
      np.testing.assert_array_equal(leaves['scale'], 1.0, err_msg=module)
      np.testing.assert_array_equal(leaves['offset'], 0.0, err_msg=module)
    else:  # Every Linear has a bias, zero at the start.
      assert sorted(leaves) == ['b', 'w']
      np.testing.assert_array_equal(leaves['b'], 0.0, err_msg=module)
      assert np.abs(leaves['w']).max() > 0, module


# ----------------------------------------------------------------------------
# Dropout.


def test_dropout_acts_only_in_training():
  def fn(z, is_training):
    return attention.SelfAttendLayer(num_heads=2, dropout=0.5, name='layer')(
        z, is_training=is_training)

  f = hk.transform(fn)
  z = np.random.default_rng(11).standard_normal((2, 4, 8)).astype(np.float32)
  params = random_params(
      init_shapes(hk.transform(lambda z: fn(z, False)), z), seed=12)
  without_dropout = np_self_attend_layer(params, 'layer', f64(z), heads=2)
  # Evaluation: no rng needed, the output of the layer without dropout.
  apply = jit(f.apply, static_argnums=3)
  np.testing.assert_allclose(apply(params, None, z, False), without_dropout,
                             atol=1e-4, rtol=1e-4)
  # Training: different, and different per rng.
  out1 = apply(params, jax.random.PRNGKey(1), z, True)
  out2 = apply(params, jax.random.PRNGKey(2), z, True)
  assert np.abs(out1 - without_dropout).max() > 1e-2
  assert np.abs(out1 - out2).max() > 1e-2


def test_dot_product_impl_with_attention_dropout_matches_einsum():
  """With dropout on, both implementations draw the same mask."""
  rng = np.random.default_rng(13)
  q, k, v = (rng.standard_normal((1, 3, 1, 4)).astype(np.float32)
             for _ in range(3))
  outs = []
  for impl in IMPLS:
    f = hk.transform(lambda: attention.scaled_dot_product_attention(
        q, k, v, impl=impl, dropout_rate=0.5, is_training=True))  # pylint: disable=cell-var-from-loop
    outs.append(jit(f.apply)({}, jax.random.PRNGKey(3)))
  np.testing.assert_allclose(outs[0], outs[1], atol=1e-6)
  assert np.abs(outs[0] - np_attention(f64(q), f64(k), f64(v))).max() > 1e-3


# ----------------------------------------------------------------------------
# Bad settings. The blocks take their hyperparameters as given: every check
# lives in `encoder_config.EncoderConfig` (which the Perceiver builds).


def test_heads_that_do_not_divide_their_channels_raise():
  with pytest.raises(ValueError, match='num_self_heads=3 does not divide '
                     'num_latent_channels=8'):
    encoder_config.EncoderConfig(num_self_heads=3, num_latent_channels=8)
  config = encoder_config.EncoderConfig(num_cross_heads=2,
                                        num_latent_channels=8)
  # The cross-attend's width is the inputs' C, known only from the inputs.
  with pytest.raises(ValueError,
                     match=r'num_cross_heads=2.* 7 \(inputs of shape '
                     r'\(1, 5, 7\)\)'):
    config.check_input_channels(7, 'inputs of shape (1, 5, 7)')
  config.check_input_channels(6, 'inputs of shape (1, 5, 6)')  # Divides.
  with pytest.raises(ValueError, match='input_channels.*got 0'):
    config.check_input_channels(0, 'inputs of shape (1, 5, 0)')


POSITIVE_INT_FIELDS = ('num_blocks', 'num_cross_attends', 'num_latents',
                       'num_latent_channels', 'num_cross_heads',
                       'num_self_heads', 'widening_factor')


@pytest.mark.parametrize('value', [0, -1, 2.0, True, None, '4'])
def test_non_positive_integers_are_named(value):
  for name in POSITIVE_INT_FIELDS:
    with pytest.raises(ValueError, match=re.escape(
        f'{name} must be a positive integer, got {value!r}')):
      encoder_config.EncoderConfig(**{name: value})
  # Zero self-attends is a valid depth (cross-attends only); the rest not.
  if value != 0 or isinstance(value, bool):
    with pytest.raises(ValueError, match=re.escape(
        f'num_self_attends_per_block must be a non-negative integer, got '
        f'{value!r}')):
      encoder_config.EncoderConfig(num_self_attends_per_block=value)
  else:
    encoder_config.EncoderConfig(num_self_attends_per_block=0)


@pytest.mark.parametrize('rate', [float('nan'), float('inf'), 1.0, -0.1,
                                  True, '0.1'])
def test_non_finite_or_out_of_range_dropout_raises(rate):
  with pytest.raises(ValueError, match=re.escape(
      f'dropout must be a finite rate in [0, 1), got {rate!r}')):
    encoder_config.EncoderConfig(dropout=rate)


def test_valid_settings_are_accepted():
  """The checks above reject only what they name."""
  for rate in (0, 0.0, 0.5, 0.999):
    assert encoder_config.EncoderConfig(dropout=rate).dropout == rate
  for impl in attention.ATTENTION_IMPLS:
    encoder_config.EncoderConfig(attention_impl=impl)
  config = encoder_config.EncoderConfig(
      num_blocks=1, num_self_attends_per_block=1, num_cross_attends=1,
      num_latents=1, num_latent_channels=6, num_cross_heads=3,
      num_self_heads=6, widening_factor=1)
  config.check_input_channels(9, 'input_channels')
