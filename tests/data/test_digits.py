"""The embedded digits dataset: splits, batches and the shift augmentation."""

import itertools

import numpy as np
import pytest
from sklearn import datasets as sk_datasets

from configs import digits as digits_config
from perceiver_jax.data import digits


def _data_config(**overrides):
  config = digits_config.get_config().data
  config.update(overrides)
  return config


def test_splits_are_stratified_and_cover_every_image_once():
  config = _data_config()
  assert digits.num_examples('train', config) == 1437
  assert digits.num_examples('test', config) == 360
  reference = sk_datasets.load_digits()
  seen = []
  for split in ('train', 'test'):
    batches = list(digits.load(split, is_training=False, batch_dims=[100],
                               config=config))
    assert batches[-1]['mask'].sum() == (37 if split == 'train' else 60)
    for b in batches:
      assert b['image'].shape == (100, 8, 8, 1)
      real = b['mask'] > 0
      seen.extend(zip(b['image'][real].reshape(-1, 64).tolist(),
                      b['label'][real].tolist()))
    labels = np.concatenate([b['label'][b['mask'] > 0] for b in batches])
    # Stratified: every class holds its share of the split, to one image.
    counts = np.bincount(labels, minlength=10)
    full = np.bincount(reference.target, minlength=10) / len(reference.target)
    assert np.abs(counts - full * len(labels)).max() <= 1.0
  expected = sorted(zip((reference.images.reshape(-1, 64) / 16).tolist(),
                        reference.target.tolist()))
  assert sorted(seen) == expected


def test_unknown_split_is_named():
  with pytest.raises(ValueError, match="Unknown digits split 'validation'"):
    digits.num_examples('validation', _data_config())


def test_random_shift_matches_hand_shifted_images():
  images = np.arange(2 * 4 * 5, dtype=np.float32).reshape(2, 4, 5, 1) + 1

  class FixedOffsets:
    """A generator stand-in that returns chosen offsets."""

    def integers(self, low, high, size):
      assert (low, high, size) == (-2, 3, (2, 2))
      return np.array([[1, -2], [0, 2]])  # dy = (1, -2), dx = (0, 2).

  shifted = digits.random_shift(images, FixedOffsets(), 2)
  expected = np.zeros_like(images)
  expected[0, 1:, :] = images[0, :-1, :]          # Down by 1.
  expected[1, :-2, 2:] = images[1, 2:, :-2]       # Up by 2, right by 2.
  np.testing.assert_array_equal(shifted, expected)
  np.testing.assert_array_equal(
      digits.random_shift(images, np.random.default_rng(0), 0), images)
  with pytest.raises(ValueError, match='max_shift must be >= 0'):
    digits.random_shift(images, np.random.default_rng(0), -1)


def test_training_batches_are_shifted_only_when_asked_and_resume():
  plain = next(digits.load('train', is_training=True, batch_dims=[2, 32],
                           config=_data_config(max_shift=0)))
  make = lambda start=0: digits.load(
      'train', is_training=True, batch_dims=[2, 32],
      config=_data_config(max_shift=1), start_step=start)
  shifted = list(itertools.islice(make(), 3))
  # Same examples in the same order; some moved, and none changed more
  # than a one-pixel move can explain (the ink is only ever displaced).
  np.testing.assert_array_equal(plain['label'], shifted[0]['label'])
  assert not np.array_equal(plain['image'], shifted[0]['image'])
  assert (shifted[0]['image'].sum(axis=(2, 3, 4)) <=
          plain['image'].sum(axis=(2, 3, 4)) + 1e-4).all()
  np.testing.assert_array_equal(next(make(start=2))['image'],
                                shifted[2]['image'])
