"""Input types: from a task's batch to the encoder's byte array `[B, M, C]`.

`config.model.input.type` names one class of `INPUTS`, the whole input
type: the batch entries it reads (`entry_shapes`), its width C and its byte
array with an optional mask `[B, M]`, or the byte array in parts where a
grid allows. Position features are concatenated, never added. The Haiku
modules they use come first.
"""

from typing import Any, Mapping, Optional, Sequence

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from perceiver_jax import checks
from perceiver_jax.model import grid_byte_array
from perceiver_jax.model import position_encoding as pe

Batch = Mapping[str, jax.Array]
InputConfig = Mapping[str, Any]
POSITION_ENCODINGS = ('fourier', 'learned', 'none')
BATCH_NORM_EPS = 1e-5  # torch.nn.BatchNorm2d's default, the checkpoints'.


def check_shape(batch: Batch, key: str, shape: tuple[int, ...]) -> jax.Array:
  """`batch[key]`, after checking that it is `[batch, *shape]`."""
  x = batch[key]
  if tuple(x.shape[1:]) != shape:
    raise ValueError(f'batch[{key!r}] has shape {x.shape}; expected '
                     f'[batch, {", ".join(map(str, shape))}].')
  return x


def input_permutation(input_config: InputConfig) -> Optional[np.ndarray]:
  """The fixed input permutation named by `permutation_seed`, or None."""
  seed = input_config.get('permutation_seed')
  if seed is None:
    return None
  return pe.permutation(int(np.prod(input_config['index_dims'])), seed)


