"""Tests of perceiver_jax.model.position_encoding (docs/paper.md section 3)."""

import math

import haiku as hk
import jax
import numpy as np
import pytest

from perceiver_jax.model import position_encoding as pe
from tests.helpers.model_test_utils import jit

# The 3x2 grid, row-major ('ij' indexing): axis 0 takes -1, 0, 1 and axis 1
# takes -1, 1; the last axis varies fastest.
GRID_3X2 = [(-1.0, -1.0), (-1.0, 1.0), (0.0, -1.0), (0.0, 1.0), (1.0, -1.0),
            (1.0, 1.0)]


def hand_features(points, freqs0, freqs1):
  """[x0, x1, sines (axis 0 bands, then axis 1), cosines (same order)]."""
  rows = []
  for x0, x1 in points:
    sines = ([math.sin(math.pi * f * x0) for f in freqs0] +
             [math.sin(math.pi * f * x1) for f in freqs1])
    cosines = ([math.cos(math.pi * f * x0) for f in freqs0] +
               [math.cos(math.pi * f * x1) for f in freqs1])
    rows.append([x0, x1] + sines + cosines)
  return np.array(rows)


def test_grid_positions_3x2_row_major():
  np.testing.assert_array_equal(pe.grid_positions((3, 2)), GRID_3X2)
  assert pe.grid_positions((3, 2)).dtype == np.float32


def test_fourier_features_3x2_by_hand():
  # mu = (4.6, 3.4), K = 3: f = linspace(1, mu / 2, 3) per axis, written out.
  freqs0 = [1.0, 1.65, 2.3]
  freqs1 = [1.0, 1.35, 1.7]
  features = pe.fourier_grid_features((3, 2), num_bands=3,
                                      max_resolution=(4.6, 3.4))
  assert features.shape == (6, 2 * (2 * 3 + 1))
  assert features.dtype == np.float32
  np.testing.assert_allclose(features, hand_features(GRID_3X2, freqs0, freqs1),
                             atol=1e-5)
  # One row in plain numbers, the point (x0, x1) = (0, 1): sin(pi f * 0) = 0,
  # cos(pi f * 0) = 1 on axis 0.
  np.testing.assert_allclose(features[3], [
      0.0, 1.0,
      0.0, 0.0, 0.0,
      math.sin(math.pi), math.sin(1.35 * math.pi), math.sin(1.7 * math.pi),
      1.0, 1.0, 1.0,
      math.cos(math.pi), math.cos(1.35 * math.pi), math.cos(1.7 * math.pi),
  ], atol=1e-5)


def test_fourier_features_default_resolution_is_the_grid():
  # mu = (3, 2): axis 0 bands linspace(1, 1.5, 2), axis 1 linspace(1, 1, 2).
  features = pe.fourier_grid_features((3, 2), num_bands=2)
  np.testing.assert_allclose(
      features, hand_features(GRID_3X2, [1.0, 1.5], [1.0, 1.0]), atol=1e-5)


def test_fourier_features_jax_input_matches_numpy():
  rng = np.random.default_rng(0)
  points = rng.uniform(-1, 1, (5, 7, 3)).astype(np.float32)
  expected = pe.fourier_features(points, 4, (10.0, 20.0, 30.0))
  assert isinstance(expected, np.ndarray)
  got = jit(lambda p: pe.fourier_features(p, 4, (10.0, 20.0, 30.0)))(points)
  assert isinstance(got, jax.Array) and got.shape == (5, 7, 3 * 9)
  np.testing.assert_allclose(got, expected, atol=1e-5)


def test_imagenet_fourier_features():
  """224x224, K = 64, mu = 224: 258 channels; spot-check one value."""
  assert pe.num_fourier_channels(2, 64) == 258
  features = pe.fourier_grid_features((224, 224), 64)
  assert features.shape == (224 * 224, 258)
  row, col, band = 10, 200, 5
  x1 = -1.0 + 2.0 * col / 223
  freq = 1.0 + band * (112.0 - 1.0) / 63
  point = features[row * 224 + col]
  assert point[1] == pytest.approx(x1, abs=1e-6)
  # Channel 2 + 64 + band: the sines of axis 1 follow the 64 of axis 0.
  assert point[2 + 64 + band] == pytest.approx(
      math.sin(math.pi * freq * x1), abs=1e-4)
  assert point[2 + 128 + 64 + band] == pytest.approx(
      math.cos(math.pi * freq * x1), abs=1e-4)


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_bands=0), 'num_bands.*0'),
    (dict(num_bands=2.0), 'num_bands.*2.0'),
    (dict(max_resolution=(4.0,)), r'max_resolution \(4.0,\)'),
    (dict(max_resolution=(4.0, 1.0)), r'at least 2.*\(4.0, 1.0\)'),
    (dict(max_resolution=(4.0, float('nan'))), 'nan'),
])
def test_fourier_features_reject_bad_arguments(kwargs, match):
  args = dict(num_bands=2, max_resolution=(4.0, 4.0))
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    pe.fourier_features(pe.grid_positions((3, 2)), **args)


@pytest.mark.parametrize('index_dims', [(), (3, 0), (-2,), (2.5, 3)])
def test_grid_rejects_bad_index_dims(index_dims):
  with pytest.raises(ValueError, match='index_dims'):
    pe.grid_positions(index_dims)
  with pytest.raises(ValueError, match='index_dims'):
    pe.fourier_grid_features(index_dims, 2)


def test_permutation_is_fixed_by_its_seed():
  perm = pe.permutation(50, seed=3)
  np.testing.assert_array_equal(np.sort(perm), np.arange(50))
  np.testing.assert_array_equal(perm, pe.permutation(50, seed=3))
  assert (perm != np.arange(50)).any()
  assert (perm != pe.permutation(50, seed=4)).any()
  with pytest.raises(ValueError, match='0'):
    pe.permutation(0, seed=0)


def test_learned_positions():
  f = hk.transform(lambda: pe.LearnedPositions(256, 64, init_scale=0.5,
                                               name='pos')(3))
  params = jit(f.init)(jax.random.PRNGKey(0))
  table = np.asarray(params['pos']['pos_embs'])
  assert table.shape == (256, 64)
  # Haiku's TruncatedNormal(0.5): a normal of stddev 0.5 cut at two of its
  # standard deviations, whose own standard deviation is 0.5 * 0.8796.
  assert abs(table.std() - 0.5 * 0.87962566) < 0.5 * 0.03
  assert np.abs(table).max() <= 2 * 0.5 + 1e-6
  assert np.abs(table).max() > 0.9
  out = f.apply(params, None)
  assert out.shape == (3, 256, 64)
  for b in range(3):
    np.testing.assert_array_equal(out[b], table)


@pytest.mark.parametrize('args, match', [
    ((0, 8, 1.0), 'num_positions=0'),
    ((4, 0, 1.0), 'num_channels=0'),
    ((4, 8, float('nan')), 'nan'),
    ((4, 8, 0.0), 'init_scale'),
])
def test_learned_positions_reject_bad_arguments(args, match):
  f = hk.transform(lambda: pe.LearnedPositions(*args)(1))
  with pytest.raises(ValueError, match=match):
    jax.eval_shape(f.init, jax.random.PRNGKey(0))
