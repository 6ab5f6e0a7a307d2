"""Tests of the image augmentations (perceiver_jax/data/augment.py).

Golden values come from PIL (ImageOps / ImageEnhance implement the
RandAugment colour ops), from numpy index arithmetic for the geometric ops,
and from hand calculation for the crops.
"""

import numpy as np
from PIL import Image, ImageEnhance, ImageOps
import pytest
import tensorflow as tf

from perceiver_jax.data import augment
from perceiver_jax.data import pipeline
from tests.helpers import jpeg_fixtures

pipeline.hide_gpus_from_tf()


def _seed(i):
  return tf.constant([7, i], tf.int64)


@pytest.fixture(scope='module')
def photo_jpeg():
  return jpeg_fixtures.encode_jpeg(jpeg_fixtures.photos()[0])


@pytest.fixture(scope='module')
def test_image():
  """A uint8 [40, 48, 3] patch of a real photo, with its full value range."""
  return jpeg_fixtures.photos()[1][200:240, 300:348].copy()


def _op(image, name, level):
  return augment.apply_randaugment_op(tf.constant(image), name,
                                      tf.constant(level, tf.float32)).numpy()


def test_random_crop_area_aspect_and_variation(photo_jpeg):
  shapes = []
  for i in range(30):
    crop = augment.decode_and_random_crop(photo_jpeg, _seed(i)).numpy()
    assert crop.dtype == np.uint8 and crop.shape[2] == 3
    h, w = crop.shape[:2]
    shapes.append((h, w))
    if (h, w) != (427, 640):  # (the whole image is the fallback)
      assert 0.08 - 0.01 <= h * w / (427 * 640) <= 1.0
      assert 3 / 4 - 0.02 <= w / h <= 4 / 3 + 0.02
  assert len(set(shapes)) > 20
  again = augment.decode_and_random_crop(photo_jpeg, _seed(3)).numpy()
  assert again.shape[:2] == shapes[3]


def test_random_crop_is_a_window_of_the_full_image():
  image = jpeg_fixtures.sample_images(1)[0][:60, :80]
  jpeg = jpeg_fixtures.encode_jpeg(image)
  full = tf.io.decode_jpeg(jpeg, channels=3).numpy()
  crop = augment.decode_and_random_crop(jpeg, _seed(1)).numpy()
  h, w = crop.shape[:2]
  matches = [(y, x) for y in range(61 - h) for x in range(81 - w)
             if np.array_equal(full[y:y + h, x:x + w], crop)]
  assert matches


@pytest.mark.parametrize('image_shape,window', [
    # scale = 0.875 * min(427 / 32, 640 / 32); side round(373.625) = 374.
    ((32, 32), (26, 133, 374, 374)),
    # scale = 0.875 * min(427 / 16, 640 / 32) = 17.5: 280 x 560.
    ((16, 32), (73, 40, 280, 560)),
])
def test_center_crop(photo_jpeg, image_shape, window):
  got = augment.center_crop_window(tf.constant([427, 640, 3]), image_shape,
                                   224 / 256).numpy()
  np.testing.assert_array_equal(got, window)
  crop = augment.decode_and_center_crop(
      photo_jpeg, image_shape=image_shape, crop_fraction=224 / 256).numpy()
  top, left, h, w = window
  full = tf.io.decode_jpeg(photo_jpeg, channels=3).numpy()
  expected = full[top:top + h, left:left + w]
  assert crop.shape == expected.shape
  # Decoding a window upsamples chroma without the pixels beyond the
  # window, so its border pixels may differ slightly from a full decode.
  np.testing.assert_array_equal(crop[1:-1, 1:-1], expected[1:-1, 1:-1])
  assert np.abs(crop.astype(int) - expected.astype(int)).max() <= 8


