"""Our copy of transformers' Perceiver evaluation preprocessing against the
transformers image processor itself, on real photos."""

import io

import numpy as np
from PIL import Image
import pytest
from sklearn import datasets
import tensorflow as tf
import transformers

from perceiver_jax.data import augment
from perceiver_jax.data import transformers_preprocessing


@pytest.fixture(scope='module')
def jpegs():
  """sklearn's two sample photos (427x640) as JPEG bytes, one cropped to a
  portrait shape so that both orientations are covered."""
  photos = datasets.load_sample_images().images
  photos = [photos[0], photos[1][:, 100:400]]
  encoded = []
  for photo in photos:
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format='JPEG', quality=90)
    encoded.append(buffer.getvalue())
  return encoded


@pytest.mark.parametrize('size', [224, 64])
def test_eval_image_equals_transformers_image_processor(jpegs, size):
  processor = transformers.PerceiverImageProcessorPil(
      size={'height': size, 'width': size},
      crop_size={'height': size * 256 // 224, 'width': size * 256 // 224})
  for encoded in jpegs:
    with Image.open(io.BytesIO(encoded)) as image:
      theirs = processor(image.convert('RGB'), return_tensors='np')[
          'pixel_values'][0].transpose(1, 2, 0)  # [H, W, 3]
    ours = transformers_preprocessing.eval_image(
        tf.constant(encoded), image_shape=(size, size),
        crop_fraction=(size / (size * 256 // 224))).numpy()
    assert ours.shape == theirs.shape == (size, size, 3)
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)


def test_differs_from_our_paper_preprocessing(jpegs):
  """The two pipelines differ visibly (so the option matters)."""
  ours = augment.eval_image(tf.constant(jpegs[0]), image_shape=(224, 224),
                            crop_fraction=224 / 256).numpy()
  theirs = transformers_preprocessing.eval_image(
      tf.constant(jpegs[0]), image_shape=(224, 224),
      crop_fraction=224 / 256).numpy()
  assert np.mean(np.abs(ours - theirs)) > 0.01


def test_bad_inputs_are_named():
  with pytest.raises(ValueError, match='uint8 RGB'):
    transformers_preprocessing.eval_array(
        np.zeros((8, 8), np.uint8), image_shape=(4, 4), crop_fraction=0.5)
  with pytest.raises(ValueError, match='crop_fraction'):
    transformers_preprocessing.eval_array(
        np.zeros((8, 8, 3), np.uint8), image_shape=(4, 4), crop_fraction=0.0)
