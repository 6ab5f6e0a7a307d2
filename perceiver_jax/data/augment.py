"""Image augmentation in stateless TensorFlow ops (a `[2]` seed per call).

Stateless seeds make augmentation a pure function of (seed, example index),
which Keras's stateful RandAugment/MixUp/CutMix layers cannot give a resumed
run; their CutMix also weights labels by the unclipped box area. Here:
the Inception crop decoded from the JPEG, the central evaluation crop,
RandAugment's 14 ops (`RANDAUGMENT_OPS`), and MixUp/CutMix with labels
weighted by the pixels actually mixed.
"""

import math
from typing import Sequence

import tensorflow as tf

# ImageNet statistics of RGB values in [0, 255].
MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STDDEV_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)

# Gray fill for pixels that geometric RandAugment ops move in from outside.
_FILL = 128.0

# RandAugment's ops and what magnitude m (0..10; level = m / 10) means for
# each. "±" ops take a random sign per application. The ops are those of the
# RandAugment paper; the mappings follow the common ones (timm's
# "increasing" variants), under which every op gets stronger with m.
RANDAUGMENT_OPS = (
    ('identity', 'no change'),
    ('auto_contrast', 'stretch each channel to [0, 255] (no magnitude)'),
    ('equalize', 'histogram-equalise each channel (no magnitude)'),
    ('rotate', '± 30 * level degrees about the centre'),
    ('solarize', 'invert pixels >= 256 - 256 * level'),
    ('color', 'saturation factor 1 ± 0.9 * level'),
    ('posterize', 'keep 8 - round(4 * level) bits'),
    ('contrast', 'contrast factor 1 ± 0.9 * level'),
    ('brightness', 'brightness factor 1 ± 0.9 * level'),
    ('sharpness', 'sharpness factor 1 ± 0.9 * level'),
    ('shear_x', 'horizontal shear ± 0.3 * level about the centre'),
    ('shear_y', 'vertical shear ± 0.3 * level about the centre'),
    ('translate_x', 'shift ± 0.45 * level of the width'),
    ('translate_y', 'shift ± 0.45 * level of the height'),
)


def _check_image_shape(image_shape: Sequence[int]) -> tuple[int, int]:
  shape = tuple(image_shape)
  if len(shape) != 2 or any(not isinstance(n, int) or n < 1 for n in shape):
    raise ValueError(
        f'image_shape must be (height, width), positive ints, got '
        f'{image_shape!r}.')
  return shape


def _to_uint8(image: tf.Tensor) -> tf.Tensor:
  # Clipped first: bicubic and blends overshoot, and the cast would wrap.
  return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)


def random_crop_window(
    image_size: tf.Tensor, seed: tf.Tensor, *,
    area_range: Sequence[float] = (0.08, 1.0),
    aspect_ratio_range: Sequence[float] = (3 / 4, 4 / 3),
    max_attempts: int = 10) -> tf.Tensor:
  """[y, x, h, w] of a random Inception crop of an image of `image_size`;
  the whole image after `max_attempts` draws."""
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      image_size,
      bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
      seed=seed,
      # The area range alone decides; the box is the whole image anyway.
      min_object_covered=0.0,
      aspect_ratio_range=tuple(aspect_ratio_range),
      area_range=tuple(area_range),
      max_attempts=max_attempts,
      use_image_if_no_bounding_boxes=True)
  return tf.stack([begin[0], begin[1], size[0], size[1]])


def decode_and_random_crop(
    image_bytes: tf.Tensor, seed: tf.Tensor, *,
    area_range: tuple[float, float] = (0.08, 1.0),
    aspect_ratio_range: tuple[float, float] = (3 / 4, 4 / 3),
    max_attempts: int = 10) -> tf.Tensor:
  """uint8 `[h, w, 3]`: a `random_crop_window` of a JPEG at its resolution."""
  window = random_crop_window(
      tf.image.extract_jpeg_shape(image_bytes), seed, area_range=area_range,
      aspect_ratio_range=aspect_ratio_range, max_attempts=max_attempts)
  return tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)


