"""Adapters: turn a modality's array into the Perceiver's byte array [B, M, C].

Each adapter flattens its input into M positions of raw channels, then
concatenates (never adds) position features, and may permute the positions.
`num_channels(raw_channels)` gives C without running the adapter, so the
model can be built for (and check) the right input width.

- `GridAdapter`: one input per grid point (pixels, mel bins).
- `PatchAdapter`: non-overlapping patches of a grid (128-sample audio
  patches, 2x8x8 video patches), position features of the patch grid.
- `MultimodalAdapter`: several byte arrays fused into one, with learned
  modality embeddings and per-example modality dropout (audio + video).
"""

from typing import Optional, Sequence

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from perceiver_jax.model import grid_byte_array
from perceiver_jax.model import position_encoding as pe

POSITION_ENCODINGS = ('fourier', 'learned', 'none')


def _checked_permutation(permutation: np.ndarray,
                         index_dims: tuple[int, ...]) -> np.ndarray:
  """`permutation` as an integer array, checked to reorder the grid's M
  positions."""
  permutation = np.asarray(permutation)
  num_positions = int(np.prod(index_dims))
  # Integer indices only: floats equal to 0..M-1 would pass the check
  # below but fail as indices, and booleans would act as a mask.
  if (permutation.ndim != 1 or
      not np.issubdtype(permutation.dtype, np.integer) or
      sorted(permutation.tolist()) != list(range(num_positions))):
    raise ValueError(
        f'permutation must be a permutation of range({num_positions}) (the '
        f'grid {index_dims}) as integers, got an array of shape '
        f'{permutation.shape} and dtype {permutation.dtype}.')
  return permutation


def _check_grid_shape(x: jax.Array, dims: tuple[int, ...]) -> None:
  """Checks that `x` is `[batch, *dims, channels]`."""
  if x.ndim != len(dims) + 2 or tuple(x.shape[1:-1]) != dims:
    raise ValueError(f'Expected inputs of shape [batch, *{list(dims)}, '
                     f'channels], got {x.shape}.')