class GridAdapter(hk.Module):
  """Maps `[B, *index_dims, C_raw]` to `[B, M, C_raw + position channels]`.

  Positions are those of the grid as given (for a random crop resized to a
  fixed size: crop-relative); a `permutation` `[M]` reorders the positions
  after the features are concatenated, so each input keeps its own.
  """

  def __init__(self,
               index_dims: Sequence[int],
               *,
               position_encoding: str = 'fourier',
               num_bands: int = 64,
               max_resolution: Optional[Sequence[float]] = None,
               learned_position_channels: int = 128,
               learned_position_init_scale: float = 1.0,
               permutation: Optional[np.ndarray] = None,
               name: Optional[str] = 'grid_adapter'):
    super().__init__(name=name)
    # Validated, not cast: int() would silently truncate a size of 2.5.
    self._index_dims = pe.check_index_dims(index_dims)
    self._position_encoding = checks.one_of(
        position_encoding, 'position_encoding', POSITION_ENCODINGS)
    self._num_positions = int(np.prod(self._index_dims))
    self._position_channels = (learned_position_channels if
                               position_encoding == 'learned' else 0)
    if position_encoding == 'fourier':
      # Computed once on the host: a constant of the program.
      self._fourier = pe.fourier_grid_features(self._index_dims, num_bands,
                                               max_resolution)
      self._position_channels = self._fourier.shape[-1]
    self._fourier_tables = None  # Split by `parts`, when first needed.
    self._learned_channels = learned_position_channels
    self._learned_init_scale = learned_position_init_scale
    self._permutation = permutation
    if permutation is not None:
      permutation = self._permutation = np.asarray(permutation)
      # Integer indices only: floats would fail as indices, booleans act as
      # a mask.
      if (permutation.ndim != 1 or
          not np.issubdtype(permutation.dtype, np.integer) or
          sorted(permutation.tolist()) != list(range(self._num_positions))):
        raise ValueError(
            f'permutation must be a permutation of range('
            f'{self._num_positions}) (the grid {self._index_dims}) as '
            f'integers, got an array of shape {permutation.shape} and dtype '
            f'{permutation.dtype}.')

  def num_channels(self, raw_channels: int) -> int:
    return raw_channels + self._position_channels

  @property
  def has_parts(self) -> bool:
    return self._position_encoding == 'fourier' and self._permutation is None

  def _fourier_features(self, tables: Any, dtype: jnp.dtype) -> Any:
    # The barrier (an identity) keeps XLA from constant-folding the work
    # downstream of the constant features (e.g. the input LayerNorm's sums
    # at batch 1), which makes compiles of large grids slow.
    return jax.lax.optimization_barrier(
        jax.tree.map(lambda t: jnp.asarray(t, dtype), tables))

  def parts(self, x: jax.Array) -> grid_byte_array.GridByteArray:
    """`__call__(x)` as content and per-axis Fourier tables."""
    if not self.has_parts:
      raise ValueError(
          f'GridAdapter.parts needs Fourier position features and no '
          f'permutation; this adapter has position_encoding='
          f'{self._position_encoding!r} and '
          f'{"a" if self._permutation is not None else "no"} permutation.')
    if self._fourier_tables is None:
      self._fourier_tables = pe.axis_tables(
          self._fourier.reshape(*self._index_dims, -1))
    content = x.reshape(x.shape[0], self._num_positions, x.shape[-1])
    return grid_byte_array.GridByteArray(
        content, self._fourier_features(self._fourier_tables, x.dtype))

  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps `[B, *index_dims, C_raw]` to the byte array `[B, M, C]`."""
    batch_size = x.shape[0]
    inputs = x.reshape(batch_size, self._num_positions, x.shape[-1])
    if self._position_encoding == 'fourier':
      positions = jnp.broadcast_to(
          self._fourier_features(self._fourier, x.dtype),
          (batch_size, *self._fourier.shape))
    elif self._position_encoding == 'learned':
      positions = pe.LearnedPositions(
          self._num_positions, self._learned_channels,
          self._learned_init_scale)(batch_size).astype(x.dtype)
    else:
      positions = None
    if positions is not None:
      inputs = jnp.concatenate([inputs, positions], axis=-1)  # [B, M, C]
    if self._permutation is not None:
      inputs = inputs[:, self._permutation]
    return inputs


def _patch_grid(dims: Sequence[int], patch_shape: Sequence[int]
                ) -> tuple[int, ...]:
  """The grid of `patch_shape` patches on `dims`, after checking they fit."""
  dims = tuple(int(n) for n in dims)
  if len(dims) != len(patch_shape) or any(
      p < 1 or n % p for n, p in zip(dims, patch_shape)):
    raise ValueError(f'Cannot cut inputs of {dims} into patches: patch_shape '
                     f'{patch_shape} needs one size per axis, each dividing '
                     'it.')
  return tuple(n // p for n, p in zip(dims, patch_shape))


def patchify(x: jax.Array, patch_shape: Sequence[int]) -> jax.Array:
  """`[B, *dims, C]` -> patches `[B, *grid, prod(patch_shape) * C]`, each
  flattened in row-major order of (offsets, channel), e.g. (t, h, w, c)."""
  patch_shape = tuple(int(p) for p in patch_shape)
  dims = tuple(x.shape[1:-1])
  grid = _patch_grid(dims, patch_shape)
  split = [x.shape[0]]
  for g, p in zip(grid, patch_shape):
    split += [g, p]
  x = x.reshape(*split, x.shape[-1])  # [B, g1, p1, ..., gd, pd, C]
  num_dims = len(dims)
  order = ([0] + [1 + 2 * i for i in range(num_dims)] +
           [2 + 2 * i for i in range(num_dims)] + [1 + 2 * num_dims])
  x = x.transpose(order)  # [B, g1..gd, p1..pd, C]
  return x.reshape(x.shape[0], *grid, -1)


class PatchAdapter(hk.Module):
  """`GridAdapter` on the grid of non-overlapping patches: `[B, *input_dims,
  C_raw]` -> `[B, prod(grid), prod(patch_shape) * C_raw + positions]`."""

  def __init__(self, input_dims: Sequence[int], patch_shape: Sequence[int],
               *, name: Optional[str] = 'patch_adapter', **grid_kwargs):
    super().__init__(name=name)
    self._patch_shape = tuple(int(p) for p in patch_shape)
    grid = _patch_grid(input_dims, self._patch_shape)
    self._patch_size = int(np.prod(self._patch_shape))
    self._grid_adapter = GridAdapter(grid, name='grid_adapter', **grid_kwargs)

  def num_channels(self, raw_channels: int) -> int:
    return self._grid_adapter.num_channels(self._patch_size * raw_channels)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self._grid_adapter(patchify(x, self._patch_shape))


class MultimodalAdapter(hk.Module):
  """Fuses `{name: [B, M_i, C_i]}`, zero-padded to the widest, each with
  its learned modality embedding: `[B, sum M_i, max C_i + embedding]`.

  Modality dropout (training): with probability `dropout_rates[name]` an
  example's tokens of that modality are masked out (a zeroed token would
  still take attention weight); never all modalities of an example.
  """

  def __init__(self,
               modalities: Sequence[str],
               *,
               num_modality_channels: int = 4,
               dropout_rates: Optional[dict[str, float]] = None,
               name: Optional[str] = 'multimodal_adapter'):
    super().__init__(name=name)
    self._modalities = tuple(modalities)
    if num_modality_channels < 0:
      raise ValueError(f'num_modality_channels must be non-negative, got '
                       f'{num_modality_channels}.')
    self._num_modality_channels = int(num_modality_channels)
    self._dropout_rates = {m: float((dropout_rates or {}).get(m, 0.0))
                           for m in self._modalities}
    for modality, rate in self._dropout_rates.items():
      if not 0.0 <= rate < 1.0:
        raise ValueError(f'Dropout rate of {modality!r} must be in [0, 1), '
                         f'got {rate}.')

  def num_channels(self, channels: dict[str, int]) -> int:
    return max(channels[m] for m in self._modalities) + (
        self._num_modality_channels)

  def __call__(self, inputs: dict[str, jax.Array], *, is_training: bool
               ) -> tuple[jax.Array, Optional[jax.Array]]:
    """The fused `[B, M, C]` and mask `[B, M]` (None: nothing dropped)."""
    arrays = [inputs[m] for m in self._modalities]
    batch_size = arrays[0].shape[0]
    width = max(a.shape[-1] for a in arrays)
    parts = []
    for modality, array in zip(self._modalities, arrays):
      array = jnp.pad(array, ((0, 0), (0, 0), (0, width - array.shape[-1])))
      if self._num_modality_channels:
        embedding = hk.get_parameter(
            f'{modality}_embedding', [self._num_modality_channels],
            init=hk.initializers.TruncatedNormal(stddev=0.02))
        embedding = jnp.broadcast_to(
            embedding.astype(array.dtype),
            (batch_size, array.shape[1], self._num_modality_channels))
        array = jnp.concatenate([array, embedding], axis=-1)
      parts.append(array)
    fused = jnp.concatenate(parts, axis=1)  # [B, M, C]
    if not is_training or not any(self._dropout_rates.values()):
      return fused, None
    keeps = []
    for modality in self._modalities:
      rate = self._dropout_rates[modality]
      keeps.append(jax.random.bernoulli(hk.next_rng_key(), 1.0 - rate,
                                        (batch_size,)) if rate else
                   jnp.ones((batch_size,), bool))
    kept_any = jnp.any(jnp.stack(keeps), axis=0)
    keeps[0] = keeps[0] | ~kept_any  # Never drop every modality.
    mask = jnp.concatenate(
        [jnp.broadcast_to(keep[:, None], (batch_size, array.shape[1]))
         for keep, array in zip(keeps, arrays)], axis=1)  # [B, M]
    return fused, mask


def _image_shape(shape: Sequence[int]) -> tuple[int, int, int]:
  shape = tuple(shape)
  if len(shape) != 3:
    raise ValueError(f'image_shape must be (height, width, channels), got '
                     f'{shape!r}.')
  return tuple(checks.positive_int(n, 'image_shape entries') for n in shape)


class Conv1x1LearnedAdapter(hk.Module):
  """The released "learned" classifier's preprocessor: a 1x1 convolution
  of the pixels (`conv1x1`), then trainable positions through a Linear
  (`position_projection`): `[B, H * W, out_channels + projected_channels]`."""

  def __init__(self, image_shape: Sequence[int], *, out_channels: int = 256,
               position_channels: int = 256, projected_channels: int = 256,
               name: Optional[str] = 'conv1x1_learned_adapter'):
    super().__init__(name=name)
    self._image_shape = _image_shape(image_shape)
    self._out_channels = checks.positive_int(out_channels, 'out_channels')
    self._position_channels = checks.positive_int(position_channels,
                                                  'position_channels')
    self._projected_channels = checks.positive_int(projected_channels,
                                                   'projected_channels')

  def num_channels(self, raw_channels: int) -> int:
    del raw_channels  # The convolution sets the width.
    return self._out_channels + self._projected_channels

  def __call__(self, x: jax.Array) -> jax.Array:
    batch_size, height, width, raw_channels = x.shape
    pixels = x.reshape(batch_size, height * width, raw_channels)
    content = hk.Linear(self._out_channels, name='conv1x1')(pixels)
    positions = pe.LearnedPositions(
        height * width, self._position_channels, init_scale=0.02,
        name='positions')(batch_size).astype(x.dtype)
    positions = hk.Linear(self._projected_channels,
                          name='position_projection')(positions)
    return jnp.concatenate([content, positions], axis=-1)  # [B, M, C]


def conv_stem_grid(height: int, width: int) -> tuple[int, int]:
  """The grid after `ConvStemAdapter`'s convolution and pool."""
  def one(n):
    return ((n + 2 * 3 - 7) // 2 + 1 - 3) // 2 + 1
  return one(height), one(width)


class ConvStemAdapter(hk.Module):
  """The released "conv" classifier's preprocessor: conv 7x7/2 (no bias),
  batch norm, ReLU, max pool 3x3/2, Fourier features of the pooled grid.

  The batch norm's `mean` and `var` (the checkpoint's) are fixed: no
  gradient, no weight decay (`optim.weight_decay_mask`); scale and offset
  train.
  """

  def __init__(self, image_shape: Sequence[int], *, out_channels: int = 64,
               num_bands: int = 64,
               max_resolution: Optional[Sequence[float]] = None,
               name: Optional[str] = 'conv_stem_adapter'):
    super().__init__(name=name)
    image_shape = _image_shape(image_shape)
    grid = conv_stem_grid(*image_shape[:2])
    if min(grid) < 1:
      raise ValueError(f'images of {image_shape[:2]} pixels are too '
                       'small for the conv stem (at least 5 x 5).')
    self._out_channels = checks.positive_int(out_channels, 'out_channels')
    self._fourier = pe.fourier_grid_features(grid, num_bands, max_resolution)

  def num_channels(self, raw_channels: int) -> int:
    del raw_channels  # The convolution sets the width.
    return self._out_channels + self._fourier.shape[-1]

  def __call__(self, x: jax.Array) -> jax.Array:
    features = hk.Conv2D(
        self._out_channels, kernel_shape=7, stride=2,
        padding=((3, 3), (3, 3)), with_bias=False, name='conv')(x)
    with hk.experimental.name_scope('batch_norm'):
      shape = [self._out_channels]
      # No gradient: a step could make `var` negative.
      mean = jax.lax.stop_gradient(
          hk.get_parameter('mean', shape, init=jnp.zeros))
      var = jax.lax.stop_gradient(
          hk.get_parameter('var', shape, init=jnp.ones))
      scale = hk.get_parameter('scale', shape, init=jnp.ones)
      offset = hk.get_parameter('offset', shape, init=jnp.zeros)
    features = ((features - mean) * jax.lax.rsqrt(var + BATCH_NORM_EPS) *
                scale + offset)
    features = hk.max_pool(jax.nn.relu(features), window_shape=(1, 3, 3, 1),
                           strides=(1, 2, 2, 1), padding='VALID')
    batch_size = x.shape[0]
    content = features.reshape(batch_size, -1, self._out_channels)
    positions = jnp.broadcast_to(jnp.asarray(self._fourier, x.dtype),
                                 (batch_size, *self._fourier.shape))
    return jnp.concatenate([content, positions], axis=-1)  # [B, M, C]


# ---------------------------------------------------------------------------
# Input types.


def _max_resolution(input_config: InputConfig) -> Optional[tuple[float, ...]]:
  max_resolution = input_config.get('max_resolution')
  return None if max_resolution is None else tuple(max_resolution)


def _position_kwargs(input_config: InputConfig) -> dict[str, Any]:
  return dict(
      position_encoding=input_config.get('position_encoding', 'fourier'),
      num_bands=input_config.get('num_bands', 64),
      max_resolution=_max_resolution(input_config),
      learned_position_channels=input_config.get(
          'learned_position_channels', 128),
      learned_position_init_scale=input_config.get(
          'learned_position_init_scale', 1.0))


def _dims(input_config: InputConfig) -> tuple[int, ...]:
  return tuple(int(n) for n in input_config['index_dims'])


class Input:
  """An input type: sets `adapter` in `__init__`, gives `entry_shapes`."""

  adapter: Any
  adds_channel_axis = False  # The entry has no channel axis: one is added.

  def __init__(self, input_config: InputConfig):
    self._shapes = self.entry_shapes(input_config)

  @classmethod
  def entry_shapes(cls, input_config: InputConfig
                   ) -> dict[str, tuple[int, ...]]:
    """Batch key -> the entry's shape without the batch axis."""
    raise NotImplementedError

  @property
  def num_channels(self) -> int:
    """C, the byte array's channels."""
    (shape,) = self._shapes.values()
    return self.adapter.num_channels(
        1 if self.adds_channel_axis else shape[-1])

  def entry(self, batch: Batch) -> jax.Array:
    """The one entry read, its shape checked."""
    (key, shape), = self._shapes.items()
    x = check_shape(batch, key, shape)
    return x[..., None] if self.adds_channel_axis else x

  def parts(self, batch: Batch) -> Optional[grid_byte_array.GridByteArray]:
    """The byte array in parts (no mask), or None where it has none."""
    del batch
    return None

  def __call__(self, batch: Batch, *, is_training: bool
               ) -> tuple[jax.Array, Optional[jax.Array]]:
    """The byte array `[B, M, C]` and a mask `[B, M]` (or None)."""
    del is_training  # Augmentation happens in the data pipeline.
    return self.adapter(self.entry(batch)), None


class _ImageInput(Input):
  """Reads `batch[key]` `[B, *index_dims, raw_channels]`."""

  @property
  def image_shape(self) -> tuple[int, ...]:
    return tuple(self._shapes.values())[0]

  @classmethod
  def entry_shapes(cls, input_config: InputConfig):
    return {input_config['key']: (*_dims(input_config),
                                  int(input_config['raw_channels']))}


class GridInput(_ImageInput):
  """Images with position features. Fields: `key`, `index_dims`,
  `raw_channels`, position fields (`position_encoding`, `num_bands`,
  `max_resolution`, `learned_position_channels`,
  `learned_position_init_scale`) and `permutation_seed` (None: none)."""

  def __init__(self, input_config: InputConfig, name: str = 'grid_adapter'):
    super().__init__(input_config)
    self.adapter = GridAdapter(
        _dims(input_config), permutation=input_permutation(input_config),
        name=name, **_position_kwargs(input_config))

  def parts(self, batch: Batch) -> Optional[grid_byte_array.GridByteArray]:
    return self.adapter.parts(self.entry(batch)) if (
        self.adapter.has_parts) else None


class MelInput(GridInput):
  """A spectrogram `batch[key]` `[B, frames, bins]`, one input per value
  with 2D position features. Fields: `key` ('mel'), `index_dims` ((96, 50)),
  position fields as for 'grid'. C = 1 + 2 (2K + 1)."""

  adds_channel_axis = True

  def __init__(self, input_config: InputConfig):
    super().__init__(input_config, name='mel_grid')

  @classmethod
  def entry_shapes(cls, input_config: InputConfig):
    return {input_config.get('key', 'mel'): _dims(input_config)}


class RawAudioInput(Input):
  """Raw audio `batch[key]` `[B, num_samples]` in patches of samples.
  Fields: `key` ('audio'), `num_samples` (61,440), `samples_per_patch`
  (128: 480 tokens), position fields as for 'grid' (mu defaults to the
  number of patches). C = samples_per_patch + 2K + 1."""

  adds_channel_axis = True

  def __init__(self, input_config: InputConfig):
    super().__init__(input_config)
    self.adapter = PatchAdapter(
        (int(input_config['num_samples']),),
        (int(input_config.get('samples_per_patch', 128)),),
        name='audio_patches', **_position_kwargs(input_config))

  @classmethod
  def entry_shapes(cls, input_config: InputConfig):
    return {input_config.get('key', 'audio'): (
        int(input_config['num_samples']),)}


class VideoInput(Input):
  """Video `batch[key]` `[B, T, H, W, 3]` in space-time patches. Fields:
  `key` ('video'), `index_dims` (T, H, W), `patch_shape` ((2, 8, 8)),
  position fields as for 'grid' (3D, of the patch grid).
  C = prod(patch_shape) * 3 + 3 (2K + 1)."""

  def __init__(self, input_config: InputConfig):
    super().__init__(input_config)
    self.adapter = PatchAdapter(
        _dims(input_config), input_config.get('patch_shape', (2, 8, 8)),
        name='video_patches', **_position_kwargs(input_config))

  @classmethod
  def entry_shapes(cls, input_config: InputConfig):
    return {input_config.get('key', 'video'): (*_dims(input_config), 3)}


class AudioVideoInput(Input):
  """Audio (an input config `audio` of type 'raw_audio' or 'mel') and video
  (`video`, type 'video') tokens, fused by a `MultimodalAdapter`: audio
  first. Fields also `num_modality_channels` (4), `video_dropout` (0.3) and
  `audio_dropout` (0.0; the tuned mel + video run's spectrogram dropout)."""

  def __init__(self, input_config: InputConfig):
    super().__init__(input_config)
    self._audio = self._audio_class(input_config)(input_config['audio'])
    self._video = VideoInput(input_config['video'])
    self.adapter = MultimodalAdapter(
        ('audio', 'video'),
        num_modality_channels=input_config.get('num_modality_channels', 4),
        dropout_rates={'audio': input_config.get('audio_dropout', 0.0),
                       'video': input_config.get('video_dropout', 0.3)},
        name='audio_video_fusion')

  @staticmethod
  def _audio_class(input_config: InputConfig) -> type[Input]:
    checks.one_of(input_config['video'].get('type', 'video'),
                  'config.model.input.video.type', ('video',))
    return INPUTS[checks.one_of(input_config['audio'].get('type'),
                                'config.model.input.audio.type',
                                ('mel', 'raw_audio'))]

  @property
  def num_channels(self) -> int:
    return self.adapter.num_channels({'audio': self._audio.num_channels,
                                      'video': self._video.num_channels})

  def __call__(self, batch: Batch, *, is_training: bool):
    return self.adapter(
        {name: part(batch, is_training=is_training)[0]
         for name, part in (('audio', self._audio), ('video', self._video))},
        is_training=is_training)

  @classmethod
  def entry_shapes(cls, input_config: InputConfig):
    audio = cls._audio_class(input_config).entry_shapes(input_config['audio'])
    return {**audio, **VideoInput.entry_shapes(input_config['video'])}


class PointsInput(Input):
  """Point clouds `batch[key]` `[B, P, 3]` in [-1, 1]: each point's Fourier
  features (which begin with the coordinates), C = 3 (2K + 1). Fields:
  `key`, `num_bands` (64), `max_resolution` (mu per axis, 3 values),
  `num_points` (P of the example batch; any P is read). No parameters."""

  def __init__(self, input_config: InputConfig):  # pylint: disable=super-init-not-called
    self._key = input_config['key']
    self._num_bands = input_config.get('num_bands', 64)
    self._max_resolution = tuple(float(mu) for mu in
                                 input_config['max_resolution'])
    checks.positive_int(self._num_bands, 'num_bands',
                        integer_types=(int, np.integer))

  @property
  def num_channels(self) -> int:
    return pe.num_fourier_channels(3, self._num_bands)

  def __call__(self, batch: Batch, *, is_training: bool):
    del is_training  # Augmentation happens in the data pipeline.
    points = batch[self._key]
    if points.ndim != 3 or points.shape[-1] != 3:
      raise ValueError(f'batch[{self._key!r}] has shape {points.shape}; '
                       'expected [batch, num_points, 3].')
    return pe.fourier_features(points, int(self._num_bands),
                               self._max_resolution).astype(points.dtype), None

  @classmethod
  def entry_shapes(cls, input_config: InputConfig):
    num_points = input_config.get('num_points')
    if num_points is None or num_points < 1:
      raise ValueError(f'config.model.input.num_points must be positive '
                       f'for an example batch, got {num_points!r}.')
    return {input_config['key']: (int(num_points), 3)}


class Conv1x1LearnedInput(_ImageInput):
  """Images through `Conv1x1LearnedAdapter`. Fields: `key`, `index_dims`
  (H, W), `raw_channels`, `out_channels`, `position_channels`,
  `projected_channels` (256 each)."""

  def __init__(self, input_config: InputConfig):
    super().__init__(input_config)
    self.adapter = Conv1x1LearnedAdapter(
        self.image_shape,
        out_channels=input_config.get('out_channels', 256),
        position_channels=input_config.get('position_channels', 256),
        projected_channels=input_config.get('projected_channels', 256))


class ConvStemInput(_ImageInput):
  """Images through `ConvStemAdapter`. Fields: `key`, `index_dims` (H, W),
  `raw_channels`, `out_channels` (64), `num_bands`, `max_resolution` (of
  the pooled grid)."""

  def __init__(self, input_config: InputConfig):
    super().__init__(input_config)
    self.adapter = ConvStemAdapter(
        self.image_shape,
        out_channels=input_config.get('out_channels', 64),
        num_bands=input_config.get('num_bands', 64),
        max_resolution=_max_resolution(input_config))


# `config.model.input.type` -> its input type. A new input type registers here.
INPUTS: dict[str, type[Input]] = {
    'grid': GridInput,
    'raw_audio': RawAudioInput,
    'mel': MelInput,
    'video': VideoInput,
    'audio_video': AudioVideoInput,
    'points': PointsInput,
    'conv1x1_learned': Conv1x1LearnedInput,
    'conv_stem': ConvStemInput,
}


def input_class(input_config: InputConfig) -> type[Input]:
  """The input type that `input_config.type` names."""
  return INPUTS[checks.one_of(input_config.get('type'),
                              'config.model.input.type', sorted(INPUTS))]


def make(input_config: InputConfig) -> Input:
  """The input type of `input_config`, built (inside a Haiku transform)."""
  return input_class(input_config)(input_config)
