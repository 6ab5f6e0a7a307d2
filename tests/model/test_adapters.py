"""Tests of perceiver_jax.model.adapters (grid inputs to byte arrays)."""

import math

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import digits
from perceiver_jax.model import adapters
from perceiver_jax.model import factory
from tests.helpers.model_test_utils import jit
from tests.helpers.model_test_utils import random_params


def adapt(x, **kwargs):
  """Runs a GridAdapter over `x` `[B, *grid, C_raw]`: (params, byte array)."""
  f = hk.transform(lambda x: adapters.GridAdapter(x.shape[1:-1], **kwargs)(x))
  params = f.init(jax.random.PRNGKey(0), x)
  return params, np.asarray(f.apply(params, None, x))


def hand_fourier_3x2():
  """Fourier features of the 3x2 grid, K = 2, mu = (3, 2), by hand."""
  rows = []
  for x0 in (-1.0, 0.0, 1.0):
    for x1 in (-1.0, 1.0):  # Row-major: the last axis varies fastest.
      angles = [math.pi * 1.0 * x0, math.pi * 1.5 * x0,
                math.pi * 1.0 * x1, math.pi * 1.0 * x1]
      rows.append([x0, x1] + [math.sin(a) for a in angles] +
                  [math.cos(a) for a in angles])
  return np.array(rows)


def image(shape=(2, 3, 2, 3), seed=0):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_fourier_features_are_concatenated_after_the_raw_channels():
  x = image()
  params, out = adapt(x, num_bands=2)
  assert params == {}
  assert out.shape == (2, 6, 3 + 10)
  # Raw channels first, flattened row-major like the position features.
  np.testing.assert_array_equal(out[..., :3], x.reshape(2, 6, 3))
  for b in range(2):
    np.testing.assert_allclose(out[b, :, 3:], hand_fourier_3x2(), atol=1e-5)


def test_num_channels():
  f = hk.transform(lambda: (
      adapters.GridAdapter((224, 224)).num_channels(3),
      adapters.GridAdapter((8, 8), num_bands=4).num_channels(1),
      adapters.GridAdapter((5,), position_encoding='learned',
                           learned_position_channels=16).num_channels(2),
      adapters.GridAdapter((5,), position_encoding='none').num_channels(2)))
  assert f.apply({}, None) == (3 + 258, 1 + 2 * 9, 2 + 16, 2)


def test_permutation_moves_inputs_with_their_position_features():
  x = image()
  perm = np.array([4, 0, 5, 2, 1, 3])
  _, plain = adapt(x, num_bands=2)
  _, permuted = adapt(x, num_bands=2, permutation=perm)
  np.testing.assert_array_equal(permuted, plain[:, perm])
  # Position i of the output holds pixel perm[i] and that pixel's features.
  flat = x.reshape(2, 6, 3)
  for i, j in enumerate(perm):
    np.testing.assert_array_equal(permuted[:, i, :3], flat[:, j])
    np.testing.assert_allclose(permuted[:, i, 3:],
                               np.broadcast_to(hand_fourier_3x2()[j], (2, 10)),
                               atol=1e-5)


def test_learned_positions():
  x = image()
  params, out = adapt(x, position_encoding='learned',
                      learned_position_channels=5,
                      learned_position_init_scale=0.1)
  table = params['grid_adapter/learned_positions']['pos_embs']
  assert table.shape == (6, 5)
  assert 0 < np.abs(table).max() <= 0.2 + 1e-7
  assert out.shape == (2, 6, 3 + 5)
  np.testing.assert_array_equal(out[..., :3], x.reshape(2, 6, 3))
  np.testing.assert_array_equal(out[0, :, 3:], table)
  np.testing.assert_array_equal(out[1, :, 3:], table)


def test_no_position_encoding():
  x = image()
  _, out = adapt(x, position_encoding='none')
  np.testing.assert_array_equal(out, x.reshape(2, 6, 3))


@pytest.mark.parametrize('permutation, match', [
    (np.array([0, 1, 2, 3, 4]), r'range\(6\).*shape \(5,\)'),
    (np.array([0, 1, 2, 3, 4, 4]), r'range\(6\).*shape \(6,\)'),
    (np.array([[0, 1, 2], [3, 4, 5]]), r'shape \(2, 3\)'),
    (np.array([0., 1., 2., 3., 4., 5.]), 'float64'),
    (np.array([5, 4, 3, 2, 1, 6]), r'range\(6\)'),
])
def test_bad_permutations_raise(permutation, match):
  with pytest.raises(ValueError, match=match):
    adapt(image(), num_bands=2, permutation=permutation)