def test_eval_image_deterministic_shape_and_range(photo_jpeg):
  first = augment.eval_image(photo_jpeg, image_shape=(24, 32),
                             crop_fraction=0.875).numpy()
  second = augment.eval_image(photo_jpeg, image_shape=(24, 32),
                              crop_fraction=0.875).numpy()
  assert first.shape == (24, 32, 3) and first.dtype == np.float32
  np.testing.assert_array_equal(first, second)
  assert first.min() >= -0.485 / 0.229 - 1e-5
  assert first.max() <= (1 - 0.406) / 0.225 + 1e-5
  with pytest.raises(ValueError, match='crop_fraction'):
    augment.eval_image(photo_jpeg, image_shape=(24, 32), crop_fraction=1.5)


def test_normalize_golden():
  pixels = tf.constant([[0, 0, 0], [255, 255, 255], [124, 116, 104]],
                       tf.uint8)
  got = augment.normalize(pixels).numpy()
  expected = np.array([
      [-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225],
      [0.515 / 0.229, 0.544 / 0.224, 0.594 / 0.225],
      [(124 - 123.675) / 58.395, (116 - 116.28) / 57.12,
       (104 - 103.53) / 57.375]])
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_resize_and_flip(test_image):
  resized = augment.resize(tf.constant(test_image), (20, 24)).numpy()
  assert resized.shape == (20, 24, 3) and resized.dtype == np.uint8
  flips = [augment.random_flip(tf.constant(test_image), _seed(i)).numpy()
           for i in range(20)]
  flipped = [np.array_equal(f, test_image[:, ::-1]) for f in flips]
  kept = [np.array_equal(f, test_image) for f in flips]
  assert all(a or b for a, b in zip(flipped, kept))
  assert 3 <= sum(flipped) <= 17


def test_train_crop_and_augment(photo_jpeg):
  crops = [augment.train_crop(photo_jpeg, _seed(i), image_shape=(32, 32))
           for i in range(3)]
  for crop in crops:
    assert crop.shape == (32, 32, 3) and crop.dtype == tf.uint8
  assert not np.array_equal(crops[0].numpy(), crops[1].numpy())
  out = augment.train_augment(crops[0], _seed(0), randaugment_layers=4,
                              randaugment_magnitude=5).numpy()
  again = augment.train_augment(crops[0], _seed(0), randaugment_layers=4,
                                randaugment_magnitude=5).numpy()
  assert out.dtype == np.float32 and out.shape == (32, 32, 3)
  np.testing.assert_array_equal(out, again)
  assert out.min() >= -2.12 and out.max() <= 2.65


# RandAugment ops against PIL.

@pytest.mark.parametrize('level,threshold', [(0.5, 128), (0.25, 192)])
def test_solarize_matches_pil(test_image, level, threshold):
  expected = np.asarray(ImageOps.solarize(Image.fromarray(test_image),
                                          threshold))
  np.testing.assert_array_equal(_op(test_image, 'solarize', level), expected)


@pytest.mark.parametrize('level,bits', [(0.5, 6), (1.0, 4), (0.0, 8)])
def test_posterize_matches_pil(test_image, level, bits):
  expected = np.asarray(ImageOps.posterize(Image.fromarray(test_image), bits))
  np.testing.assert_array_equal(_op(test_image, 'posterize', level),
                                expected)


def test_equalize_matches_pil(test_image):
  expected = np.asarray(ImageOps.equalize(Image.fromarray(test_image)))
  np.testing.assert_array_equal(_op(test_image, 'equalize', 0.5), expected)
  flat = np.full((8, 8, 3), 77, np.uint8)
  np.testing.assert_array_equal(_op(flat, 'equalize', 0.5), flat)


def test_auto_contrast_matches_pil(test_image):
  expected = np.asarray(ImageOps.autocontrast(Image.fromarray(test_image)))
  got = _op(test_image, 'auto_contrast', 0.5)
  # PIL truncates where we round.
  assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
  low = test_image // 4 + 50
  stretched = _op(low, 'auto_contrast', 0.5)
  assert stretched.min() == 0 and stretched.max() == 255


@pytest.mark.parametrize('name,enhancer', [
    ('color', ImageEnhance.Color), ('contrast', ImageEnhance.Contrast),
    ('brightness', ImageEnhance.Brightness),
    ('sharpness', ImageEnhance.Sharpness)])
