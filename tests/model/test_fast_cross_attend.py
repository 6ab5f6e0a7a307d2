"""Ties every path of `fast_cross_attend.FastCrossAttendBlock` to the
reference `attention.CrossAttendBlock`.

Each path (projected keys and values, reused; absorbed projections; the
projected path that absorption falls back to) is run on the reference
block's parameters and compared with the reference block, with the numpy
block (tests/helpers/model_test_utils.py), or with both; and the absorbed path is
checked to do what it is for: no projection of the inputs, forward or
backward.
"""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_jax.model import attention
from perceiver_jax.model import encoder_config
from perceiver_jax.model import fast_cross_attend
from tests.helpers.model_test_utils import f64
from tests.helpers.model_test_utils import jit
from tests.helpers.model_test_utils import np_cross_attend_block
from tests.helpers.model_test_utils import random_params

IMPLS = ('einsum', 'dot_product')
CHANNELS = 6  # C, the inputs' width.


def _data():
  """Latents `[2, 4, 8]`, inputs `[2, 9, 6]` and a key mask `[2, 9]`."""
  rng = np.random.default_rng(21)
  z = rng.standard_normal((2, 4, 8)).astype(np.float32)
  x = rng.standard_normal((2, 9, CHANNELS)).astype(np.float32)
  mask = rng.uniform(size=(2, 9)) > 0.3
  mask[:, 0] = True
  assert not mask.all()  # The mask does exclude keys.
  return z, x, mask


def _reference_fn(heads=1, impl='einsum', dropout=0.0):
  """`(first, second, again)`: the block on z, on its own output, and on z
  once more (one module, so one weight set for all three)."""
  def fn(z, x, mask, is_training=False):
    block = attention.CrossAttendBlock(
        num_heads=heads, attention_impl=impl, dropout=dropout, name='cross')
    first = block(z, x, input_mask=mask, is_training=is_training)
    second = block(first, x, input_mask=mask, is_training=is_training)
    again = block(z, x, input_mask=mask, is_training=is_training)
    return first, second, again
  return hk.transform(fn)


def _fast_fn(absorb, heads=1, impl='einsum', dropout=0.0):
  """`_reference_fn`'s three results from `FastCrossAttendBlock`: the
  first two attend to one `keys_values(x)` (computed once and reused, as
  the encoder does for cross-attends sharing weights), the third is
  `__call__`. Each draws its dropout rng in the reference's order."""
  def fn(z, x, mask, is_training=False):
    block = fast_cross_attend.FastCrossAttendBlock(
        input_channels=CHANNELS, absorb_projections=absorb, num_heads=heads,
        attention_impl=impl, dropout=dropout, name='cross')
    keys_values = block.keys_values(x, is_training=is_training)
    first = block.attend(z, keys_values, input_mask=mask,
                         is_training=is_training)
    second = block.attend(first, keys_values, input_mask=mask,
                          is_training=is_training)
    again = block(z, x, input_mask=mask, is_training=is_training)
    return first, second, again
  return hk.transform(fn)


def _keys_values_type(absorb, *, heads, dropout, is_training):
  """The type of the block's `keys_values(x)` (traced, not compiled)."""
  _, x, _ = _data()
  f = hk.transform(lambda x: fast_cross_attend.FastCrossAttendBlock(
      input_channels=CHANNELS, absorb_projections=absorb, num_heads=heads,
      dropout=dropout, name='cross').keys_values(x, is_training=is_training))
  params = jax.eval_shape(f.init, jax.random.PRNGKey(0), x)
  return type(jax.eval_shape(f.apply, params, jax.random.PRNGKey(0), x))


def _params(seed):
  """Random parameters (every bias non-zero) of the reference block."""
  z, x, mask = _data()
  shapes = jax.eval_shape(_reference_fn().init, jax.random.PRNGKey(0), z, x,
                          mask)
  return random_params(shapes, seed=seed, scale=0.5)


@pytest.mark.parametrize('absorb', [False, True])
def test_same_parameter_names_shapes_and_initial_values(absorb):
  """Both blocks create the same parameters in the same order: one init rng
  gives the same values (the random weights are drawn in creation order;
  the key and value weights have the same shape, so a swap would show)."""
  z, x, mask = _data()
  block_fns = {
      'reference': lambda: attention.CrossAttendBlock(name='cross'),
      'fast': lambda: fast_cross_attend.FastCrossAttendBlock(
          input_channels=CHANNELS, absorb_projections=absorb, name='cross'),
  }
  inits = {
      kind: jit(hk.transform(
          lambda z, x, mask, make=make: make()(  # pylint: disable=g-long-lambda
              z, x, input_mask=mask, is_training=False)).init)(
                  jax.random.PRNGKey(3), z, x, mask)
      for kind, make in block_fns.items()}
  reference, fast = inits['reference'], inits['fast']
  assert (jax.tree.map(jnp.shape, fast) ==
          jax.tree.map(jnp.shape, reference))
  assert sorted(fast) == sorted(reference)
  jax.tree.map(np.testing.assert_array_equal, fast, reference)
  w = reference['cross/attention/key']['w']
  assert not np.array_equal(w, reference['cross/attention/value']['w'])