class GridAdapter(hk.Module):
  """Inputs on a regular grid (images, audio patches, video patches).

  Maps `[B, *index_dims, C_raw]` to `[B, prod(index_dims), C]` with
  `C = C_raw + position channels`. Positions are those of the grid as given
  (for a random crop resized to a fixed size: crop-relative coordinates).
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
    """Builds the adapter.

    Args:
      index_dims: grid size per axis, e.g. `(224, 224)`.
      position_encoding: 'fourier', 'learned' or 'none'.
      num_bands: K, Fourier bands per axis.
      max_resolution: mu per axis for Fourier features (default: the grid).
      learned_position_channels: width of learned positions.
      learned_position_init_scale: stddev of their truncated-normal init.
      permutation: optional `[M]` indices; the byte array's positions are
        reordered by it after the position features are concatenated, so
        every input keeps its own features.
      name: module name.
    """
    super().__init__(name=name)
    # Validated, not cast: int() would silently truncate a size of 2.5.
    self._index_dims = pe.check_index_dims(index_dims)
    if position_encoding not in POSITION_ENCODINGS:
      raise ValueError(f'position_encoding must be one of '
                       f'{POSITION_ENCODINGS}, got {position_encoding!r}.')
    self._position_encoding = position_encoding
    self._num_positions = int(np.prod(self._index_dims))
    if position_encoding == 'fourier':
      # Fixed features: computed once on the host, a constant in the graph.
      self._fourier = pe.fourier_grid_features(self._index_dims, num_bands,
                                               max_resolution)
    self._fourier_tables = None  # Split by `parts`, when first needed.
    self._learned_channels = learned_position_channels
    self._learned_init_scale = learned_position_init_scale
    if permutation is not None:
      permutation = _checked_permutation(permutation, self._index_dims)
    self._permutation = permutation

  @property
  def num_positions(self) -> int:
    """M."""
    return self._num_positions

  def num_position_channels(self) -> int:
    """Channels the position encoding adds."""
    if self._position_encoding == 'fourier':
      return self._fourier.shape[-1]
    if self._position_encoding == 'learned':
      return self._learned_channels
    return 0

  def num_channels(self, raw_channels: int) -> int:
    """C of the byte array for `raw_channels` channels per position."""
    return raw_channels + self.num_position_channels()

  @property
  def has_parts(self) -> bool:
    """Whether `parts` applies: Fourier features and no permutation."""
    return self._position_encoding == 'fourier' and self._permutation is None

  def _flatten(self, x: jax.Array) -> jax.Array:
    """`[B, *index_dims, C_raw]` -> `[B, M, C_raw]`, checking the shape."""
    _check_grid_shape(x, self._index_dims)
    return x.reshape(x.shape[0], self._num_positions, x.shape[-1])

  def parts(self, x: jax.Array) -> grid_byte_array.GridByteArray:
    """The byte array of `__call__(x)` as content `[B, M, C_raw]` and one
    Fourier feature table per grid axis (`position_encoding.axis_tables`).
    """
    if not self.has_parts:
      raise ValueError(
          f'GridAdapter.parts needs Fourier position features and no '
          f'permutation; this adapter has position_encoding='
          f'{self._position_encoding!r} and '
          f'{"a" if self._permutation is not None else "no"} permutation.')
    if self._fourier_tables is None:
      self._fourier_tables = pe.axis_tables(
          self._fourier.reshape(*self._index_dims, -1))
    # Barrier: see __call__.
    tables = jax.lax.optimization_barrier(
        tuple(jnp.asarray(t, x.dtype) for t in self._fourier_tables))
    return grid_byte_array.GridByteArray(self._flatten(x), tables)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps `[B, *index_dims, C_raw]` to the byte array `[B, M, C]`."""
    inputs = self._flatten(x)
    batch_size = x.shape[0]
    if self._position_encoding == 'fourier':
      # The features are a constant of the program. Without the barrier
      # (an identity) XLA constant-folds the work downstream of them, e.g.
      # the input LayerNorm's sums over their channels at batch 1, taking
      # seconds per fold for a 224x224 grid at compile time.
      features = jax.lax.optimization_barrier(
          jnp.asarray(self._fourier, x.dtype))
      positions = jnp.broadcast_to(features,
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


def patchify(x: jax.Array, patch_shape: Sequence[int]) -> jax.Array:
  """Cuts `[B, *dims, C]` into patches: `[B, *grid, prod(patch_shape) * C]`.

  `grid[i] = dims[i] // patch_shape[i]`; each patch's values are flattened
  in row-major order of (offset along axis 1, ..., offset along axis d,
  channel), e.g. (t, h, w, c) for video.
  """
  patch_shape = tuple(int(p) for p in patch_shape)
  dims = tuple(x.shape[1:-1])
  if len(dims) != len(patch_shape) or any(
      p < 1 or n % p for n, p in zip(dims, patch_shape)):
    raise ValueError(f'Cannot cut inputs of shape {x.shape} into patches of '
                     f'{patch_shape}: need one patch size per axis between '
                     f'batch and channels, each dividing that axis.')
  grid = tuple(n // p for n, p in zip(dims, patch_shape))
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
  """Inputs cut into non-overlapping patches on a grid (audio, video).

  Maps `[B, *input_dims, C_raw]` to `[B, prod(grid), prod(patch) * C_raw +
  position channels]`, where `grid = input_dims / patch_shape`; the
  position features are those of the patch grid (a `GridAdapter` on the
  patches), each axis spanning [-1, 1].
  """

  def __init__(self,
               input_dims: Sequence[int],
               patch_shape: Sequence[int],
               *,
               name: Optional[str] = 'patch_adapter',
               **grid_kwargs):
    """Builds the adapter.

    Args:
      input_dims: the input's size per axis, e.g. `(32, 224, 224)`.
      patch_shape: patch size per axis, each dividing `input_dims`.
      name: module name.
      **grid_kwargs: position encoding arguments of `GridAdapter`
        (`position_encoding`, `num_bands`, `max_resolution` (mu per axis of
        the patch grid; default: the grid), ...).
    """
    super().__init__(name=name)
    self._input_dims = tuple(int(n) for n in input_dims)
    self._patch_shape = tuple(int(p) for p in patch_shape)
    if len(self._input_dims) != len(self._patch_shape) or any(
        p < 1 or n % p for n, p in zip(self._input_dims, self._patch_shape)):
      raise ValueError(f'patch_shape {self._patch_shape} must have one size '
                       f'per axis of input_dims {self._input_dims}, each '
                       f'dividing it.')
    self._grid = tuple(n // p for n, p in zip(self._input_dims,
                                              self._patch_shape))
    self._patch_size = int(np.prod(self._patch_shape))
    self._grid_adapter = GridAdapter(self._grid, name='grid_adapter',
                                     **grid_kwargs)

  @property
  def grid(self) -> tuple[int, ...]:
    """Patches per axis."""
    return self._grid

  @property
  def num_positions(self) -> int:
    """M, the number of patches."""
    return self._grid_adapter.num_positions

  def num_channels(self, raw_channels: int) -> int:
    """C of the byte array for `raw_channels` channels per input point."""
    return self._grid_adapter.num_channels(self._patch_size * raw_channels)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps `[B, *input_dims, C_raw]` to the byte array `[B, M, C]`."""
    _check_grid_shape(x, self._input_dims)
    return self._grid_adapter(patchify(x, self._patch_shape))


class MultimodalAdapter(hk.Module):
  """Concatenates the byte arrays of several modalities (audio + video).

  Each modality's array `[B, M_i, C_i]` is zero-padded on the channel axis
  to `max_i C_i`, then gets its own learned modality embedding (a
  `[num_modality_channels]` vector, the same for all its tokens)
  concatenated, and the tokens are concatenated in the order of
  `modalities`: `[B, sum_i M_i, max_i C_i + num_modality_channels]`.

  Modality dropout (training only): with probability `dropout_rates[name]`
  an example loses all tokens of that modality. Dropped tokens are masked
  out (mask False), not zeroed: a zeroed token still carries its position
  features and modality embedding and still takes attention weight, so the
  model would see "video missing" tokens rather than no video; a masked
  token gets no attention weight, so the latents see exactly the remaining
  modalities. An example never loses every modality: if all would be
  dropped, the first modality is kept.
  """

  def __init__(self,
               modalities: Sequence[str],
               *,
               num_modality_channels: int = 4,
               dropout_rates: Optional[dict[str, float]] = None,
               name: Optional[str] = 'multimodal_adapter'):
    """Builds the adapter.

    Args:
      modalities: names, in token order, e.g. `('audio', 'video')`.
      num_modality_channels: width of the learned modality embeddings.
      dropout_rates: per modality, the probability of dropping all its
        tokens of an example during training (default 0).
      name: module name.
    """
    super().__init__(name=name)
    self._modalities = tuple(modalities)
    if len(self._modalities) < 2 or len(set(self._modalities)) != len(
        self._modalities):
      raise ValueError(f'modalities must be at least two distinct names, '
                       f'got {modalities!r}.')
    if num_modality_channels < 0:
      raise ValueError(f'num_modality_channels must be non-negative, got '
                       f'{num_modality_channels}.')
    self._num_modality_channels = int(num_modality_channels)
    dropout_rates = dict(dropout_rates or {})
    unknown = set(dropout_rates) - set(self._modalities)
    if unknown:
      raise ValueError(f'dropout_rates names {sorted(unknown)}, which are '
                       f'not among the modalities {self._modalities}.')
    for modality, rate in dropout_rates.items():
      if not 0.0 <= rate < 1.0:
        raise ValueError(f'Dropout rate of {modality!r} must be in [0, 1), '
                         f'got {rate}.')
    self._dropout_rates = {m: float(dropout_rates.get(m, 0.0))
                           for m in self._modalities}

  def num_channels(self, channels: dict[str, int]) -> int:
    """C of the fused byte array, given each modality's channel count."""
    return max(channels[m] for m in self._modalities) + (
        self._num_modality_channels)

  def __call__(self, inputs: dict[str, jax.Array], *, is_training: bool
               ) -> tuple[jax.Array, Optional[jax.Array]]:
    """Fuses `{name: [B, M_i, C_i]}` into `([B, M, C], mask [B, M] or None)`.

    The mask is None when nothing can be dropped (evaluation, or all rates
    0); otherwise booleans, True for tokens the model may attend to.
    """
    missing = [m for m in self._modalities if m not in inputs]
    if missing:
      raise ValueError(f'Missing modalities {missing}; got {sorted(inputs)}.')
    arrays = [inputs[m] for m in self._modalities]
    batch_size = arrays[0].shape[0]
    if any(a.ndim != 3 or a.shape[0] != batch_size for a in arrays):
      raise ValueError(f'Expected [batch, positions, channels] arrays with '
                       f'one batch size, got shapes '
                       f'{[a.shape for a in arrays]}.')
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
      if rate:
        keeps.append(jax.random.bernoulli(hk.next_rng_key(), 1.0 - rate,
                                          (batch_size,)))
      else:
        keeps.append(jnp.ones((batch_size,), bool))
    kept_any = jnp.any(jnp.stack(keeps), axis=0)
    keeps[0] = keeps[0] | ~kept_any  # Never drop every modality.
    mask = jnp.concatenate(
        [jnp.broadcast_to(keep[:, None], (batch_size, array.shape[1]))
         for keep, array in zip(keeps, arrays)], axis=1)  # [B, M]
    return fused, mask

class PointCloudAdapter(hk.Module):
  """Point clouds: each point's Fourier features of its (x, y, z).

  Maps points `[B, P, 3]` (coordinates in [-1, 1]) to `[B, P, C]` with
  `C = 3 * (2K + 1)`: the coordinates themselves, then sines, then cosines
  (`position_encoding.fourier_features`). The raw coordinates are not
  concatenated again: the Fourier features already begin with them, so a
  second copy would only duplicate 3 channels. Unlike a grid, the
  positions are the data, so the features are computed from the traced
  input on every call. P may differ between calls (the model is invariant
  to the points' order and count).
  """

  def __init__(self,
               *,
               num_bands: int = 64,
               max_resolution: Sequence[float] = (2240.0, 2240.0, 2240.0),
               name: Optional[str] = 'point_cloud_adapter'):
    """Builds the adapter.

    Args:
      num_bands: K, Fourier bands per axis.
      max_resolution: mu per axis (3 values); the highest frequency of an
        axis is mu / 2.
      name: module name.
    """
    super().__init__(name=name)
    if isinstance(num_bands, bool) or not isinstance(
        num_bands, (int, np.integer)) or num_bands < 1:
      raise ValueError(f'num_bands must be a positive integer, got '
                       f'{num_bands!r}.')
    max_resolution = tuple(float(mu) for mu in max_resolution)
    if len(max_resolution) != 3 or not all(
        np.isfinite(mu) and mu >= 2 for mu in max_resolution):
      raise ValueError(f'max_resolution must be 3 finite values >= 2 (one '
                       f'per axis), got {max_resolution}.')
    self._num_bands = int(num_bands)
    self._max_resolution = max_resolution

  @property
  def num_channels(self) -> int:
    """C = 3 * (2K + 1)."""
    return pe.num_fourier_channels(3, self._num_bands)

  def __call__(self, points: jax.Array) -> jax.Array:
    """Maps points `[B, P, 3]` to the byte array `[B, P, C]`."""
    if points.ndim != 3 or points.shape[-1] != 3:
      raise ValueError(f'Expected points of shape [batch, num_points, 3], '
                       f'got {points.shape}.')
    points = jnp.asarray(points)
    return pe.fourier_features(points, self._num_bands,
                               self._max_resolution).astype(points.dtype)