def center_crop_window(image_size: tf.Tensor, image_shape: Sequence[int],
                       crop_fraction: float) -> tf.Tensor:
  """[y, x, h, w]: the largest box shaped like `image_shape`, scaled by
  `crop_fraction`."""
  out_h, out_w = _check_image_shape(image_shape)
  height = tf.cast(image_size[0], tf.float32)
  width = tf.cast(image_size[1], tf.float32)
  scale = crop_fraction * tf.minimum(height / out_h, width / out_w)
  crop_h = tf.maximum(tf.cast(tf.round(scale * out_h), tf.int32), 1)
  crop_w = tf.maximum(tf.cast(tf.round(scale * out_w), tf.int32), 1)
  crop_h = tf.minimum(crop_h, image_size[0])
  crop_w = tf.minimum(crop_w, image_size[1])
  top = (image_size[0] - crop_h) // 2
  left = (image_size[1] - crop_w) // 2
  return tf.stack([top, left, crop_h, crop_w])


def decode_and_center_crop(image_bytes: tf.Tensor, *,
                           image_shape: Sequence[int],
                           crop_fraction: float) -> tf.Tensor:
  """uint8 `[h, w, 3]`: the central crop of a JPEG (`center_crop_window`)."""
  if not 0.0 < crop_fraction <= 1.0:
    raise ValueError(f'crop_fraction must be in (0, 1], got {crop_fraction}.')
  shape = tf.image.extract_jpeg_shape(image_bytes)
  window = center_crop_window(shape, image_shape, crop_fraction)
  return tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)


def resize(image: tf.Tensor, image_shape: Sequence[int]) -> tf.Tensor:
  """Bicubic resize of `[h, w, 3]` in [0, 255] to uint8 `[H, W, 3]`."""
  image_shape = _check_image_shape(image_shape)
  return _to_uint8(tf.image.resize(image, image_shape, method='bicubic'))


def random_flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Mirrors [H, W, C] left-right with probability 1/2."""
  flip = tf.random.stateless_uniform([], seed=seed) < 0.5
  return tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)


def normalize(image: tf.Tensor) -> tf.Tensor:
  """[..., 3] values in [0, 255] -> float32 (x - mean) / stddev."""
  image = tf.cast(image, tf.float32)
  return (image - tf.constant(MEAN_RGB)) / tf.constant(STDDEV_RGB)


# RandAugment ops. Each maps (uint8 [H, W, 3], signed level) to uint8.


def _blend(degenerate: tf.Tensor, image: tf.Tensor,
           factor: tf.Tensor) -> tf.Tensor:
  """PIL ImageEnhance's rule: degenerate + factor * (image - degenerate)."""
  image = tf.cast(image, tf.float32)
  return _to_uint8(degenerate + factor * (image - degenerate))


def _grayscale(image: tf.Tensor) -> tf.Tensor:
  """Float [H, W, 1] luma of a uint8 RGB image."""
  return tf.image.rgb_to_grayscale(tf.cast(image, tf.float32))


def _sharpness(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """Blends with a smoothed copy (PIL's SMOOTH kernel; border kept)."""
  x = tf.cast(image, tf.float32)[None]
  kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]])
  kernel = tf.tile((kernel / 13.0)[:, :, None, None], [1, 1, 3, 1])
  smooth = tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], 'VALID')[0]
  interior = tf.pad(tf.ones_like(smooth, tf.bool), [[1, 1], [1, 1], [0, 0]])
  degenerate = tf.where(interior, tf.pad(smooth, [[1, 1], [1, 1], [0, 0]]),
                        x[0])
  return _blend(degenerate, image, factor)


def _solarize(image: tf.Tensor, threshold: tf.Tensor) -> tf.Tensor:
  pixels = tf.cast(image, tf.int32)
  return tf.cast(tf.where(pixels >= tf.cast(threshold, tf.int32),
                          255 - pixels, pixels), tf.uint8)


def _posterize(image: tf.Tensor, shift: tf.Tensor) -> tf.Tensor:
  shift = tf.cast(shift, tf.uint8)
  return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def _auto_contrast(image: tf.Tensor) -> tf.Tensor:
  x = tf.cast(image, tf.float32)
  low = tf.reduce_min(x, axis=[0, 1])
  high = tf.reduce_max(x, axis=[0, 1])
  scale = tf.where(high > low, 255.0 / tf.maximum(high - low, 1.0), 1.0)
  offset = tf.where(high > low, low, 0.0)
  return _to_uint8((x - offset) * scale)


