"""Builds a classifier's forward function from `config.model`.

`config.model` holds the encoder fields (see `perceiver.ENCODER_FIELDS`) and
`config.model.input`, which describes the adapter:

- `type`: which adapter turns the batch into the byte array ('grid', ...).
- `key`: the batch entry the adapter reads (for single-input adapters).
- `index_dims`, `raw_channels`: the grid and its channels per position.
- for 'raw_audio', 'mel', 'video' and 'audio_video' (AudioSet), the fields
  named in their builders' docstrings below.
- position encoding fields: `position_encoding`, `num_bands`,
  `max_resolution`, `learned_position_channels`,
  `learned_position_init_scale`, `permutation_seed` (None: no permutation).

`config.model.grid_parts` (optional, default True): a 'grid' or 'mel'
input with Fourier features and no permutation reaches the encoder in parts
(`grid_byte_array.GridByteArray`), which one-head cross-attends with
absorbed projections use without building the byte array; same outputs.

`config.model.architecture` (optional, default 'perceiver') selects the
classifier: 'perceiver', or 'convnet', a small convolutional baseline
(`convnet.ConvNet`) that reads a 'grid' input's image directly, with
`config.model.convnet.channels` and the same pixel permutation.

Type 'points' (point clouds, `batch[key]` `[B, P, 3]`): `num_bands`,
`max_resolution` (mu per axis, 3 values) and `num_points` (P, which only
`example_batch` uses; the adapter takes any P).

Types 'conv1x1_learned' and 'conv_stem' (the image preprocessors of the
released Perceiver IO classifiers, `preprocessors.py`): `key`,
`index_dims` (H, W), `raw_channels`, `out_channels`; for 'conv1x1_learned'
also `position_channels` and `projected_channels` (256 each); for
'conv_stem' also `num_bands` and `max_resolution` (of the pooled grid).

`config.model.head` (optional, default 'mean_linear', the paper's mean of
the latents and a Linear) or 'perceiver_io' (`decoder.ClassificationDecoder`,
settings in `config.model.decoder`).

Each modality registers its adapter builder in `ADAPTER_BUILDERS`.
"""

import copy
from typing import Any, Callable, Mapping, Optional

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from perceiver_jax.model import adapters
from perceiver_jax.model import convnet
from perceiver_jax.model import decoder as decoder_lib
from perceiver_jax.model import grid_byte_array
from perceiver_jax.model import perceiver
from perceiver_jax.model import position_encoding as pe
from perceiver_jax.model import preprocessors

Batch = Mapping[str, jax.Array]
# An adapter maps the batch to (byte array [B, M, C], mask [B, M] or None).
Adapter = Callable[..., tuple[jax.Array, Optional[jax.Array]]]


def input_permutation(input_config: Mapping[str, Any]) -> Optional[np.ndarray]:
  """The fixed input permutation named by `permutation_seed`, or None."""
  seed = input_config.get('permutation_seed')
  if seed is None:
    return None
  num_positions = int(np.prod(input_config['index_dims']))
  return pe.permutation(num_positions, seed)


class _GridInput:
  """Reads `batch[key]` `[B, *index_dims, C_raw]` through a `GridAdapter`."""

  def __init__(self, input_config: Mapping[str, Any]):
    self._key = input_config['key']
    self._raw_channels = input_config['raw_channels']
    self._adapter = adapters.GridAdapter(
        input_config['index_dims'],
        permutation=input_permutation(input_config),
        **_position_kwargs(input_config))

  @property
  def num_channels(self) -> int:
    return self._adapter.num_channels(self._raw_channels)

  @property
  def has_parts(self) -> bool:
    return self._adapter.has_parts

  def _image(self, batch: Batch) -> jax.Array:
    x = batch[self._key]
    if x.shape[-1] != self._raw_channels:
      raise ValueError(
          f'batch[{self._key!r}] has shape {x.shape}; expected '
          f'{self._raw_channels} channels per position.')
    return x

  def parts(self, batch: Batch) -> grid_byte_array.GridByteArray:
    """The byte array in parts (`GridAdapter.parts`); no mask."""
    return self._adapter.parts(self._image(batch))

  def __call__(self, batch: Batch, *, is_training: bool):
    del is_training  # No augmentation in the grid adapter.
    return self._adapter(self._image(batch)), None


def _position_kwargs(input_config: Mapping[str, Any]) -> dict[str, Any]:
  """`GridAdapter` position-encoding arguments from an input config."""
  max_resolution = input_config.get('max_resolution')
  return dict(
      position_encoding=input_config.get('position_encoding', 'fourier'),
      num_bands=input_config.get('num_bands', 64),
      max_resolution=None if max_resolution is None else tuple(
          max_resolution),
      learned_position_channels=input_config.get(
          'learned_position_channels', 128),
      learned_position_init_scale=input_config.get(
          'learned_position_init_scale', 1.0))


