"""Builds a classifier's forward function from `config.model`.

`config.model` holds `encoder` (`EncoderConfig` fields), `input` (a type of
`inputs.INPUTS` and its fields), and optionally `grid_parts` (True: a byte
array in parts goes to the encoder unbuilt), `architecture` ('perceiver'
or 'convnet', `convnet.ConvNet` on a 'grid' input's image) and `head`
('mean_linear', or 'perceiver_io' set by `decoder`).
"""

import copy
from typing import Any, Callable, Mapping

import haiku as hk
import jax

from perceiver_jax import checks
from perceiver_jax.model import convnet
from perceiver_jax.model import decoder as decoder_lib
from perceiver_jax.model import encoder_config as encoder_config_lib
from perceiver_jax.model import inputs
from perceiver_jax.model import perceiver

Batch = Mapping[str, jax.Array]
ARCHITECTURES = ('perceiver', 'convnet')


def example_batch(input_config: Mapping[str, Any],
                  batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
  """Batch key -> the shape and dtype of a batch that `input_config` reads
  (for `jax.eval_shape` and lowering without data)."""
  checks.positive_int(batch_size, 'batch_size')
  shapes = inputs.input_class(input_config).entry_shapes(input_config)
  return {key: jax.ShapeDtypeStruct((batch_size, *shape), jax.numpy.float32)
          for key, shape in shapes.items()}


def encoder_config(
    model_config: Mapping[str, Any]) -> encoder_config_lib.EncoderConfig:
  """The checked `EncoderConfig` of `config.model.encoder`."""
  if 'encoder' not in model_config:
    raise ValueError('config.model has no encoder field (the '
                     'EncoderConfig fields go in config.model.encoder).')
  return encoder_config_lib.EncoderConfig.from_mapping(
      model_config['encoder'])


def _convnet_forward(model_config: Mapping[str, Any],
                     num_classes: int) -> Callable[..., jax.Array]:
  input_config = copy.deepcopy(model_config['input'])
  if input_config.get('type') != 'grid':
    raise ValueError("config.model.architecture='convnet' needs a 'grid' "
                     f"input, got type {input_config.get('type')!r}.")
  channels = tuple((model_config.get('convnet') or {}).get(
      'channels', (32, 64, 128)))
  permutation = inputs.input_permutation(input_config)
  (key, shape), = inputs.GridInput.entry_shapes(input_config).items()

  def forward(batch: Batch, *, is_training: bool) -> jax.Array:
    del is_training  # No dropout or normalisation state.
    images = inputs.check_shape(batch, key, shape)
    return convnet.ConvNet(num_classes, channels=channels,
                           permutation=permutation)(images)

  return forward


def classifier_forward(model_config: Mapping[str, Any],
                       num_classes: int) -> Callable[..., jax.Array]:
  """`forward(batch, *, is_training) -> logits [B, num_classes]`, for
  `hk.transform`; every setting is checked here, once."""
  architecture = checks.one_of(model_config.get('architecture', 'perceiver'),
                               'config.model.architecture', ARCHITECTURES)
  if architecture == 'convnet':
    return _convnet_forward(model_config, num_classes)
  config = encoder_config(model_config)
  head = checks.one_of(model_config.get('head', 'mean_linear'),
                       'config.model.head', decoder_lib.HEADS)
  if head == 'perceiver_io':
    decoder = decoder_lib.decoder_settings(model_config)
    make_classifier = lambda: decoder_lib.PerceiverIOClassifier(
        num_classes, config, decoder=decoder)
  else:
    make_classifier = lambda: perceiver.PerceiverClassifier(num_classes,
                                                            config)
  grid_parts = checks.boolean(model_config.get('grid_parts', True),
                              'config.model.grid_parts')
  # A snapshot: later edits of the caller's config do not change `forward`.
  input_config = copy.deepcopy(model_config['input'])
  inputs.input_class(input_config)  # An unknown type fails here.

  def forward(batch: Batch, *, is_training: bool) -> jax.Array:
    adapter = inputs.make(input_config)
    parts = adapter.parts(batch) if grid_parts else None
    if parts is not None:
      byte_array, mask = parts, None
    else:
      byte_array, mask = adapter(batch, is_training=is_training)
    return make_classifier()(byte_array, input_mask=mask,
                             is_training=is_training)

  return forward


def transform_classifier(model_config: Mapping[str, Any],
                         num_classes: int) -> hk.Transformed:
  """`hk.transform` of `classifier_forward`."""
  return hk.transform(classifier_forward(model_config, num_classes))
