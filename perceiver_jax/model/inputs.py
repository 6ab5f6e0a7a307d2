"""Input adapters: from a task's batch to the encoder's byte array.

Each `config.model.input.type` names one class in `INPUTS`, and every class
follows the `InputAdapter` protocol: built from `config.model.input` inside
a Haiku transform, it maps the batch to the byte array `[B, M, C]` (and an
optional mask `[B, M]`), knows its width C, can give the byte array in
parts where a grid allows it, and describes the batch it reads.

- 'grid' (images): `key`, `index_dims`, `raw_channels`, position fields
  `position_encoding`, `num_bands`, `max_resolution`,
  `learned_position_channels`, `learned_position_init_scale`,
  `permutation_seed` (None: no permutation).
- 'raw_audio', 'mel', 'video', 'audio_video' (AudioSet): see each class.
- 'points' (point clouds `[B, P, 3]`): `key`, `num_bands`,
  `max_resolution` (mu per axis, 3 values), `num_points` (P, which only the
  example batch uses; the adapter takes any P).
- 'conv1x1_learned', 'conv_stem' (the image preprocessors of the released
  Perceiver IO classifiers, `preprocessors.py`): `key`, `index_dims`
  (H, W), `raw_channels`, `out_channels`; 'conv1x1_learned' also
  `position_channels` and `projected_channels` (256 each); 'conv_stem'
  also `num_bands` and `max_resolution` (of the pooled grid).
"""

from typing import Any, Mapping, Optional, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from perceiver_jax.model import adapters
from perceiver_jax.model import grid_byte_array
from perceiver_jax.model import position_encoding as pe
from perceiver_jax.model import preprocessors

Batch = Mapping[str, jax.Array]
InputConfig = Mapping[str, Any]


class InputAdapter(Protocol):
  """What every input adapter provides."""

  def __init__(self, input_config: InputConfig) -> None:
    ...

  @property
  def num_channels(self) -> int:
    """C, the byte array's channels."""

  def __call__(self, batch: Batch, *, is_training: bool
               ) -> tuple[jax.Array, Optional[jax.Array]]:
    """The byte array `[B, M, C]` and a mask `[B, M]` (or None)."""

  def parts(self, batch: Batch) -> Optional[grid_byte_array.GridByteArray]:
    """The byte array in parts (no mask), or None where it has none."""

  @classmethod
  def example_batch(cls, input_config: InputConfig, batch_size: int
                    ) -> dict[str, jax.ShapeDtypeStruct]:
    """The shapes and dtypes of the batch entries the adapter reads."""


def input_permutation(input_config: InputConfig) -> Optional[np.ndarray]:
  """The fixed input permutation named by `permutation_seed`, or None."""
  seed = input_config.get('permutation_seed')
  if seed is None:
    return None
  num_positions = int(np.prod(input_config['index_dims']))
  return pe.permutation(num_positions, seed)


def _position_kwargs(input_config: InputConfig) -> dict[str, Any]:
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


def check_shape(batch: Batch, key: str, shape: tuple[int, ...]) -> jax.Array:
  """`batch[key]`, after checking that it is `[batch, *shape]`."""
  x = batch[key]
  if tuple(x.shape[1:]) != shape:
    raise ValueError(f'batch[{key!r}] has shape {x.shape}; expected '
                     f'[batch, {", ".join(map(str, shape))}].')
  return x


class _Input:
  """Defaults: no parts; the example batch from `entry_shapes`."""

  def parts(self, batch: Batch) -> Optional[grid_byte_array.GridByteArray]:
    del batch
    return None

  @classmethod
  def entry_shapes(cls, input_config: InputConfig
                   ) -> dict[str, tuple[int, ...]]:
    """Batch key -> the entry's shape without the batch axis."""
    raise NotImplementedError

  @classmethod
  def example_batch(cls, input_config: InputConfig, batch_size: int
                    ) -> dict[str, jax.ShapeDtypeStruct]:
    return {key: jax.ShapeDtypeStruct((batch_size, *shape), jnp.float32)
            for key, shape in cls.entry_shapes(input_config).items()}