@pytest.mark.parametrize('level', [0.5, -0.5])
def test_enhance_ops_match_pil(test_image, name, enhancer, level):
  factor = 1.0 + 0.9 * level
  expected = np.asarray(enhancer(Image.fromarray(test_image)).enhance(factor))
  got = _op(test_image, name, level)
  # PIL uses integer luma, an integer mean and truncation.
  diff = np.abs(got.astype(int) - expected.astype(int))
  assert diff.max() <= 2, (name, diff.max())
  assert diff.mean() < 0.7


# Geometric ops against numpy index arithmetic.

def _square_image():
  return jpeg_fixtures.photos()[0][100:121, 200:221].copy()  # 21 x 21


def test_translate_x_golden():
  image = _square_image()
  # 0.45 * level * 21 = 7 pixels: output column x shows input column x + 7.
  got = _op(image, 'translate_x', 7 / (0.45 * 21))
  expected = np.full_like(image, 128)
  expected[:, :14] = image[:, 7:]
  np.testing.assert_array_equal(got, expected)


def test_translate_y_golden():
  image = _square_image()
  got = _op(image, 'translate_y', -7 / (0.45 * 21))
  expected = np.full_like(image, 128)
  expected[7:] = image[:14]
  np.testing.assert_array_equal(got, expected)


def test_rotate_golden():
  image = _square_image()
  # 30 * 3 = 90 degrees about the centre pixel.
  got = _op(image, 'rotate', 3.0)
  assert np.abs(got.astype(int) - np.rot90(image).astype(int)).max() <= 1


def test_shear_x_golden():
  image = _square_image()
  # Shear 0.3 * level = 1 about row 10: out[y, x] = in[y, x + y - 10].
  got = _op(image, 'shear_x', 1 / 0.3)
  expected = np.full_like(image, 128)
  for y in range(21):
    for x in range(21):
      if 0 <= x + y - 10 < 21:
        expected[y, x] = image[y, x + y - 10]
  assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_shear_y_golden():
  image = _square_image()
  got = _op(image, 'shear_y', -1 / 0.3)
  expected = np.full_like(image, 128)
  for y in range(21):
    for x in range(21):
      if 0 <= y - (x - 10) < 21:
        expected[y, x] = image[y - (x - 10), x]
  assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_identity_and_unknown_op(test_image):
  np.testing.assert_array_equal(_op(test_image, 'identity', 0.5), test_image)
  with pytest.raises(ValueError, match='Unknown RandAugment op'):
    _op(test_image, 'blur', 0.5)


def test_rand_augment_is_seeded_and_varies(test_image):
  image = tf.constant(test_image)
  outs = [augment.rand_augment(image, _seed(i), num_layers=4,
                               magnitude=5).numpy() for i in range(6)]
  for out in outs:
    assert out.shape == test_image.shape and out.dtype == np.uint8
  distinct = {out.tobytes() for out in outs}
  assert len(distinct) >= 5
  np.testing.assert_array_equal(
      outs[2], augment.rand_augment(image, _seed(2), num_layers=4,
                                    magnitude=5).numpy())
  np.testing.assert_array_equal(
      augment.rand_augment(image, _seed(0), num_layers=0,
                           magnitude=5).numpy(), test_image)


@pytest.mark.parametrize('kwargs,match', [
    (dict(num_layers=-1, magnitude=5), 'num_layers'),
    (dict(num_layers=2.0, magnitude=5), 'num_layers'),
    (dict(num_layers=2, magnitude=11), 'magnitude')])
def test_rand_augment_bad_args(test_image, kwargs, match):
  with pytest.raises(ValueError, match=match):
    augment.rand_augment(tf.constant(test_image), _seed(0), **kwargs)


# MixUp and CutMix.

def _constant_batch(batch_size, height=16, width=12):
  """Example i is the constant image 10 * (i + 1) with label i."""
  values = 10.0 * (np.arange(batch_size) + 1)
  images = np.broadcast_to(values[:, None, None, None],
                           (batch_size, height, width, 3)).astype(np.float32)
  return tf.constant(images), tf.range(batch_size)


