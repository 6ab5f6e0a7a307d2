"""Tests of the ConvNet baseline and its selection in the factory."""

import haiku as hk
import jax
import numpy as np
import pytest

from configs import digits_ablations
from perceiver_jax.model import convnet
from perceiver_jax.model import factory
from perceiver_jax.model import inputs as model_inputs


def _config(**overrides):
  config = digits_ablations.get_config('study=permutation')
  config.model.architecture = 'convnet'
  config.model.input.update(overrides)
  return config


def test_parameter_count_by_hand():
  config = _config()
  forward = factory.transform_classifier(config.model, 10)
  params = jax.eval_shape(
      lambda b: forward.init(jax.random.PRNGKey(0), b, is_training=False),
      factory.example_batch(config.model.input, 2))
  # 3x3 convolutions 1->32->64->128 with biases, then Linear 128->10.
  expected = (9 * 1 * 32 + 32) + (9 * 32 * 64 + 64) + (
      9 * 64 * 128 + 128) + (128 * 10 + 10)
  assert expected == 93_962
  assert sum(x.size for x in jax.tree.leaves(params)) == expected
  assert sorted(params) == ['convnet/conv_0', 'convnet/conv_1',
                            'convnet/conv_2', 'convnet/logits']


def test_permuted_convnet_sees_the_scrambled_image():
  permuted = factory.transform_classifier(
      _config(permutation_seed=3).model, 10)
  plain = factory.transform_classifier(_config().model, 10)
  rng = np.random.default_rng(0)
  images = rng.normal(size=(2, 8, 8, 1)).astype(np.float32)
  params = plain.init(jax.random.PRNGKey(0), {'image': images},
                      is_training=False)
  perm = model_inputs.input_permutation(_config(permutation_seed=3).model.input)
  # The same scrambling done by hand, in row-major pixel order.
  scrambled = images.reshape(2, 64, 1)[:, perm].reshape(2, 8, 8, 1)
  np.testing.assert_allclose(
      permuted.apply(params, None, {'image': images}, is_training=False),
      plain.apply(params, None, {'image': scrambled}, is_training=False),
      rtol=1e-5, atol=1e-6)
  assert not np.allclose(
      permuted.apply(params, None, {'image': images}, is_training=False),
      plain.apply(params, None, {'image': images}, is_training=False))


def test_errors():
  config = _config()
  config.model.architecture = 'mlp'
  with pytest.raises(ValueError, match="architecture must be one of.*'mlp'"):
    factory.classifier_forward(config.model, 10)
  config = _config()
  config.model.input.type = 'mel'
  with pytest.raises(ValueError, match="needs a 'grid' input"):
    factory.classifier_forward(config.model, 10)
  forward = factory.transform_classifier(_config().model, 10)
  with pytest.raises(ValueError, match=r'expected \[batch, 8, 8, 1\]'):
    forward.init(jax.random.PRNGKey(0), {'image': np.zeros((2, 7, 8, 1))},
                 is_training=False)
  with pytest.raises(ValueError, match='channels must be a non-empty'):
    hk.transform(lambda x: convnet.ConvNet(10, channels=())(x)).init(
        jax.random.PRNGKey(0), np.zeros((1, 8, 8, 1)))