class GridInput(_Input):
  """Reads `batch[key]` `[B, *index_dims, C_raw]` through a `GridAdapter`."""

  def __init__(self, input_config: InputConfig):
    self._shape = tuple(self.entry_shapes(input_config).values())[0]
    self._key = input_config['key']
    self._adapter = adapters.GridAdapter(
        input_config['index_dims'],
        permutation=input_permutation(input_config),
        **_position_kwargs(input_config))

  @property
  def num_channels(self) -> int:
    return self._adapter.num_channels(self._shape[-1])

  def _image(self, batch: Batch) -> jax.Array:
    x = batch[self._key]
    if x.shape[-1] != self._shape[-1]:
      raise ValueError(
          f'batch[{self._key!r}] has shape {x.shape}; expected '
          f'{self._shape[-1]} channels per position.')
    return x

  def parts(self, batch: Batch) -> Optional[grid_byte_array.GridByteArray]:
    if not self._adapter.has_parts:
      return None
    return self._adapter.parts(self._image(batch))

  def __call__(self, batch: Batch, *, is_training: bool):
    del is_training  # No augmentation in the grid adapter.
    return self._adapter(self._image(batch)), None

  @classmethod
  def entry_shapes(cls, input_config: InputConfig):
    return {input_config['key']: (
        *(int(n) for n in input_config['index_dims']),
        int(input_config['raw_channels']))}


class RawAudioInput(_Input):
  """Raw audio `batch[key]` `[B, num_samples]` in patches of samples.

  Fields: `key` ('audio'), `num_samples` (61,440), `samples_per_patch`
  (128: 480 tokens), position fields as for 'grid' (`num_bands`,
  `max_resolution`: mu of the patch axis, default the number of patches).
  C = samples_per_patch + 2 * num_bands + 1.
  """

  def __init__(self, input_config: InputConfig):
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
    x = check_shape(batch, self._key, (self._num_samples,))
    return self._adapter(x[..., None])  # [B, M, C]

  def __call__(self, batch: Batch, *, is_training: bool):
    del is_training  # Augmentation happens in the data pipeline.
    return self.byte_array(batch), None

  @classmethod
  def entry_shapes(cls, input_config: InputConfig):
    return {input_config.get('key', 'audio'): (
        int(input_config['num_samples']),)}


class MelInput(_Input):
  """A spectrogram `batch[key]` `[B, frames, bins]`, one input per value.

  Fields: `key` ('mel'), `index_dims` ((96, 50): 4,800 inputs), position
  fields as for 'grid' (2D Fourier features of (time, mel band); mu per
  axis defaults to the grid). C = 1 + 2 * (2 * num_bands + 1).
  """

  def __init__(self, input_config: InputConfig):
    self._key = input_config.get('key', 'mel')
    self._index_dims = tuple(int(n) for n in input_config['index_dims'])
    self._adapter = adapters.GridAdapter(
        self._index_dims, name='mel_grid', **_position_kwargs(input_config))

  @property
  def num_channels(self) -> int:
    return self._adapter.num_channels(1)

  def _values(self, batch: Batch) -> jax.Array:
    """`[B, frames, bins, 1]`: one raw channel per grid point."""
    return check_shape(batch, self._key, self._index_dims)[..., None]

  def byte_array(self, batch: Batch) -> jax.Array:
    return self._adapter(self._values(batch))  # [B, M, C]

  def parts(self, batch: Batch) -> Optional[grid_byte_array.GridByteArray]:
    if not self._adapter.has_parts:
      return None
    return self._adapter.parts(self._values(batch))

  def __call__(self, batch: Batch, *, is_training: bool):
    del is_training
    return self.byte_array(batch), None

  @classmethod
  def entry_shapes(cls, input_config: InputConfig):
    return {input_config.get('key', 'mel'): tuple(
        int(n) for n in input_config['index_dims'])}


class VideoInput(_Input):
  """Video `batch[key]` `[B, T, H, W, 3]` in space-time patches.

  Fields: `key` ('video'), `index_dims` ((32, 224, 224): T, H, W),
  `patch_shape` ((2, 8, 8): 12,544 tokens of 384 values), position fields
  as for 'grid' (3D Fourier features of the patch grid's (t, h, w) in
  [-1, 1]; mu per axis defaults to the patch grid, (16, 28, 28)).
  C = prod(patch_shape) * 3 + 3 * (2 * num_bands + 1).
  """

  def __init__(self, input_config: InputConfig):
    self._key = input_config.get('key', 'video')
    self._index_dims = tuple(int(n) for n in input_config['index_dims'])
    self._adapter = adapters.PatchAdapter(
        self._index_dims, input_config.get('patch_shape', (2, 8, 8)),
        name='video_patches', **_position_kwargs(input_config))

  @property
  def num_channels(self) -> int:
    return self._adapter.num_channels(3)

  def byte_array(self, batch: Batch) -> jax.Array:
    x = check_shape(batch, self._key, (*self._index_dims, 3))
    return self._adapter(x)  # [B, M, C]

  def __call__(self, batch: Batch, *, is_training: bool):
    del is_training
    return self.byte_array(batch), None

  @classmethod
  def entry_shapes(cls, input_config: InputConfig):
    return {input_config.get('key', 'video'): (
        *(int(n) for n in input_config['index_dims']), 3)}