def _equalize_channel(channel: tf.Tensor) -> tf.Tensor:
  """PIL's ImageOps.equalize on one int32 [H, W] channel."""
  hist = tf.math.bincount(channel, minlength=256, maxlength=256)
  last_nonzero = tf.gather(hist, tf.reduce_max(tf.where(hist > 0)))
  step = (tf.reduce_sum(hist) - last_nonzero) // 255
  safe_step = tf.maximum(step, 1)
  lut = (tf.cumsum(hist) + safe_step // 2) // safe_step
  lut = tf.clip_by_value(tf.concat([[0], lut[:-1]], 0), 0, 255)
  # A channel with (almost) one value has no histogram to spread.
  return tf.where(step > 0, tf.gather(lut, channel), channel)


def _equalize(image: tf.Tensor) -> tf.Tensor:
  pixels = tf.cast(image, tf.int32)
  channels = [_equalize_channel(pixels[:, :, c]) for c in range(3)]
  return tf.cast(tf.stack(channels, axis=-1), tf.uint8)


def _transform(image: tf.Tensor, matrix: Sequence[tf.Tensor]) -> tf.Tensor:
  """Projective warp; `matrix` maps output (x, y) to input coordinates."""
  transform = tf.cast(tf.stack(list(matrix) + [0.0, 0.0]), tf.float32)
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=tf.cast(image, tf.float32)[None], transforms=transform[None],
      output_shape=tf.shape(image)[:2], fill_value=_FILL,
      interpolation='BILINEAR', fill_mode='CONSTANT')
  return _to_uint8(out[0])


def _size(image: tf.Tensor) -> tf.Tensor:  # Float [H, W, C].
  return tf.cast(tf.shape(image), tf.float32)