@pytest.mark.parametrize('impl', IMPLS)
@pytest.mark.parametrize('absorb', [False, True])
def test_paths_match_numpy_and_the_reference(absorb, impl):
  """Random weights and biases (the key bias included), a key mask: each
  path equals the numpy block and the reference block, first call, the
  second on the reused keys and values, and `__call__`."""
  z, x, mask = _data()
  params = _params(seed=22)
  assert np.abs(params['cross/attention/key']['b']).min() > 0
  first = np_cross_attend_block(params, 'cross', f64(z), f64(x), 1, mask)
  second = np_cross_attend_block(params, 'cross', first, f64(x), 1, mask)
  got = jit(_fast_fn(absorb, impl=impl).apply)(params, None, z, x, mask)
  reference = jit(_reference_fn(impl=impl).apply)(params, None, z, x, mask)
  for out, want, ref in zip(got, (first, second, first), reference):
    np.testing.assert_allclose(ref, want, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(out, want, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('variant', [
    dict(qk_channels=4, v_channels=10),  # Q/K and V widths other than C.
    dict(query_residual=False, activation='gelu'),  # Perceiver IO's.
])
@pytest.mark.parametrize('absorb', [False, True])
def test_paths_match_the_reference_in_other_perceivers_variants(absorb,
                                                                 variant):
  """The block arguments for other Perceivers' checkpoints reach every
  path: each equals the reference block built with the same arguments,
  which itself differs from the paper's block (so they do act)."""
  z, x, mask = _data()

  def transformed(make):
    return hk.transform(lambda z, x, mask: make()(
        z, x, input_mask=mask, is_training=False))

  reference = transformed(lambda: attention.CrossAttendBlock(
      name='cross', **variant))
  fast = transformed(lambda: fast_cross_attend.FastCrossAttendBlock(
      input_channels=CHANNELS, absorb_projections=absorb, name='cross',
      **variant))
  shapes = jax.eval_shape(reference.init, jax.random.PRNGKey(0), z, x, mask)
  assert (jax.eval_shape(fast.init, jax.random.PRNGKey(0), z, x, mask) ==
          shapes)
  params = random_params(shapes, seed=26, scale=0.5)
  want = jit(reference.apply)(params, None, z, x, mask)
  got = jit(fast.apply)(params, None, z, x, mask)
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
  if 'qk_channels' in variant:  # The numpy block reads widths off params.
    assert shapes['cross/attention/key']['w'].shape == (CHANNELS, 4)
    assert shapes['cross/attention/value']['w'].shape == (CHANNELS, 10)
    np.testing.assert_allclose(
        want, np_cross_attend_block(params, 'cross', f64(z), f64(x), 1, mask),
        atol=1e-4, rtol=1e-4)
  else:
    paper = jit(transformed(lambda: attention.CrossAttendBlock(
        name='cross')).apply)(params, None, z, x, mask)
    assert np.abs(np.asarray(paper) - np.asarray(want)).max() > 1e-2


@pytest.mark.parametrize('absorb', [False, True])
def test_paths_have_the_reference_gradients(absorb):
  z, x, mask = _data()
  params = _params(seed=23)
  weights = np.random.default_rng(24).standard_normal((2, 4, 8))

  def grad(f):
    return jit(jax.grad(lambda p: sum(
        jnp.sum(out * weights) for out in f.apply(p, None, z, x, mask))))(
            params)

  reference = grad(_reference_fn())
  fast = grad(_fast_fn(absorb))
  assert sorted(fast) == sorted(params)
  for module in params:
    for name in params[module]:
      np.testing.assert_allclose(fast[module][name], reference[module][name],
                                 atol=2e-4, rtol=2e-4,
                                 err_msg=f'{module}/{name}')
      # Every other parameter gets a gradient (so the check is not vacuous).
      if (module, name) != ('cross/attention/key', 'b'):
        assert np.abs(reference[module][name]).max() > 1e-3, (module, name)
  # The softmax cancels the key bias, so its gradient is zero in both.
  np.testing.assert_allclose(reference['cross/attention/key']['b'], 0.0,
                             atol=1e-4)


def _input_projections(f, params, z, x, mask):
  """Matmuls of the `[B * M, C]` input rows with a `[C, C]` weight."""
  jaxpr = jax.make_jaxpr(lambda p: f.apply(p, None, z, x, mask))(params)
  return sum(eqn.primitive.name == 'dot_general' and
             eqn.invars[0].aval.shape == (x.shape[0] * x.shape[1], CHANNELS)
             and eqn.invars[1].aval.shape == (CHANNELS, CHANNELS)
             for eqn in jaxpr.jaxpr.eqns)


def test_keys_values_are_projected_once_per_keys_values_call():
  """The reference projects the inputs on every call (2 matmuls, K and V,
  times 3 calls); the fast block once per `keys_values` (the reused one and
  the one inside `__call__`); with absorbed projections, never."""
  z, x, mask = _data()
  params = _params(seed=0)
  assert _input_projections(_reference_fn(), params, z, x, mask) == 6
  assert _input_projections(_fast_fn(False), params, z, x, mask) == 4
  assert _input_projections(_fast_fn(True), params, z, x, mask) == 0


def test_absorbed_projections_compute_no_input_sized_gradient():
  """The gradient with respect to the parameters produces no `[B, M, C]`
  array by a matmul: the inputs' LayerNorm output, keys and values have no
  gradient to compute when the LayerNorm's scale and offset act on the
  query side. The projected paths compute several (d keys, d values, d of
  the LayerNorm output)."""
  z, x, mask = _data()
  params = _params(seed=0)
  input_size = x.size  # 2 * 9 * 6 = 108, no other array of the block's.

  def input_sized_matmuls(f):
    loss = lambda p: sum(jnp.sum(out) for out in f.apply(p, None, z, x, mask))
    jaxpr = jax.make_jaxpr(jax.grad(loss))(params)
    return sum(eqn.primitive.name == 'dot_general' and
               eqn.outvars[0].aval.size == input_size
               for eqn in jaxpr.jaxpr.eqns)

  assert input_sized_matmuls(_reference_fn()) >= 4
  assert input_sized_matmuls(_fast_fn(False)) >= 4
  assert input_sized_matmuls(_fast_fn(True)) == 0


@pytest.mark.parametrize('heads, dropout, is_training, absorbed', [
    (1, 0.0, False, True),
    (1, 0.0, True, True),
    (1, 0.5, False, True),  # Evaluation: dropout is off.
    (1, 0.5, True, False),  # Dropped weights' rows no longer sum to 1.
    (2, 0.0, False, False),  # Absorbed queries would be C wide per head.
])
def test_when_projections_are_absorbed(heads, dropout, is_training,
                                       absorbed):
  assert fast_cross_attend.absorbs_projections(
      num_heads=heads, absorb_projections=True, dropout=dropout,
      is_training=is_training) == absorbed
  assert not fast_cross_attend.absorbs_projections(
      num_heads=heads, absorb_projections=False, dropout=dropout,
      is_training=is_training)
  # The block follows it: unprojected inputs exactly when it absorbs.
  for absorb in (True, False):
    got = _keys_values_type(absorb, heads=heads, dropout=dropout,
                            is_training=is_training)
    want = (fast_cross_attend.UnprojectedKeysValues if absorb and absorbed
            else fast_cross_attend.KeysValues)
    assert got is want, (absorb, got)


@pytest.mark.parametrize('heads, dropout', [(1, 0.5), (2, 0.0)])
def test_absorb_on_without_absorbing_is_the_reference(heads, dropout):
  """Training with dropout on the weights, or two heads: the block with
  `absorb_projections` projects K and V as the reference does, and gives
  its outputs for the same rng (so dropout draws the same masks)."""
  z, x, mask = _data()
  shapes = jax.eval_shape(_reference_fn(heads=heads).init,
                          jax.random.PRNGKey(0), z, x, mask)
  params = random_params(shapes, seed=25, scale=0.5)
  rng = jax.random.PRNGKey(4)
  run = lambda f, is_training: jit(f.apply, static_argnums=5)(
      params, rng, z, x, mask, is_training)
  reference = _reference_fn(heads=heads, dropout=dropout)
  fast = _fast_fn(True, heads=heads, dropout=dropout)
  got, want = run(fast, True), run(reference, True)
  for out, ref in zip(got, want):
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)
  if dropout:  # Dropout did act, so equal outputs mean equal masks.
    evaluation = run(reference, False)
    assert np.abs(want[0] - evaluation[0]).max() > 1e-2


def test_absorb_cross_attend_projections_must_be_a_bool():
  for name in ('absorb_cross_attend_projections', 'reuse_shared_keys_values'):
    for value in ('yes', 1, None):
      with pytest.raises(ValueError,
                         match=f'{name} must be a bool, got {value!r}'):
        encoder_config.EncoderConfig(**{name: value})
