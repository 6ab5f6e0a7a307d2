"""Builds a classifier's forward function from `config.model`.

`config.model` holds:
- `encoder`: the fields of `encoder_config.EncoderConfig`.
- `input`: the input adapter, `input.type` naming one of `inputs.INPUTS`
  (fields in `perceiver_jax.model.inputs`).
- `grid_parts` (optional, default True): an input that can give its byte
  array in parts (a 'grid' or 'mel' input with Fourier features and no
  permutation) hands the parts to the encoder, whose one-head cross-attends
  with absorbed projections then never build the `[B, M, C]` array
  (`grid_byte_array`); same outputs.
- `architecture` (optional, default 'perceiver'): 'perceiver', or
  'convnet', a small convolutional baseline (`convnet.ConvNet`) that reads a
  'grid' input's image directly, with `convnet.channels` and the same pixel
  permutation.
- `head` (optional, default 'mean_linear', the paper's mean of the latents
  and a Linear) or 'perceiver_io' (`decoder.ClassificationDecoder`, the
  released Perceiver IO classifiers' head), set by `decoder`.
"""

import copy
import dataclasses
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


def example_batch(input_config: Mapping[str, Any],
                  batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes of a batch that the adapter of `input_config` accepts.

  For `jax.eval_shape` (initialise without computing) and for lowering the
  forward pass (FLOP counts) without any data. For type 'grid':
  `{key: ShapeDtypeStruct([batch_size, *index_dims, raw_channels], float32)}`.

  Args:
    input_config: `config.model.input`.
    batch_size: leading dimension of every entry.

  Returns:
    Batch key -> `jax.ShapeDtypeStruct`.
  """
  checks.positive_int(batch_size, 'batch_size')
  return inputs.input_class(input_config).example_batch(input_config,
                                                        batch_size)


def make_adapter(input_config: Mapping[str, Any]) -> inputs.InputAdapter:
  """Builds the adapter that `input_config.type` names (inside a Haiku
  transform)."""
  return inputs.input_class(input_config)(input_config)


def encoder_config(
    model_config: Mapping[str, Any]) -> encoder_config_lib.EncoderConfig:
  """The checked `EncoderConfig` of `config.model.encoder`."""
  if 'encoder' not in model_config:
    raise ValueError('config.model has no encoder field (the '
                     'EncoderConfig fields go in config.model.encoder).')
  return encoder_config_lib.EncoderConfig.from_mapping(
      model_config['encoder'])


ARCHITECTURES = ('perceiver', 'convnet')


def _convnet_forward(model_config: Mapping[str, Any],
                     num_classes: int) -> Callable[..., jax.Array]:
  """The ConvNet baseline on a 'grid' input's image `[B, H, W, C]`."""
  input_config = copy.deepcopy(model_config['input'])
  if input_config.get('type') != 'grid':
    raise ValueError("config.model.architecture='convnet' needs a 'grid' "
                     f"input, got type {input_config.get('type')!r}.")
  convnet_config = model_config.get('convnet') or {}
  channels = tuple(convnet_config.get('channels', (32, 64, 128)))
  permutation = inputs.input_permutation(input_config)
  shape = (*(int(n) for n in input_config['index_dims']),
           int(input_config['raw_channels']))

  def forward(batch: Batch, *, is_training: bool) -> jax.Array:
    del is_training  # No dropout or normalisation state.
    images = inputs.check_shape(batch, input_config['key'], shape)
    return convnet.ConvNet(num_classes, channels=channels,
                           permutation=permutation)(images)

  return forward


def classifier_forward(model_config: Mapping[str, Any],
                       num_classes: int) -> Callable[..., jax.Array]:
  """A function `forward(batch, *, is_training) -> logits [B, num_classes]`.

  Transform it with `hk.transform` (its parameters are then the adapter's,
  `perceiver/...` and `classification_head/...`; or `convnet/...` when
  `model_config.architecture` is 'convnet').
  """
  architecture = model_config.get('architecture', 'perceiver')
  if architecture not in ARCHITECTURES:
    raise ValueError(f'config.model.architecture must be one of '
                     f'{ARCHITECTURES}, got {architecture!r}.')
  if architecture == 'convnet':
    return _convnet_forward(model_config, num_classes)
  encoder_fields = dataclasses.asdict(encoder_config(model_config))
  head = model_config.get('head', 'mean_linear')
  if head not in decoder_lib.HEADS:
    raise ValueError(f'config.model.head must be one of {decoder_lib.HEADS}, '
                     f'got {head!r}.')
  if head == 'perceiver_io':
    encoder_fields['decoder'] = decoder_lib.decoder_settings(model_config)
    classifier_class = decoder_lib.PerceiverIOClassifier
  else:
    classifier_class = perceiver.PerceiverClassifier
  grid_parts = model_config.get('grid_parts', True)
  if not isinstance(grid_parts, bool):
    raise ValueError(f'config.model.grid_parts must be a bool, got '
                     f'{grid_parts!r}.')
  # A snapshot, like the encoder's fields: the forward function must not
  # change when the caller later edits its config (e.g. to build a variant).
  input_config = copy.deepcopy(model_config['input'])
  inputs.input_class(input_config)  # An unknown type fails here.

  def forward(batch: Batch, *, is_training: bool) -> jax.Array:
    adapter = make_adapter(input_config)
    parts = adapter.parts(batch) if grid_parts else None
    if parts is not None:
      byte_array, mask = parts, None
    else:
      byte_array, mask = adapter(batch, is_training=is_training)
    classifier = classifier_class(
        num_classes, input_channels=adapter.num_channels, **encoder_fields)
    return classifier(byte_array, input_mask=mask, is_training=is_training)

  return forward


def transform_classifier(model_config: Mapping[str, Any],
                         num_classes: int) -> hk.Transformed:
  """`hk.transform` of `classifier_forward`."""
  return hk.transform(classifier_forward(model_config, num_classes))
