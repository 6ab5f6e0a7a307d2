"""Our model against transformers' Perceiver on mapped weights.

The first check of our attention, MLP, LayerNorm and residual order against
an independent implementation (transformers' port of DeepMind's code): small
randomly initialised transformers models, saved with `save_pretrained`,
mapped onto our parameters (`interop.transformers_format`), and the same
images through both, after transformers' own image processor.
"""

import dataclasses

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch

from perceiver_jax.interop import transformers_format as tf_format
from perceiver_jax.model import encoder_config
from perceiver_jax.model import factory
from perceiver_jax.model import perceiver
from tests.helpers import transformers_fixtures as fixtures

TOLERANCE = 1e-4


def _their_logits(model, images: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return model(inputs=torch.from_numpy(images)).logits.numpy()


def _our_classifier(directory, **model_overrides):
  hf_config = fixtures.read_config(directory)
  model_config = tf_format.model_config(
      hf_config, image_size=(fixtures.IMAGE_SIZE, fixtures.IMAGE_SIZE))
  model_config['grid_parts'] = model_overrides.pop('grid_parts', True)
  model_config['encoder'].update(model_overrides)
  forward = factory.transform_classifier(model_config, fixtures.NUM_LABELS)
  example = {'image': jnp.zeros((1, fixtures.IMAGE_SIZE,
                                 fixtures.IMAGE_SIZE, 3))}
  expected = jax.eval_shape(forward.init, jax.random.key(0), example,
                            is_training=False)
  state = safetensors.numpy.load_file(directory / 'model.safetensors')
  params = tf_format.to_params(state, hf_config, expected)
  return forward, params, state


@pytest.fixture(scope='module', params=sorted(fixtures.CLASSIFIERS))
def classifier(request, tmp_path_factory):
  """(kind, transformers model, its checkpoint directory)."""
  kind = request.param
  model = fixtures.randomize(
      fixtures.CLASSIFIERS[kind](fixtures.small_config()), seed=len(kind))
  directory = fixtures.save(model, tmp_path_factory.mktemp(kind))
  return kind, model, directory


@pytest.fixture(scope='module')
def images():
  return fixtures.processed_images()  # [2, 3, H, W]


@pytest.mark.parametrize('overrides', [
    {},  # Our defaults: absorbed projections, shared K/V, grid parts.
    dict(absorb_cross_attend_projections=False,
         reuse_shared_keys_values=False, grid_parts=False),
], ids=['defaults', 'reference_paths'])
def test_classifier_logits_equal_transformers(classifier, images, overrides):
  kind, model, directory = classifier
  forward, params, state = _our_classifier(directory, **overrides)
  ours = forward.apply(params, None,
                       {'image': jnp.asarray(images.transpose(0, 2, 3, 1))},
                       is_training=False)
  theirs = _their_logits(model, images)
  assert ours.shape == theirs.shape == (2, fixtures.NUM_LABELS)
  # The logits spread over several units, so this tolerance is tight.
  assert np.std(theirs) > 0.1
  np.testing.assert_allclose(np.asarray(ours), theirs,
                             atol=TOLERANCE, rtol=0)
  # Every value of theirs became one of ours, and nothing else exists.
  del state
  assert tf_format.count(params) == (
      sum(p.numel() for p in model.parameters()) +
      sum(b.numel() for n, b in model.named_buffers()
          if n.endswith(('running_mean', 'running_var'))))


def test_export_round_trip_loads_in_transformers(classifier, images,
                                                 tmp_path):
  """Our parameters, written back in transformers' names, load with no
  missing or unexpected key and give transformers' logits."""
  kind, model, directory = classifier
  hf_config = fixtures.read_config(directory)
  _, params, _ = _our_classifier(directory)
  # Move our parameters away from theirs, so the check is not vacuous.
  shifted = jax.tree.map(lambda p: np.asarray(p) + 0.01, params)
  state = tf_format.from_params(shifted, hf_config)
  fresh = fixtures.CLASSIFIERS[kind](fixtures.small_config()).eval()
  missing, unexpected = fresh.load_state_dict(
      {k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
  assert not unexpected
  assert [k for k in missing if not k.endswith('num_batches_tracked')] == []
  forward, _, _ = _our_classifier(directory)
  ours = forward.apply(shifted, None,
                       {'image': jnp.asarray(images.transpose(0, 2, 3, 1))},
                       is_training=False)
  theirs = _their_logits(fresh, images)
  assert not np.allclose(theirs, _their_logits(model, images), atol=1e-3)
  np.testing.assert_allclose(np.asarray(ours), theirs,
                             atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize('hidden_act,mlp_activation', [
    ('gelu', 'gelu'), ('gelu_pytorch_tanh', 'gelu_tanh')])
def test_paper_encoder_equals_transformers_encoder(tmp_path, hidden_act,
                                                   mlp_activation):
  """The paper's encoder (our defaults) with one cross-attend at the start
  and sharing on is transformers' `PerceiverModel` encoder: final latents
  equal on mapped weights, with the GELU variant matched."""
  import transformers  # pylint: disable=g-import-not-at-top
  config = fixtures.small_config(hidden_act=hidden_act,
                                 num_cross_attention_heads=1)
  model = fixtures.randomize(transformers.PerceiverModel(config), seed=3)
  fixtures.save(model, tmp_path)
  hf_config = fixtures.read_config(tmp_path)
  fields = tf_format.model_config(hf_config)['encoder']
  assert fields['mlp_activation'] == mlp_activation
  ours_config = encoder_config.EncoderConfig(**fields)
  inputs = np.random.default_rng(0).normal(
      size=(2, 50, config.d_model)).astype(np.float32)

  def encode(x):
    return perceiver.Perceiver(ours_config)(x, is_training=False)

  encoder = hk.transform(encode)
  expected = jax.eval_shape(encoder.init, jax.random.key(0), inputs)
  params = tf_format.to_params(
      safetensors.numpy.load_file(tmp_path / 'model.safetensors'),
      hf_config, expected)
  ours = encoder.apply(params, None, inputs)
  with torch.no_grad():
    theirs = model(inputs=torch.from_numpy(inputs)).last_hidden_state.numpy()
  assert ours.shape == theirs.shape == (2, 64, 64)
  np.testing.assert_allclose(np.asarray(ours), theirs, atol=TOLERANCE,
                             rtol=0)
  # The other GELU gives measurably different latents: the test can fail.
  other = {'gelu': 'gelu_tanh', 'gelu_tanh': 'gelu'}[mlp_activation]
  mismatched = hk.transform(lambda x: perceiver.Perceiver(
      dataclasses.replace(ours_config, mlp_activation=other))(
          x, is_training=False))
  assert np.max(np.abs(mismatched.apply(params, None, inputs) - theirs)) > (
      10 * TOLERANCE)


@pytest.mark.parametrize('name', sorted(tf_format.RELEASED_CONFIGS))
def test_released_shapes_match_transformers_parameter_counts(name):
  """configs/imagenet.py's perceiver_io_* variants (the released models'
  shapes, full size) have exactly transformers' parameters for the same
  published config, tensor by tensor (shapes only: no forward pass)."""
  import transformers  # pylint: disable=g-import-not-at-top
  from configs import imagenet  # pylint: disable=g-import-not-at-top
  released = tf_format.RELEASED_CONFIGS[name]
  variant = 'perceiver_io_' + name.rsplit('-', 1)[-1]
  config = imagenet.get_config(f'variant={variant}')
  forward = factory.transform_classifier(config.model,
                                         config.data.num_classes)
  example = {k: jnp.zeros(v.shape, v.dtype) for k, v in
             factory.example_batch(config.model.input, 1).items()}
  ours = jax.eval_shape(forward.init, jax.random.key(0), example,
                        is_training=False)
  model_class = getattr(transformers, released['architectures'][0])
  with torch.device('meta'):  # Shapes without memory or initialisation.
    model = model_class(transformers.PerceiverConfig(**{
        k: v for k, v in released.items()
        if k not in ('model_type', 'architectures')}))
  state = {}
  names = tf_format.name_map(released)
  for key, tensor in model.state_dict().items():
    if key.endswith(tf_format.IGNORED_SUFFIXES):
      continue
    where = names[key]
    mapped = where.to_ours(np.empty(tuple(tensor.shape), np.float32))
    assert mapped.shape == ours[where.module][where.name].shape, key
    state[key] = mapped
  assert len(state) == sum(len(v) for v in ours.values())
