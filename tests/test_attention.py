"""Tests of perceiver_jax.model.attention against plain numpy references."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_jax.model import attention
from model_test_utils import f64
from model_test_utils import jit
from model_test_utils import np_attention
from model_test_utils import np_cross_attend_block
from model_test_utils import np_gelu_erf
from model_test_utils import np_layer_norm
from model_test_utils import np_linear
from model_test_utils import np_mlp
from model_test_utils import np_norm
from model_test_utils import np_self_attend_layer
from model_test_utils import random_params

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
  x = jnp.zeros((1, 2, 1, 4))
  with pytest.raises(ValueError, match="'flash'"):
    attention.scaled_dot_product_attention(x, x, x, impl='flash')
  f = hk.transform(lambda: attention.Attention(
      num_heads=1, qk_channels=4, v_channels=4, output_channels=4,
      impl='flash'))
  with pytest.raises(ValueError, match="'flash'"):
    f.init(None)


# ----------------------------------------------------------------------------
# Blocks against numpy, both implementations.


@pytest.mark.parametrize('impl', IMPLS)
def test_blocks_match_numpy(impl):
  """A masked cross-attend (direct and through cached K/V), then a
  self-attend layer with widening factor 2."""
  mask = np.array([[1, 1, 1, 0, 1, 0, 1], [1, 0, 0, 1, 1, 1, 1]], bool)

  def fn(z, x):
    block = attention.CrossAttendBlock(input_channels=6, num_heads=2,
                                       attention_impl=impl, name='cross')
    direct = block(z, x, input_mask=mask, is_training=False)
    cached = block(z, keys_values=block.keys_values(x), input_mask=mask,
                   is_training=False)
    layer = attention.SelfAttendLayer(num_heads=2, widening_factor=2,
                                      attention_impl=impl, name='layer')
    return direct, cached, layer(direct, is_training=False)

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

  direct, cached, layer_out = jit(f.apply)(params, None, z, x)
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

    def interceptor(next_f, args, kwargs, context):
      out = next_f(*args, **kwargs)
      if (isinstance(context.module, hk.LayerNorm) and
          context.method_name == '__call__'):
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
  assert attention.LAYER_NORM_EPS == 1e-5


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
  f = hk.transform(lambda x: attention.linear(300, 'proj')(x))
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
    flat = hk.transform(lambda v: attention.linear(6, 'proj')(v))
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
  f = hk.transform(lambda v: attention.linear(6, 'proj')(v))
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
  f = hk.transform(lambda z, x: attention.CrossAttendBlock(
      input_channels=6, name='cross')(z, x, is_training=False))
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
# Key/value projections absorbed into the queries (one head).


def _absorb_fn(absorb, impl='einsum', heads=1, dropout=0.0):
  def fn(z, x, mask, is_training=False):
    block = attention.CrossAttendBlock(
        input_channels=6, num_heads=heads, attention_impl=impl,
        dropout=dropout, absorb_projections=absorb, name='cross')
    direct = block(z, x, input_mask=mask, is_training=is_training)
    cached = block(z, keys_values=block.keys_values(x), input_mask=mask,
                   is_training=is_training)
    return direct, cached
  return hk.transform(fn)


def _absorb_data():
  rng = np.random.default_rng(21)
  z = rng.standard_normal((2, 4, 8)).astype(np.float32)
  x = rng.standard_normal((2, 9, 6)).astype(np.float32)
  mask = rng.uniform(size=(2, 9)) > 0.3
  mask[:, 0] = True
  return z, x, mask


@pytest.mark.parametrize('impl', IMPLS)
def test_absorbed_projections_match_numpy(impl):
  """Random weights and biases (the key bias included), a key mask: the
  block with K/V projections on the query side equals the numpy block that
  projects the inputs."""
  z, x, mask = _absorb_data()
  plain, absorbed = _absorb_fn(False, impl), _absorb_fn(True, impl)
  # Same parameters, created in the same order: same initial values.
  init_plain = jit(plain.init)(jax.random.PRNGKey(0), z, x, mask)
  init_absorbed = jit(absorbed.init)(jax.random.PRNGKey(0), z, x, mask)
  assert jax.tree.structure(init_plain) == jax.tree.structure(init_absorbed)
  jax.tree.map(np.testing.assert_array_equal, init_plain, init_absorbed)
  params = random_params(init_shapes(absorbed, z, x, mask), seed=22,
                         scale=0.5)
  assert np.abs(params['cross/attention/key']['b']).min() > 0
  expected = np_cross_attend_block(params, 'cross', f64(z), f64(x), 1, mask)
  direct, cached = jit(absorbed.apply)(params, None, z, x, mask)
  np.testing.assert_allclose(direct, expected, atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(cached, expected, atol=1e-4, rtol=1e-4)


def test_absorbed_projections_have_the_plain_gradients():
  z, x, mask = _absorb_data()
  params = random_params(init_shapes(_absorb_fn(True), z, x, mask), seed=23,
                         scale=0.5)
  weights = np.random.default_rng(24).standard_normal((2, 4, 8))

  def loss(absorb):
    f = _absorb_fn(absorb)
    return lambda p: sum(jnp.sum(out * weights)
                         for out in f.apply(p, None, z, x, mask))

  plain = jit(jax.grad(loss(False)))(params)
  absorbed = jit(jax.grad(loss(True)))(params)
  for module in params:
    for name in params[module]:
      np.testing.assert_allclose(absorbed[module][name], plain[module][name],
                                 atol=2e-4, rtol=2e-4,
                                 err_msg=f'{module}/{name}')
  # The softmax cancels the key bias, so its gradient is zero in both.
  np.testing.assert_allclose(plain['cross/attention/key']['b'], 0.0,
                             atol=1e-4)


def test_absorbed_projections_do_not_project_the_inputs():
  """No matmul has the B * M input rows on one side and a weight on the
  other; the plain block has two (keys and values)."""
  z, x, mask = _absorb_data()

  def input_projections(absorb):
    f = _absorb_fn(absorb)
    params = init_shapes(f, z, x, mask)
    jaxpr = jax.make_jaxpr(lambda p: f.apply(p, None, z, x, mask))(params)
    return sum(eqn.primitive.name == 'dot_general' and
               eqn.invars[0].aval.shape == (2 * 9, 6) and
               eqn.invars[1].aval.shape == (6, 6)
               for eqn in jaxpr.jaxpr.eqns)

  # Direct and cached calls: 2 projections each in the plain block.
  assert input_projections(False) == 4
  assert input_projections(True) == 0


def test_absorbed_projections_compute_no_input_sized_gradient():
  """The gradient with respect to the parameters produces no `[B, M, C]`
  array by a matmul: the inputs' LayerNorm output, keys and values have no
  gradient to compute when the LayerNorm's scale and offset act on the
  query side. The plain block computes several (d keys, d values, d of the
  LayerNorm output)."""
  z, x, mask = _absorb_data()
  input_size = x.size  # 2 * 9 * 6 = 108, no other array of the block's.

  def input_sized_matmuls(absorb):
    f = _absorb_fn(absorb)
    params = init_shapes(f, z, x, mask)
    loss = lambda p: sum(jnp.sum(out) for out in f.apply(p, None, z, x, mask))
    jaxpr = jax.make_jaxpr(jax.grad(loss))(params)
    count = 0
    for eqn in jaxpr.jaxpr.eqns:
      count += (eqn.primitive.name == 'dot_general' and
                eqn.outvars[0].aval.size == input_size)
    return count

  assert input_sized_matmuls(False) >= 4
  assert input_sized_matmuls(True) == 0


def test_absorbed_projections_fall_back_with_attention_dropout():
  """Training with dropout on the weights (rows no longer sum to 1) projects
  K and V: the same outputs as the plain block for the same rng; with more
  than one head the option does nothing."""
  z, x, mask = _absorb_data()
  for heads, dropout, is_training in ((1, 0.5, True), (2, 0.0, False)):
    plain = _absorb_fn(False, heads=heads, dropout=dropout)
    absorbed = _absorb_fn(True, heads=heads, dropout=dropout)
    params = random_params(init_shapes(plain, z, x, mask), seed=25,
                           scale=0.5)
    run = lambda f: jit(f.apply, static_argnums=5)(  # pylint: disable=cell-var-from-loop
        params, jax.random.PRNGKey(4), z, x, mask, is_training)
    for got, want in zip(run(absorbed), run(plain)):
      np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_absorb_projections_must_be_a_bool():
  with pytest.raises(ValueError, match='absorb_projections must be a bool'):
    build(lambda: attention.CrossAttendBlock(input_channels=6,
                                             absorb_projections='yes'))


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
# Bad configurations and inputs.


def build(fn, *args):
  """Runs `fn` inside a Haiku transform (modules are built only there)."""
  return hk.transform(lambda: fn()).init(None, *args)  # pylint: disable=unnecessary-lambda


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_heads=3, qk_channels=8, v_channels=9), 'qk_channels=8'),
    (dict(num_heads=3, qk_channels=9, v_channels=8), 'v_channels=8'),
    (dict(num_heads=0, qk_channels=8, v_channels=8), 'num_heads.* 0'),
])
def test_attention_rejects_heads_that_do_not_divide(kwargs, match):
  with pytest.raises(ValueError, match=match):
    build(lambda: attention.Attention(output_channels=4, **kwargs))


def test_cross_attend_rejects_bad_heads_and_channels():
  with pytest.raises(ValueError, match='num_cross_heads=2.*7'):
    build(lambda: attention.CrossAttendBlock(input_channels=7, num_heads=2))
  f = hk.transform(lambda z, x: attention.CrossAttendBlock(
      input_channels=6)(z, x, is_training=False))
  with pytest.raises(ValueError, match=r'\(1, 5, 7\).*6 input channels'):
    jax.eval_shape(f.init, jax.random.PRNGKey(0), jnp.zeros((1, 4, 8)),
                   jnp.zeros((1, 5, 7)))
  g = hk.transform(lambda z: attention.CrossAttendBlock(input_channels=6)(
      z, is_training=False))
  with pytest.raises(ValueError, match='exactly one of inputs'):
    jax.eval_shape(g.init, jax.random.PRNGKey(0), jnp.zeros((1, 4, 8)))


def test_self_attend_rejects_heads_that_do_not_divide_latents():
  f = hk.transform(lambda z: attention.SelfAttendLayer(num_heads=3)(
      z, is_training=False))
  with pytest.raises(ValueError, match='num_self_heads=3.*8'):
    jax.eval_shape(f.init, jax.random.PRNGKey(0), jnp.zeros((1, 4, 8)))


@pytest.mark.parametrize('value', [0, -1, 2.0, True, None, '4'])
def test_non_positive_integers_are_named(value):
  with pytest.raises(ValueError, match=f'widening_factor.*{value!r}'):
    build(lambda: attention.MLP(widening_factor=value))
  with pytest.raises(ValueError, match='num_layers|num_self_attends'):
    build(lambda: attention.LatentTransformer(num_layers=value))


@pytest.mark.parametrize('rate', [float('nan'), float('inf'), 1.0, -0.1])
def test_non_finite_or_out_of_range_dropout_raises(rate):
  with pytest.raises(ValueError, match=f'dropout.*{rate!r}'):
    build(lambda: attention.SelfAttendLayer(dropout=rate))
  with pytest.raises(ValueError, match=f'dropout.*{rate!r}'):
    build(lambda: attention.CrossAttendBlock(input_channels=4, dropout=rate))
