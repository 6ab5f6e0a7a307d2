"""The evaluation preprocessing of transformers' Perceiver image processor.

The released Perceiver IO classifiers evaluate on the central square of
side `int(crop_fraction * min(h, w))`, resized with PIL's bicubic filter on
uint8 values, scaled to [0, 1] and normalised with ImageNet's mean and
stddev. Ours (`augment.eval_image`) resizes with TensorFlow's kernel, which
differs slightly, so imported checkpoints use this one
(`config.data.eval_preprocessing='transformers'`). JPEGs decode with PIL.
"""

import io
from typing import Sequence

import numpy as np
from PIL import Image
import tensorflow as tf

MEAN = (0.485, 0.456, 0.406)
STDDEV = (0.229, 0.224, 0.225)


def eval_array(image: np.ndarray, *, image_shape: Sequence[int],
               crop_fraction: float) -> np.ndarray:
  """Preprocesses one uint8 image `[h, w, 3]` to float32 `[H, W, 3]`."""
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    raise ValueError(f'expected a uint8 RGB image [h, w, 3], got shape '
                     f'{image.shape} and dtype {image.dtype}.')
  if not 0.0 < crop_fraction <= 1.0:
    raise ValueError(f'crop_fraction must be in (0, 1], got {crop_fraction}.')
  height, width = image.shape[:2]
  side = int(crop_fraction * min(height, width))
  if side < 1:
    raise ValueError(f'an image of {height}x{width} pixels has no central '
                     f'crop at fraction {crop_fraction}.')
  top = (height - side) // 2
  left = (width - side) // 2
  crop = image[top:top + side, left:left + side]
  out_height, out_width = (int(n) for n in image_shape)
  resized = Image.fromarray(crop).resize((out_width, out_height),
                                         resample=Image.Resampling.BICUBIC)
  scaled = np.asarray(resized, np.float64) / 255.0
  return ((scaled - MEAN) / STDDEV).astype(np.float32)


def eval_image(image_bytes: tf.Tensor, *, image_shape: Sequence[int],
               crop_fraction: float) -> tf.Tensor:
  """`eval_array` of an encoded image in tf.data: float32 `[H, W, 3]`."""
  image_shape = tuple(int(n) for n in image_shape)

  def run(encoded) -> np.ndarray:
    # tf.numpy_function hands a string tensor over as a 0-d numpy array.
    encoded = encoded.item() if isinstance(encoded, np.ndarray) else encoded
    with Image.open(io.BytesIO(encoded)) as image:  # Any PIL-readable image.
      rgb = np.asarray(image.convert('RGB'))
    return eval_array(rgb, image_shape=image_shape,
                      crop_fraction=crop_fraction)

  image = tf.numpy_function(run, [image_bytes], tf.float32, stateful=False)
  image.set_shape([*image_shape, 3])
  return image
