"""Tests of perceiver_jax.model.factory and the configs' model sizes.

Parameter counts are derived by hand from docs/paper.md section 1 (every Linear
has a bias; LayerNorms have a scale and an offset) and computed with
`jax.eval_shape`, so nothing of ImageNet size is ever run.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import digits
from configs import imagenet
from perceiver_jax.model import factory
from perceiver_jax.model import inputs as model_inputs
from perceiver_jax.model import position_encoding as pe
from tests.helpers.model_test_utils import cross_attend_params as cross_attend
from tests.helpers.model_test_utils import linear_params as linear
from tests.helpers.model_test_utils import self_attend_params as self_attend


# ImageNet: 3 RGB channels + 2 axes * (2 * 64 bands + 1) = 261 channels.
C_IMAGENET = 3 + 2 * (2 * 64 + 1)
N, D, CLASSES = 512, 1024, 1000
LATENTS = N * D
HEAD = linear(D, CLASSES)


def test_hand_counts_of_the_blocks():
  assert C_IMAGENET == 261
  # query 1024*261+261, key and value 2*(261*261+261), output 261*1024+1024,
  # norms 2*261 + 2*2*1024, MLP 2*(1024*1024+1024).
  assert cross_attend(261, 1024) == (
      267_525 + 2 * 68_382 + 268_288 + 522 + 4_096 + 2_099_200) == 2_776_395
  assert self_attend(1024) == 4 * 1_049_600 + 4_096 + 2_099_200 == 6_301_696


def count(config, num_classes):
  """Parameters of the classifier built from `config.model`."""
  model = factory.transform_classifier(config.model, num_classes)
  batch = factory.example_batch(config.model.input, 1)
  shapes = jax.eval_shape(
      functools.partial(model.init, is_training=False),
      jax.random.PRNGKey(0), batch)
  return sum(math.prod(x.shape) for x in jax.tree.leaves(shapes)), shapes


def test_imagenet_headline_parameter_count():
  # First cross-attend, one shared set for cross-attends 2..8, one shared
  # latent Transformer of 6 layers.
  expected = (LATENTS + 2 * cross_attend(C_IMAGENET, D) +
              6 * self_attend(D) + HEAD)
  assert expected == 44_912_254
  total, shapes = count(imagenet.get_config(), CLASSES)
  assert total == expected
  assert sorted(m for m in shapes if not m.startswith('perceiver/')) == [
      'classification_head/logits', 'perceiver']


def test_imagenet_unshared_parameter_count():
  expected = (LATENTS + 8 * cross_attend(C_IMAGENET, D) +
              8 * 6 * self_attend(D) + HEAD)
  assert expected == 326_241_856
  config = imagenet.get_config()
  config.model.encoder.share_weights = False
  assert count(config, CLASSES)[0] == expected


def test_imagenet_learned_positions_parameter_count():
  # One cross-attend over 3 + 128 channels, plus the [50176, 128] positions.
  c = 3 + 128
  expected = (224 * 224 * 128 + LATENTS + cross_attend(c, D) +
              6 * self_attend(D) + HEAD)
  total, shapes = count(imagenet.get_config('variant=learned_pos'), CLASSES)
  assert total == expected == 48_189_577
  assert shapes['grid_adapter/learned_positions']['pos_embs'].shape == (
      224 * 224, 128)


def test_digits_runlocal_parameter_count():
  config = digits.get_config('runlocal')
  c = 1 + 2 * (2 * 4 + 1)  # 1 grey channel, 2 axes, 4 bands.
  expected = (8 * 16 + 2 * cross_attend(c, 16) + 2 * self_attend(16) +
              linear(16, 10))
  assert count(config, 10)[0] == expected == 7_788


def test_example_batch():
  batch = factory.example_batch(imagenet.get_config().model.input, 3)
  assert batch == {'image': jax.ShapeDtypeStruct((3, 224, 224, 3),
                                                 jnp.float32)}
  batch = factory.example_batch(digits.get_config().model.input, 1)
  assert batch == {'image': jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32)}
  with pytest.raises(ValueError, match="'mesh'"):
    factory.example_batch({'type': 'mesh'}, 1)
  with pytest.raises(ValueError, match='batch_size.* 0'):
    factory.example_batch(digits.get_config().model.input, 0)


def test_unknown_adapter_type_raises():
  config = digits.get_config('runlocal')
  config.model.input.type = 'mesh'
  with pytest.raises(ValueError, match=r"input.type.*'grid'.*'mesh'"):
    model_inputs.make(config.model.input)
  # The classifier is refused when it is built, before any tracing.
  with pytest.raises(ValueError, match="'mesh'"):
    factory.transform_classifier(config.model, 10)


def test_input_permutation():
  config = digits.get_config()
  assert model_inputs.input_permutation(config.model.input) is None
  config.model.input.permutation_seed = 5
  perm = model_inputs.input_permutation(config.model.input)
  np.testing.assert_array_equal(perm, pe.permutation(64, 5))
  np.testing.assert_array_equal(np.sort(perm), np.arange(64))


def test_classifier_forward_shapes_and_bad_batches():
  config = digits.get_config('runlocal')
  model = factory.transform_classifier(config.model, 10)
  init = functools.partial(model.init, is_training=False)
  batch = factory.example_batch(config.model.input, 4)
  params = jax.eval_shape(init, jax.random.PRNGKey(0), batch)
  logits = jax.eval_shape(
      functools.partial(model.apply, is_training=False), params, None, batch)
  assert logits.shape == (4, 10)
  # The encoder was built for 1 + 18 channels.
  assert params['perceiver/cross_attend_0/input_norm']['scale'].shape == (19,)

  wrong_channels = {'image': jax.ShapeDtypeStruct((4, 8, 8, 3), jnp.float32)}
  with pytest.raises(ValueError, match=r"batch\['image'\].*\(4, 8, 8, 3\)"):
    jax.eval_shape(init, jax.random.PRNGKey(0), wrong_channels)
  wrong_grid = {'image': jax.ShapeDtypeStruct((4, 8, 7, 1), jnp.float32)}
  with pytest.raises(ValueError, match=r'\(4, 8, 7, 1\)'):
    jax.eval_shape(init, jax.random.PRNGKey(0), wrong_grid)


def test_forward_does_not_follow_later_config_edits():
  config = digits.get_config('runlocal')
  model = factory.transform_classifier(config.model, 10)
  config.model.input.num_bands = 2  # After building: must not matter.
  config.model.encoder.num_latents = 3
  params = jax.eval_shape(functools.partial(model.init, is_training=False),
                          jax.random.PRNGKey(0),
                          factory.example_batch(config.model.input, 1))
  assert params['perceiver/cross_attend_0/input_norm']['scale'].shape == (
      1 + 2 * (2 * 4 + 1),)
  assert params['perceiver']['latents'].shape == (8, 16)


@pytest.mark.parametrize('field, value, match', [
    ('dropout', float('nan'), 'config.model.encoder.dropout.*nan'),
    ('dropout', float('inf'), 'config.model.encoder.dropout.*inf'),
    ('cross_attend_placement', 'middle', "'middle'"),
    ('num_cross_attends', 3, 'num_cross_attends=3.*num_blocks=2'),
    ('attention_impl', 'flash', "'flash'"),
])
def test_bad_model_config_raises(field, value, match):
  config = digits.get_config('runlocal')
  config.model.encoder[field] = value
  with pytest.raises(ValueError, match=match):
    model = factory.transform_classifier(config.model, 10)
    jax.eval_shape(functools.partial(model.init, is_training=False),
                   jax.random.PRNGKey(0),
                   factory.example_batch(config.model.input, 1))


def test_non_finite_max_resolution_raises():
  config = digits.get_config('runlocal')
  config.model.input.max_resolution = (float('nan'), 8.0)
  model = factory.transform_classifier(config.model, 10)
  with pytest.raises(ValueError, match='max_resolution.*nan'):
    jax.eval_shape(functools.partial(model.init, is_training=False),
                   jax.random.PRNGKey(0),
                   factory.example_batch(config.model.input, 1))