def test_mix_batch_labels_match_pixels():
  batch_size = 64
  images, labels = _constant_batch(batch_size)
  mixed, soft = augment.mix_batch(images, labels, _seed(0),
                                  num_classes=batch_size, mixup_alpha=0.2,
                                  cutmix_alpha=1.0)
  mixed, soft = mixed.numpy(), soft.numpy()
  assert mixed.shape == (batch_size, 16, 12, 3) and soft.dtype == np.float32
  np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-6)
  values = 10.0 * (np.arange(batch_size) + 1)
  clipped = 0
  for i in range(batch_size):
    j = (i + 1) % batch_size
    own, partner = values[i], values[j]
    # Label weights sit on the example's and its partner's classes only.
    assert soft[i].sum() - soft[i, i] - soft[i, j] < 1e-6
    if i < batch_size // 2:  # MixUp: every pixel lam * own + (1-lam) * other.
      lam = (mixed[i, 0, 0, 0] - partner) / (own - partner)
      np.testing.assert_allclose(mixed[i], mixed[i, 0, 0, 0], rtol=1e-6)
      np.testing.assert_allclose(soft[i, i], lam, atol=1e-5)
    else:  # CutMix: the partner's pixel fraction is its label weight.
      from_partner = np.isclose(mixed[i, ..., 0], partner)
      from_own = np.isclose(mixed[i, ..., 0], own)
      assert np.all(from_partner | from_own)
      np.testing.assert_allclose(soft[i, j], from_partner.mean(), atol=1e-6)
      rows = np.flatnonzero(from_partner.any(axis=1))
      cols = np.flatnonzero(from_partner.any(axis=0))
      if rows.size and (rows[0] == 0 or rows[-1] == 15 or cols[0] == 0
                        or cols[-1] == 11):
        clipped += 1
  # Boxes often reach the border (where clipping changes lam).
  assert clipped > 0


@pytest.mark.parametrize('mixup_alpha,cutmix_alpha', [(0.2, 0.0),
                                                      (0.0, 1.0)])
def test_mix_batch_single_method(mixup_alpha, cutmix_alpha):
  images, labels = _constant_batch(8)
  mixed, soft = augment.mix_batch(images, labels, _seed(1), num_classes=10,
                                  mixup_alpha=mixup_alpha,
                                  cutmix_alpha=cutmix_alpha)
  mixed, soft = mixed.numpy(), soft.numpy()
  assert soft.shape == (8, 10)
  np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-6)
  values = 10.0 * (np.arange(8) + 1)
  for i in range(8):
    own, partner = values[i], values[(i + 1) % 8]
    is_cutmix = np.all(np.isclose(mixed[i], own) | np.isclose(mixed[i],
                                                              partner))
    uniform = np.allclose(mixed[i], mixed[i, 0, 0, 0])
    if cutmix_alpha == 0:
      assert uniform
    else:
      assert is_cutmix


def test_mix_batch_is_seeded_and_checks_alphas():
  images, labels = _constant_batch(8)
  a = augment.mix_batch(images, labels, _seed(3), num_classes=8,
                        mixup_alpha=0.2, cutmix_alpha=1.0)
  b = augment.mix_batch(images, labels, _seed(3), num_classes=8,
                        mixup_alpha=0.2, cutmix_alpha=1.0)
  c = augment.mix_batch(images, labels, _seed(4), num_classes=8,
                        mixup_alpha=0.2, cutmix_alpha=1.0)
  np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
  assert not np.array_equal(a[1].numpy(), c[1].numpy())
  with pytest.raises(ValueError, match='mixup_alpha > 0 or cutmix_alpha'):
    augment.mix_batch(images, labels, _seed(0), num_classes=8,
                      mixup_alpha=0.0, cutmix_alpha=0.0)
  with pytest.raises(ValueError, match='>= 0'):
    augment.mix_batch(images, labels, _seed(0), num_classes=8,
                      mixup_alpha=-1.0, cutmix_alpha=0.0)