def _check_shape(batch: Batch, key: str, shape: tuple[int, ...]) -> jax.Array:
  x = batch[key]
  if tuple(x.shape[1:]) != shape:
    raise ValueError(f'batch[{key!r}] has shape {x.shape}; expected '
                     f'[batch, {", ".join(map(str, shape))}].')
  return x


class _RawAudioInput:
  """Raw audio `batch[key]` `[B, num_samples]` in patches of samples.

  Fields: `key` ('audio'), `num_samples` (61,440), `samples_per_patch`
  (128: 480 tokens), position fields as for 'grid' (`num_bands`,
  `max_resolution`: mu of the patch axis, default the number of patches).
  C = samples_per_patch + 2 * num_bands + 1.
  """

  def __init__(self, input_config: Mapping[str, Any]):
    self._key = input_config.get('key', 'audio')
    self._num_samples = int(input_config['num_samples'])
    patch = int(input_config.get('samples_per_patch', 128))
    self._adapter = adapters.PatchAdapter(
        (self._num_samples,), (patch,), name='audio_patches',
        **_position_kwargs(input_config))

  @property
  def num_channels(self) -> int:
    return self._adapter.num_channels(1)

  def byte_array(self, batch: Batch) -> jax.Array:
    x = _check_shape(batch, self._key, (self._num_samples,))
    return self._adapter(x[..., None])  # [B, M, C]

  def __call__(self, batch: Batch, *, is_training: bool):
    del is_training  # Augmentation happens in the data pipeline.
    return self.byte_array(batch), None


class _MelInput:
  """A spectrogram `batch[key]` `[B, frames, bins]`, one input per value.

  Fields: `key` ('mel'), `index_dims` ((96, 50): 4,800 inputs), position
  fields as for 'grid' (2D Fourier features of (time, mel band); mu per
  axis defaults to the grid). C = 1 + 2 * (2 * num_bands + 1).
  """

  def __init__(self, input_config: Mapping[str, Any]):
    self._key = input_config.get('key', 'mel')
    self._index_dims = tuple(int(n) for n in input_config['index_dims'])
    self._adapter = adapters.GridAdapter(
        self._index_dims, name='mel_grid', **_position_kwargs(input_config))

  @property
  def num_channels(self) -> int:
    return self._adapter.num_channels(1)

  def _values(self, batch: Batch) -> jax.Array:
    """`[B, frames, bins, 1]`: one raw channel per grid point."""
    return _check_shape(batch, self._key, self._index_dims)[..., None]

  def byte_array(self, batch: Batch) -> jax.Array:
    return self._adapter(self._values(batch))  # [B, M, C]

  @property
  def has_parts(self) -> bool:
    return self._adapter.has_parts

  def parts(self, batch: Batch) -> grid_byte_array.GridByteArray:
    """The byte array in parts (`GridAdapter.parts`); no mask."""
    return self._adapter.parts(self._values(batch))

  def __call__(self, batch: Batch, *, is_training: bool):
    del is_training
    return self.byte_array(batch), None


class _VideoInput:
  """Video `batch[key]` `[B, T, H, W, 3]` in space-time patches.

  Fields: `key` ('video'), `index_dims` ((32, 224, 224): T, H, W),
  `patch_shape` ((2, 8, 8): 12,544 tokens of 384 values), position fields
  as for 'grid' (3D Fourier features of the patch grid's (t, h, w) in
  [-1, 1]; mu per axis defaults to the patch grid, (16, 28, 28)).
  C = prod(patch_shape) * 3 + 3 * (2 * num_bands + 1).
  """

  def __init__(self, input_config: Mapping[str, Any]):
    self._key = input_config.get('key', 'video')
    self._index_dims = tuple(int(n) for n in input_config['index_dims'])
    self._adapter = adapters.PatchAdapter(
        self._index_dims, input_config.get('patch_shape', (2, 8, 8)),
        name='video_patches', **_position_kwargs(input_config))

  @property
  def num_channels(self) -> int:
    return self._adapter.num_channels(3)

  def byte_array(self, batch: Batch) -> jax.Array:
    x = _check_shape(batch, self._key, (*self._index_dims, 3))
    return self._adapter(x)  # [B, M, C]

  def __call__(self, batch: Batch, *, is_training: bool):
    del is_training
    return self.byte_array(batch), None


_AUDIO_INPUTS = {'raw_audio': _RawAudioInput, 'mel': _MelInput}