_AUDIO_INPUTS = {'raw_audio': RawAudioInput, 'mel': MelInput}


class AudioVideoInput(_Input):
  """Audio (raw or mel) and video tokens fused by a `MultimodalAdapter`.

  Fields: `audio` (an input config of type 'raw_audio' or 'mel'), `video`
  (type 'video'), `num_modality_channels` (4), `video_dropout` (0.3: the
  probability that an example's video tokens are all masked out in
  training), `audio_dropout` (0.0; the tuned mel + video run's 0.1
  "spectrogram dropout", applied the same way). Tokens: audio, then video.
  C = max(C_audio, C_video) + num_modality_channels.
  """

  def __init__(self, input_config: InputConfig):
    self._audio = self._audio_class(input_config)(input_config['audio'])
    self._video = VideoInput(input_config['video'])
    self._fusion = adapters.MultimodalAdapter(
        ('audio', 'video'),
        num_modality_channels=input_config.get('num_modality_channels', 4),
        dropout_rates={'audio': input_config.get('audio_dropout', 0.0),
                       'video': input_config.get('video_dropout', 0.3)},
        name='audio_video_fusion')

  @staticmethod
  def _audio_class(input_config: InputConfig) -> type[_Input]:
    audio_type = input_config['audio'].get('type')
    if audio_type not in _AUDIO_INPUTS:
      raise ValueError(f'config.model.input.audio.type must be one of '
                       f'{sorted(_AUDIO_INPUTS)}, got {audio_type!r}.')
    if input_config['video'].get('type', 'video') != 'video':
      raise ValueError(f"config.model.input.video.type must be 'video', got "
                       f'{input_config["video"].get("type")!r}.')
    return _AUDIO_INPUTS[audio_type]

  @property
  def num_channels(self) -> int:
    return self._fusion.num_channels({'audio': self._audio.num_channels,
                                      'video': self._video.num_channels})

  def __call__(self, batch: Batch, *, is_training: bool):
    return self._fusion({'audio': self._audio.byte_array(batch),
                         'video': self._video.byte_array(batch)},
                        is_training=is_training)

  @classmethod
  def entry_shapes(cls, input_config: InputConfig):
    audio = cls._audio_class(input_config).entry_shapes(input_config['audio'])
    return {**audio, **VideoInput.entry_shapes(input_config['video'])}


class PointsInput(_Input):
  """Reads `batch[key]` `[B, P, 3]` through a `PointCloudAdapter`."""

  def __init__(self, input_config: InputConfig):
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

  @classmethod
  def entry_shapes(cls, input_config: InputConfig):
    num_points = input_config.get('num_points')
    if num_points is None or num_points < 1:
      raise ValueError(f'config.model.input.num_points must be positive '
                       f'for an example batch, got {num_points!r}.')
    return {input_config['key']: (int(num_points), 3)}


class ImagePreprocessorInput(GridInput):
  """Reads images `batch[key]` `[B, H, W, C_raw]` through one of
  `preprocessors.py`'s adapters (types 'conv1x1_learned', 'conv_stem');
  the example batch is `GridInput`'s."""

  def __init__(self, input_config: InputConfig):  # pylint: disable=super-init-not-called
    self._key = input_config['key']
    image_shape = tuple(self.entry_shapes(input_config).values())[0]
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

  @property
  def num_channels(self) -> int:
    return self._adapter.num_channels

  def parts(self, batch: Batch) -> Optional[grid_byte_array.GridByteArray]:
    del batch
    return None

  def __call__(self, batch: Batch, *, is_training: bool):
    del is_training  # Augmentation happens in the data pipeline.
    return self._adapter(batch[self._key]), None


# `config.model.input.type` -> its adapter. A new modality registers here.
INPUTS: dict[str, type[InputAdapter]] = {
    'grid': GridInput,
    'raw_audio': RawAudioInput,
    'mel': MelInput,
    'video': VideoInput,
    'audio_video': AudioVideoInput,
    'points': PointsInput,
    'conv1x1_learned': ImagePreprocessorInput,
    'conv_stem': ImagePreprocessorInput,
}


def input_class(input_config: InputConfig) -> type[InputAdapter]:
  """The adapter class that `input_config.type` names."""
  kind = input_config.get('type')
  if kind not in INPUTS:
    raise ValueError(f'config.model.input.type must be one of '
                     f'{sorted(INPUTS)}, got {kind!r}.')
  return INPUTS[kind]