def _center(image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:  # (x, y).
  size = _size(image)
  return (size[1] - 1.0) / 2.0, (size[0] - 1.0) / 2.0


def _rotate(image: tf.Tensor, degrees: tf.Tensor) -> tf.Tensor:
  cx, cy = _center(image)
  angle = degrees * math.pi / 180.0
  cos, sin = tf.cos(angle), tf.sin(angle)
  return _transform(image, [cos, -sin, cx - cos * cx + sin * cy,
                            sin, cos, cy - sin * cx - cos * cy])


# op -> f(image, signed level s, level |s|), as `RANDAUGMENT_OPS` says.
_OP_FNS = {
    'identity': lambda x, s, l: x,
    'auto_contrast': lambda x, s, l: _auto_contrast(x),
    'equalize': lambda x, s, l: _equalize(x),
    'rotate': lambda x, s, l: _rotate(x, 30.0 * s),
    'solarize': lambda x, s, l: _solarize(x, 256.0 - 256.0 * l),
    'color': lambda x, s, l: _blend(_grayscale(x), x, 1.0 + 0.9 * s),
    'posterize': lambda x, s, l: _posterize(x, tf.round(4.0 * l)),
    'contrast': lambda x, s, l: _blend(tf.reduce_mean(_grayscale(x)), x,
                                       1.0 + 0.9 * s),
    'brightness': lambda x, s, l: _blend(tf.constant(0.0), x, 1.0 + 0.9 * s),
    'sharpness': lambda x, s, l: _sharpness(x, 1.0 + 0.9 * s),
    # Shears about the centre; translations by a fraction of the size.
    'shear_x': lambda x, s, l: _transform(
        x, [1.0, 0.3 * s, -0.3 * s * _center(x)[1], 0.0, 1.0, 0.0]),
    'shear_y': lambda x, s, l: _transform(
        x, [1.0, 0.0, 0.0, 0.3 * s, 1.0, -0.3 * s * _center(x)[0]]),
    'translate_x': lambda x, s, l: _transform(
        x, [1.0, 0.0, 0.45 * s * _size(x)[1], 0.0, 1.0, 0.0]),
    'translate_y': lambda x, s, l: _transform(
        x, [1.0, 0.0, 0.0, 0.0, 1.0, 0.45 * s * _size(x)[0]]),
}


def apply_randaugment_op(image: tf.Tensor, op: str,
                         signed_level: tf.Tensor) -> tf.Tensor:
  """Applies op `op` at `signed_level` in [-1, 1] (sign for '±' ops)."""
  if op not in _OP_FNS:
    raise ValueError(f'Unknown RandAugment op {op!r}; known: '
                     f'{[name for name, _ in RANDAUGMENT_OPS]}.')
  return _OP_FNS[op](image, signed_level, tf.abs(signed_level))


def rand_augment(image: tf.Tensor, seed: tf.Tensor, *, num_layers: int,
                 magnitude: float) -> tf.Tensor:
  """RandAugment on uint8 `[H, W, 3]`: `num_layers` uniform ops at `magnitude`.

  Each drawn op applies (as in the paper; 'identity' is one of the 14), the
  directional ones with a random sign.
  """
  if isinstance(num_layers, bool) or not isinstance(num_layers, int) or (
      num_layers < 0):
    raise ValueError(
        f'num_layers must be a non-negative int, got {num_layers!r}.')
  if not 0.0 <= magnitude <= 10.0:
    raise ValueError(f'magnitude must be in [0, 10], got {magnitude!r}.')
  if num_layers == 0:
    return image
  level = magnitude / 10.0
  seeds = tf.random.experimental.stateless_split(seed, num_layers)
  names = [name for name, _ in RANDAUGMENT_OPS]

  def layer(i: tf.Tensor, image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    op_seed, sign_seed = tf.unstack(
        tf.random.experimental.stateless_split(seeds[i], 2))
    index = tf.random.stateless_uniform(
        [], seed=op_seed, minval=0, maxval=len(names), dtype=tf.int32)
    sign = tf.where(tf.random.stateless_uniform([], seed=sign_seed) < 0.5,
                    -1.0, 1.0)
    signed_level = sign * level
    branches = [
        (lambda name=name: apply_randaugment_op(image, name, signed_level))
        for name in names]
    return i + 1, tf.ensure_shape(tf.switch_case(index, branches),
                                  image.shape)

  # A loop rather than `num_layers` copies of the 14 branches: the graph
  # (and its tracing time inside tf.data) stays that of one layer.
  _, image = tf.while_loop(lambda i, _: i < num_layers, layer,
                           (tf.constant(0), image))
  return image


def _sample_beta(seed: tf.Tensor, alpha: float, size: tf.Tensor
                 ) -> tf.Tensor:
  """[size] draws from Beta(alpha, alpha) as a ratio of gamma draws."""
  seeds = tf.random.experimental.stateless_split(seed, 2)
  g1 = tf.random.stateless_gamma([size], seed=seeds[0], alpha=alpha)
  g2 = tf.random.stateless_gamma([size], seed=seeds[1], alpha=alpha)
  total = g1 + g2
  # Both draws can underflow to 0 for small alpha; any value is fine then.
  return tf.where(total > 0, g1 / tf.where(total > 0, total, 1.0), 0.5)


def cutmix_boxes(seed: tf.Tensor, batch_size: tf.Tensor, height: int,
                 width: int, alpha: float) -> tf.Tensor:
  """int32 `[batch, 4]` (top, left, bottom, right) boxes to paste.

  Side `sqrt(1 - lam)` of the image's, `lam ~ Beta(alpha, alpha)`, centred
  uniformly, then clipped (so labels weigh the clipped box, see `mix_batch`).
  """
  seeds = tf.random.experimental.stateless_split(seed, 3)
  lam = _sample_beta(seeds[0], alpha, batch_size)
  ratio = tf.sqrt(1.0 - lam)
  cut_h = tf.cast(ratio * height, tf.int32)
  cut_w = tf.cast(ratio * width, tf.int32)
  cy = tf.random.stateless_uniform([batch_size], seed=seeds[1], minval=0,
                                   maxval=height, dtype=tf.int32)
  cx = tf.random.stateless_uniform([batch_size], seed=seeds[2], minval=0,
                                   maxval=width, dtype=tf.int32)
  top = tf.clip_by_value(cy - cut_h // 2, 0, height)
  bottom = tf.clip_by_value(cy - cut_h // 2 + cut_h, 0, height)
  left = tf.clip_by_value(cx - cut_w // 2, 0, width)
  right = tf.clip_by_value(cx - cut_w // 2 + cut_w, 0, width)
  return tf.stack([top, left, bottom, right], axis=1)


def mix_batch(images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor, *,
              num_classes: int, mixup_alpha: float,
              cutmix_alpha: float) -> tuple[tf.Tensor, tf.Tensor]:
  """MixUp and CutMix within a batch `[B, H, W, C]`, with soft labels `[B, K]`.

  Example i mixes with (i + 1) mod B: the first half by MixUp, the rest by
  CutMix (all by one when the other's alpha is 0). Labels are `lam onehot(y_i)
  + (1 - lam) onehot(y_j)`, `lam` the share of x_i's pixels that remain.
  """
  if mixup_alpha < 0 or cutmix_alpha < 0:
    raise ValueError(f'mixup_alpha and cutmix_alpha must be >= 0, got '
                     f'{mixup_alpha} and {cutmix_alpha}.')
  if mixup_alpha == 0 and cutmix_alpha == 0:
    raise ValueError('mix_batch needs mixup_alpha > 0 or cutmix_alpha > 0.')
  _, height, width, _ = images.shape.as_list()
  batch_size = tf.shape(images)[0]
  one_hot = tf.one_hot(labels, num_classes, dtype=tf.float32)
  partner_images = tf.roll(images, shift=-1, axis=0)
  partner_labels = tf.roll(one_hot, shift=-1, axis=0)
  mixup_seed, cutmix_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 2))

  if cutmix_alpha == 0:
    num_mixup = batch_size
  elif mixup_alpha == 0:
    num_mixup = tf.constant(0)
  else:
    num_mixup = batch_size // 2
  use_mixup = tf.range(batch_size) < num_mixup  # [B]

  lam = tf.ones([batch_size])
  mixed = images
  if mixup_alpha > 0:
    mixup_lam = _sample_beta(mixup_seed, mixup_alpha, batch_size)
    lam = tf.where(use_mixup, mixup_lam, lam)
    w = mixup_lam[:, None, None, None]
    mixed = tf.where(use_mixup[:, None, None, None],
                     w * images + (1.0 - w) * partner_images, mixed)
  if cutmix_alpha > 0:
    boxes = cutmix_boxes(cutmix_seed, batch_size, height, width,
                         cutmix_alpha)
    top, left, bottom, right = tf.unstack(boxes[:, :, None, None], axis=1)
    rows = tf.range(height)[None, :, None]
    cols = tf.range(width)[None, None, :]
    inside = ((rows >= top) & (rows < bottom) & (cols >= left) &
              (cols < right))  # [B, H, W]
    area = tf.cast((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),
                   tf.float32)
    cutmix_lam = 1.0 - area / float(height * width)
    lam = tf.where(use_mixup, lam, cutmix_lam)
    pasted = tf.where(inside[..., None], partner_images, images)
    mixed = tf.where(use_mixup[:, None, None, None], mixed, pasted)
  lam = lam[:, None]
  mixed_labels = lam * one_hot + (1.0 - lam) * partner_labels
  return mixed, mixed_labels


def train_crop(image_bytes: tf.Tensor, seed: tf.Tensor, *,
               image_shape: Sequence[int]) -> tf.Tensor:
  """JPEG bytes -> uint8 `[H, W, 3]` random Inception crop (may fail)."""
  return resize(decode_and_random_crop(image_bytes, seed), image_shape)


def train_augment(image: tf.Tensor, seed: tf.Tensor, *,
                  randaugment_layers: int,
                  randaugment_magnitude: float) -> tf.Tensor:
  """Flip, RandAugment and normalisation: uint8 -> float32 `[H, W, 3]`."""
  flip_seed, ra_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 2))
  image = rand_augment(random_flip(image, flip_seed), ra_seed,
                       num_layers=randaugment_layers,
                       magnitude=randaugment_magnitude)
  return normalize(image)


def eval_image(image_bytes: tf.Tensor, *, image_shape: Sequence[int],
               crop_fraction: float) -> tf.Tensor:
  """Central crop, resize, normalise: JPEG bytes -> float32 `[H, W, 3]`."""
  crop = decode_and_center_crop(image_bytes, image_shape=image_shape,
                                crop_fraction=crop_fraction)
  return normalize(resize(crop, image_shape))