class _AudioVideoInput:
  """Audio (raw or mel) and video tokens fused by a `MultimodalAdapter`.

  Fields: `audio` (an input config of type 'raw_audio' or 'mel'), `video`
  (type 'video'), `num_modality_channels` (4), `video_dropout` (0.3: the
  probability that an example's video tokens are all masked out in
  training), `audio_dropout` (0.0; the tuned mel + video run's 0.1
  "spectrogram dropout", applied the same way). Tokens: audio, then video.
  C = max(C_audio, C_video) + num_modality_channels.
  """

  def __init__(self, input_config: Mapping[str, Any]):
    audio_config = input_config['audio']
    if audio_config.get('type') not in _AUDIO_INPUTS:
      raise ValueError(f'config.model.input.audio.type must be one of '
                       f'{sorted(_AUDIO_INPUTS)}, got '
                       f'{audio_config.get("type")!r}.')
    if input_config['video'].get('type', 'video') != 'video':
      raise ValueError(f"config.model.input.video.type must be 'video', got "
                       f'{input_config["video"].get("type")!r}.')
    self._audio = _AUDIO_INPUTS[audio_config['type']](audio_config)
    self._video = _VideoInput(input_config['video'])
    self._fusion = adapters.MultimodalAdapter(
        ('audio', 'video'),
        num_modality_channels=input_config.get('num_modality_channels', 4),
        dropout_rates={'audio': input_config.get('audio_dropout', 0.0),
                       'video': input_config.get('video_dropout', 0.3)},
        name='audio_video_fusion')

  @property
  def num_channels(self) -> int:
    return self._fusion.num_channels({'audio': self._audio.num_channels,
                                      'video': self._video.num_channels})

  def __call__(self, batch: Batch, *, is_training: bool):
    return self._fusion({'audio': self._audio.byte_array(batch),
                         'video': self._video.byte_array(batch)},
                        is_training=is_training)

class _PointsInput:
  """Reads `batch[key]` `[B, P, 3]` through a `PointCloudAdapter`."""

  def __init__(self, input_config: Mapping[str, Any]):
    self._key = input_config['key']
    self._adapter = adapters.PointCloudAdapter(
        num_bands=input_config.get('num_bands', 64),
        max_resolution=tuple(input_config['max_resolution']))

  @property
  def num_channels(self) -> int:
    return self._adapter.num_channels

  def __call__(self, batch: Batch, *, is_training: bool):
    del is_training  # Augmentation happens in the data pipeline.
    return self._adapter(batch[self._key]), None


class _ImagePreprocessorInput(_PointsInput):
  """Reads images `batch[key]` `[B, H, W, C_raw]` through one of
  `preprocessors.py`'s adapters (types 'conv1x1_learned', 'conv_stem');
  `num_channels` and the call are `_PointsInput`'s."""

  def __init__(self, input_config: Mapping[str, Any]):  # pylint: disable=super-init-not-called
    self._key = input_config['key']
    image_shape = (*(int(n) for n in input_config['index_dims']),
                   int(input_config['raw_channels']))
    if input_config['type'] == 'conv1x1_learned':
      self._adapter = preprocessors.Conv1x1LearnedAdapter(
          image_shape,
          out_channels=input_config.get('out_channels', 256),
          position_channels=input_config.get('position_channels', 256),
          projected_channels=input_config.get('projected_channels', 256))
    else:
      max_resolution = input_config.get('max_resolution')
      self._adapter = preprocessors.ConvStemAdapter(
          image_shape,
          out_channels=input_config.get('out_channels', 64),
          num_bands=input_config.get('num_bands', 64),
          max_resolution=None if max_resolution is None else tuple(
              max_resolution))


# Adapter type -> builder taking `config.model.input`, returning an object
# with `num_channels` (C) that maps (batch, is_training=...) to
# (inputs [B, M, C], mask [B, M] or None). Built inside a Haiku transform.
# Grid inputs ('grid', 'mel') also have `has_parts` and `parts(batch)`:
# the byte array as a `GridByteArray` (see `config.model.grid_parts`).
ADAPTER_BUILDERS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    'grid': _GridInput,
    'raw_audio': _RawAudioInput,
    'mel': _MelInput,
    'video': _VideoInput,
    'audio_video': _AudioVideoInput,
    'points': _PointsInput,
    'conv1x1_learned': _ImagePreprocessorInput,
    'conv_stem': _ImagePreprocessorInput,
}