def test_boolean_permutation_raises():
  # On a grid of 2, [True, False] sorts to [0, 1] but would act as a mask.
  f = hk.transform(lambda: adapters.GridAdapter(
      (2,), num_bands=1, permutation=np.array([True, False])))
  with pytest.raises(ValueError, match='bool'):
    f.init(None)


@pytest.mark.parametrize('kwargs, match', [
    (dict(position_encoding='sine'), "'sine'"),
    (dict(index_dims=(3, 0)), r'index_dims.*\(3, 0\)'),
    (dict(index_dims=(2.5, 2)), r'index_dims.*2.5'),
])
def test_bad_adapter_config_raises(kwargs, match):
  args = dict(index_dims=(3, 2), num_bands=2)
  args.update(kwargs)
  f = hk.transform(lambda: adapters.GridAdapter(**args))
  with pytest.raises(ValueError, match=match):
    f.init(None)


@pytest.mark.parametrize('shape', [(2, 2, 3, 3), (2, 6, 3), (2, 3, 2, 1, 3)])
def test_input_with_another_grid_raises(shape):
  with pytest.raises(ValueError, match=rf'\[batch, \*\[3, 2\], channels\].*'
                     rf'{re_shape(shape)}'):
    f = hk.transform(lambda x: adapters.GridAdapter((3, 2), num_bands=2)(x))
    jax.eval_shape(f.init, jax.random.PRNGKey(0),
                   jax.ShapeDtypeStruct(shape, jnp.float32))


def re_shape(shape):
  return '\\(' + ', '.join(map(str, shape)) + '\\)'


def test_permuted_pixels_with_their_features_leave_logits_unchanged():
  """The whole classifier (digits config): permutation_seed on and off."""
  plain = factory.transform_classifier(digits.get_config('runlocal').model, 10)
  model_config = digits.get_config('runlocal').model
  model_config.input.permutation_seed = 7
  permuted = factory.transform_classifier(model_config, 10)
  batch = {'image': image((2, 8, 8, 1), seed=1)}
  shapes = jax.eval_shape(lambda b: plain.init(jax.random.PRNGKey(0), b,
                                               is_training=False), batch)
  # No adapter parameters with Fourier features: the same tree either way.
  assert jax.tree.structure(shapes) == jax.tree.structure(jax.eval_shape(
      lambda b: permuted.init(jax.random.PRNGKey(0), b, is_training=False),
      batch))
  # Random values for all parameters, the zero-initialised head included,
  # so that equal logits are not trivially zero.
  params = random_params(shapes, seed=2)
  apply_plain = jit(lambda p, b: plain.apply(p, None, b, is_training=False))
  apply_permuted = jit(lambda p, b: permuted.apply(p, None, b,
                                                   is_training=False))
  logits = apply_plain(params, batch)
  assert np.abs(logits).max() > 0.1
  np.testing.assert_allclose(apply_permuted(params, batch), logits, atol=1e-5)
  # Moving pixels without their features does change the logits.
  perm = np.random.default_rng(3).permutation(64)
  shuffled = {'image': batch['image'].reshape(2, 64, 1)[:, perm].reshape(
      2, 8, 8, 1)}
  assert np.abs(apply_plain(params, shuffled) - logits).max() > 1e-3


def test_fourier_features_are_behind_an_optimization_barrier():
  """The constant features reach the program through an optimization
  barrier, so that XLA cannot constant-fold the work downstream of them
  (slow compiles at batch 1); the values are unchanged (tests above)."""
  f = hk.transform(lambda x: adapters.GridAdapter(x.shape[1:-1])(x))
  x = jnp.zeros((1, 4, 4, 3))
  params = f.init(jax.random.PRNGKey(0), x)
  hlo = jax.jit(f.apply).lower(params, None, x).as_text()
  assert 'optimization_barrier' in hlo
  learned = hk.transform(lambda x: adapters.GridAdapter(
      x.shape[1:-1], position_encoding='learned')(x))
  params = learned.init(jax.random.PRNGKey(0), x)
  assert 'optimization_barrier' not in jax.jit(learned.apply).lower(
      params, None, x).as_text()
