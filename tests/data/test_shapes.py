"""Tests of perceiver_jax.data.shapes: classes, determinism, splits, API."""

import ml_collections
import numpy as np
import pytest

from perceiver_jax.data import shapes


def _config(**overrides):
  config = ml_collections.ConfigDict(dict(
      num_classes=10, num_train_examples=40, num_test_examples=23,
      num_points=128, split_seed=0, scale_range=(0.99, 1.01),
      rotation='z'))
  config.update(overrides)
  return config


def test_classes():
  assert len(shapes.CLASSES) >= 8
  assert len(set(shapes.CLASS_NAMES)) == len(shapes.CLASS_NAMES)
  for name in ('sphere', 'box', 'cylinder', 'cone', 'torus', 'capsule'):
    assert name in shapes.CLASS_NAMES


def test_generate_shapes_labels_and_normalisation():
  points, labels = shapes.generate('train', 30, num_points=200)
  assert points.shape == (30, 200, 3) and points.dtype == np.float32
  assert labels.dtype == np.int32
  np.testing.assert_array_equal(labels, np.arange(30) % 10)
  np.testing.assert_allclose(points.mean(axis=1), 0, atol=1e-5)
  np.testing.assert_allclose(np.abs(points).max(axis=(1, 2)), 1, atol=1e-6)


def test_generate_is_deterministic_and_splits_differ():
  a, _ = shapes.generate('train', 12, num_points=64, seed=3)
  b, _ = shapes.generate('train', 12, num_points=64, seed=3)
  np.testing.assert_array_equal(a, b)
  # Example i depends on (seed, split, i) only: a longer split extends it.
  longer, _ = shapes.generate('train', 15, num_points=64, seed=3)
  np.testing.assert_array_equal(longer[:12], a)
  test, _ = shapes.generate('test', 12, num_points=64, seed=3)
  other_seed, _ = shapes.generate('train', 12, num_points=64, seed=4)
  for other in (test, other_seed):
    assert all(not np.allclose(a[i], other[i]) for i in range(12))


def _radii(points):
  return np.linalg.norm(points, axis=-1)


def test_class_geometry():
  rng = np.random.default_rng(0)
  for _ in range(5):
    # A sphere stretched by at most 1.2 per axis: radii within 1.2^2.
    sphere = shapes.make_mesh(shapes.CLASS_NAMES.index('sphere'), rng)
    r = _radii(sphere.vertices - sphere.vertices.mean(axis=0))
    assert r.max() / r.min() < 1.2**2 + 1e-6
    # A torus has a hole: no surface near its centre.
    torus = shapes.make_mesh(shapes.CLASS_NAMES.index('torus'), rng)
    centred = torus.vertices - torus.vertices.mean(axis=0)
    # Inner / outer radius >= 0.55 / 1.45, or 0.26 after a 1.2 stretch.
    assert _radii(centred).min() > 0.2 * _radii(centred).max()
    # 'z' rotation keeps a cylinder upright: its axis stays vertical, so
    # its cap vertices share two z values.
    cylinder = shapes.make_mesh(shapes.CLASS_NAMES.index('cylinder'), rng)
    assert len(np.unique(np.round(cylinder.vertices[:, 2], 6))) == 2
    # 'so3' rotations tilt it.
    tilted = shapes.make_mesh(shapes.CLASS_NAMES.index('cylinder'), rng,
                              rotation='so3')
    assert len(np.unique(np.round(tilted.vertices[:, 2], 6))) > 2
  with pytest.raises(ValueError, match='label'):
    shapes.make_mesh(len(shapes.CLASSES), rng)
  with pytest.raises(ValueError, match='rotation'):
    shapes.make_mesh(0, rng, rotation='x')


def test_random_rotation_is_a_rotation():
  rotation = shapes.random_rotation(np.random.default_rng(1))
  np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
  assert np.linalg.det(rotation) == pytest.approx(1.0)


def test_num_classes_subset_and_errors():
  _, labels = shapes.generate('test', 9, num_points=16, num_classes=3)
  np.testing.assert_array_equal(labels, [0, 1, 2] * 3)
  with pytest.raises(ValueError, match='split'):
    shapes.generate('validation', 4, num_points=16)
  with pytest.raises(ValueError, match='num_classes'):
    shapes.generate('train', 4, num_points=16, num_classes=99)
  with pytest.raises(ValueError, match='splits'):
    shapes.num_examples('validation', _config())


def test_eval_visits_every_example_once_with_padding():
  config = _config()
  assert shapes.num_examples('test', config) == 23
  batches = list(shapes.load('test', is_training=False, batch_dims=[2, 5],
                             config=config))
  assert len(batches) == 3  # 23 examples in batches of 10.
  for b in batches:
    assert b['points'].shape == (2, 5, 128, 3)
    assert b['label'].shape == b['mask'].shape == (2, 5)
  mask = np.concatenate([b['mask'].reshape(-1) for b in batches])
  np.testing.assert_array_equal(mask, [1] * 23 + [0] * 7)
  labels = np.concatenate([b['label'].reshape(-1) for b in batches])[:23]
  np.testing.assert_array_equal(labels, np.arange(23) % 10)
  points = np.concatenate([b['points'].reshape(-1, 128, 3)
                           for b in batches])
  expected, _ = shapes.generate('test', 23, num_points=128)
  np.testing.assert_array_equal(points[:23], expected)  # Not augmented.
  np.testing.assert_array_equal(points[23:], 0)


def test_train_is_shuffled_augmented_and_resumable():
  config = _config()
  train = shapes.load('train', is_training=True, batch_dims=[8],
                      config=config, seed=1)
  batches = [next(train) for _ in range(10)]  # 80 draws: 2 epochs of 40.
  for b in batches:
    np.testing.assert_array_equal(b['mask'], np.ones(8))
  labels = np.concatenate([b['label'] for b in batches])
  # Each epoch holds every example once: 4 of each class per epoch.
  for epoch in (labels[:40], labels[40:]):
    np.testing.assert_array_equal(np.bincount(epoch, minlength=10),
                                  np.full(10, 4))
  assert not np.array_equal(labels[:40], labels[40:])  # Reshuffled.
  # Augmented: close to, but not equal to, a stored example.
  clean, _ = shapes.generate('train', 40, num_points=128)
  first = batches[0]['points'][0]
  distances = np.abs(clean - first).max(axis=(1, 2))
  assert 0 < distances.min() < 0.05
  resumed = next(shapes.load('train', is_training=True, batch_dims=[8],
                             config=config, seed=1, start_step=7))
  for key in ('points', 'label'):
    np.testing.assert_array_equal(resumed[key], batches[7][key])
  other = next(shapes.load('train', is_training=True, batch_dims=[8],
                           config=config, seed=2))
  assert not np.array_equal(other['points'], batches[0]['points'])