def _grid_example_batch(input_config: Mapping[str, Any],
                        batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
  shape = (batch_size, *(int(n) for n in input_config['index_dims']),
           int(input_config['raw_channels']))
  return {input_config['key']: jax.ShapeDtypeStruct(shape, jnp.float32)}


def _entries(batch_size: int, shapes: Mapping[str, tuple[int, ...]]
             ) -> dict[str, jax.ShapeDtypeStruct]:
  return {key: jax.ShapeDtypeStruct((batch_size, *shape), jnp.float32)
          for key, shape in shapes.items()}


def _raw_audio_shapes(c: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
  return {c.get('key', 'audio'): (int(c['num_samples']),)}


def _mel_shapes(c: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
  return {c.get('key', 'mel'): tuple(int(n) for n in c['index_dims'])}


def _video_shapes(c: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
  return {c.get('key', 'video'): (*(int(n) for n in c['index_dims']), 3)}


def _points_shapes(c: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
  num_points = c.get('num_points')
  if num_points is None or num_points < 1:
    raise ValueError(f'config.model.input.num_points must be positive for '
                     f'an example batch, got {num_points!r}.')
  return {c['key']: (int(num_points), 3)}


def _audio_video_shapes(c: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
  audio = {'raw_audio': _raw_audio_shapes, 'mel': _mel_shapes}[
      c['audio']['type']](c['audio'])
  return {**audio, **_video_shapes(c['video'])}


# Adapter type -> function (input_config, batch_size) -> the shapes and dtypes
# of the batch entries the adapter reads. Register one per adapter type, next
# to its `ADAPTER_BUILDERS` entry.
EXAMPLE_BATCH_BUILDERS: dict[
    str, Callable[[Mapping[str, Any], int], dict[str, jax.ShapeDtypeStruct]]
] = {
    'grid': _grid_example_batch,
    'raw_audio': lambda c, b: _entries(b, _raw_audio_shapes(c)),
    'mel': lambda c, b: _entries(b, _mel_shapes(c)),
    'video': lambda c, b: _entries(b, _video_shapes(c)),
    'audio_video': lambda c, b: _entries(b, _audio_video_shapes(c)),
    'points': lambda c, b: _entries(b, _points_shapes(c)),
    'conv1x1_learned': _grid_example_batch,
    'conv_stem': _grid_example_batch,
}


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
  if (isinstance(batch_size, bool) or not isinstance(batch_size, int) or
      batch_size < 1):
    raise ValueError(f'batch_size must be a positive integer, got '
                     f'{batch_size!r}.')
  kind = input_config.get('type')
  if kind not in EXAMPLE_BATCH_BUILDERS:
    raise ValueError(f'config.model.input.type must be one of '
                     f'{sorted(EXAMPLE_BATCH_BUILDERS)}, got {kind!r}.')
  return EXAMPLE_BATCH_BUILDERS[kind](input_config, batch_size)


def make_adapter(input_config: Mapping[str, Any]):
  """Builds the adapter that `input_config.type` names."""
  kind = input_config.get('type')
  if kind not in ADAPTER_BUILDERS:
    raise ValueError(f'config.model.input.type must be one of '
                     f'{sorted(ADAPTER_BUILDERS)}, got {kind!r}.')
  return ADAPTER_BUILDERS[kind](input_config)


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
  permutation = input_permutation(input_config)
  shape = (*(int(n) for n in input_config['index_dims']),
           int(input_config['raw_channels']))

  def forward(batch: Batch, *, is_training: bool) -> jax.Array:
    del is_training  # No dropout or normalisation state.
    images = _check_shape(batch, input_config['key'], shape)
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
  encoder_kwargs = perceiver.encoder_kwargs(model_config)
  head = model_config.get('head', 'mean_linear')
  if head not in decoder_lib.HEADS:
    raise ValueError(f'config.model.head must be one of {decoder_lib.HEADS}, '
                     f'got {head!r}.')
  if head == 'perceiver_io':
    encoder_kwargs['decoder'] = decoder_lib.decoder_settings(model_config)
    classifier_class = decoder_lib.PerceiverIOClassifier
  else:
    classifier_class = perceiver.PerceiverClassifier
  grid_parts = model_config.get('grid_parts', True)
  if not isinstance(grid_parts, bool):
    raise ValueError(f'config.model.grid_parts must be a bool, got '
                     f'{grid_parts!r}.')
  # A snapshot, like the encoder's arguments: the forward function must not
  # change when the caller later edits its config (e.g. to build a variant).
  input_config = copy.deepcopy(model_config['input'])

  def forward(batch: Batch, *, is_training: bool) -> jax.Array:
    adapter = make_adapter(input_config)
    if grid_parts and getattr(adapter, 'has_parts', False):
      inputs, mask = adapter.parts(batch), None
    else:
      inputs, mask = adapter(batch, is_training=is_training)
    classifier = classifier_class(
        num_classes, input_channels=adapter.num_channels, **encoder_kwargs)
    return classifier(inputs, input_mask=mask, is_training=is_training)

  return forward


def transform_classifier(model_config: Mapping[str, Any],
                         num_classes: int) -> hk.Transformed:
  """`hk.transform` of `classifier_forward`."""
  return hk.transform(classifier_forward(model_config, num_classes))
