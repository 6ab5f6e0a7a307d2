"""The released classifiers' image preprocessors (`model/preprocessors.py`):
shapes, the conv stem's arithmetic against numpy, and its fixed statistics."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_jax.model import position_encoding as pe
from perceiver_jax.model import preprocessors
from perceiver_jax.train import optim


@pytest.mark.parametrize('size,grid', [(224, (55, 55)), (32, (7, 7)),
                                       (5, (1, 1)), (4, (0, 0))])
def test_conv_stem_grid(size, grid):
  # 224: (224 + 6 - 7) // 2 + 1 = 112 after the conv, (112 - 3) // 2 + 1 = 55.
  assert preprocessors.conv_stem_grid(size, size) == grid


def test_conv_stem_equals_numpy_and_keeps_its_statistics():
  rng = np.random.default_rng(0)
  images = rng.normal(size=(2, 9, 11, 3)).astype(np.float32)
  forward = hk.transform(lambda x: preprocessors.ConvStemAdapter(
      (9, 11, 3), out_channels=4, num_bands=2, max_resolution=(8, 8))(x))
  params = forward.init(jax.random.key(0), images)
  params = jax.tree.map(
      lambda p: jnp.asarray(rng.uniform(0.5, 1.5, p.shape), jnp.float32),
      params)
  out = np.asarray(forward.apply(params, None, images))
  # numpy: zero-pad 3, 7x7 stride-2 conv, batch norm, ReLU, 3x3/2 max pool.
  w = np.asarray(params['conv_stem_adapter/conv']['w'])  # [7, 7, 3, 4]
  bn = params['conv_stem_adapter/batch_norm']
  padded = np.pad(images, ((0, 0), (3, 3), (3, 3), (0, 0)))
  conv_h, conv_w = (9 + 6 - 7) // 2 + 1, (11 + 6 - 7) // 2 + 1
  conv = np.zeros((2, conv_h, conv_w, 4))
  for i in range(conv_h):
    for j in range(conv_w):
      patch = padded[:, 2 * i:2 * i + 7, 2 * j:2 * j + 7]
      conv[:, i, j] = np.einsum('bhwc,hwco->bo', patch, w)
  normed = ((conv - bn['mean']) / np.sqrt(bn['var'] + 1e-5) * bn['scale'] +
            bn['offset'])
  relu = np.maximum(normed, 0)
  grid = preprocessors.conv_stem_grid(9, 11)
  pooled = np.zeros((2, *grid, 4))
  for i in range(grid[0]):
    for j in range(grid[1]):
      pooled[:, i, j] = relu[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max(
          axis=(1, 2))
  fourier = pe.fourier_grid_features(grid, 2, (8, 8))
  expected = np.concatenate(
      [pooled.reshape(2, -1, 4),
       np.broadcast_to(fourier, (2, *fourier.shape))], axis=-1)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
  # The statistics get no gradient and no weight decay; scale does.
  grads = jax.grad(lambda p: jnp.sum(forward.apply(p, None, images)))(params)
  assert not np.any(grads['conv_stem_adapter/batch_norm']['mean'])
  assert not np.any(grads['conv_stem_adapter/batch_norm']['var'])
  assert np.any(grads['conv_stem_adapter/batch_norm']['scale'])
  mask = optim.weight_decay_mask(params)['conv_stem_adapter/batch_norm']
  assert not mask['mean'] and not mask['var']


def test_conv1x1_learned_shapes_and_bad_images():
  forward = hk.transform(lambda x: preprocessors.Conv1x1LearnedAdapter(
      (4, 5, 3), out_channels=6, position_channels=7,
      projected_channels=8)(x))
  images = np.ones((2, 4, 5, 3), np.float32)
  params = forward.init(jax.random.key(0), images)
  assert params['conv1x1_learned_adapter/positions']['pos_embs'].shape == (
      20, 7)
  assert forward.apply(params, None, images).shape == (2, 20, 14)
  with pytest.raises(ValueError, match=r'Expected images of shape'):
    forward.apply(params, None, np.ones((2, 5, 4, 3), np.float32))
  too_small = hk.transform(
      lambda: preprocessors.ConvStemAdapter((4, 9, 3))(None))
  with pytest.raises(ValueError, match='too small for the conv stem'):
    too_small.init(jax.random.key(0))
