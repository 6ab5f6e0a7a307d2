"""Adapters: turn a modality's array into the Perceiver's byte array [B, M, C].

Each adapter flattens its input into M positions of raw channels, then
concatenates (never adds) position features, and may permute the positions.
`num_channels(raw_channels)` gives C without running the adapter, so the
model can be built for (and check) the right input width.
"""

from typing import Optional, Sequence

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from perceiver_jax.model import position_encoding as pe

POSITION_ENCODINGS = ('fourier', 'learned', 'none')


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
    self._index_dims = tuple(int(n) for n in index_dims)
    if position_encoding not in POSITION_ENCODINGS:
      raise ValueError(f'position_encoding must be one of '
                       f'{POSITION_ENCODINGS}, got {position_encoding!r}.')
    self._position_encoding = position_encoding
    self._num_positions = int(np.prod(self._index_dims))
    if position_encoding == 'fourier':
      # Fixed features: computed once on the host, a constant in the graph.
      self._fourier = pe.fourier_grid_features(self._index_dims, num_bands,
                                               max_resolution)
    self._learned_channels = learned_position_channels
    self._learned_init_scale = learned_position_init_scale
    if permutation is not None:
      permutation = np.asarray(permutation)
      if sorted(permutation.tolist()) != list(range(self._num_positions)):
        raise ValueError(
            f'permutation must be a permutation of range({self._num_positions})'
            f' (the grid {self._index_dims}), got an array of shape '
            f'{permutation.shape}.')
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

  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps `[B, *index_dims, C_raw]` to the byte array `[B, M, C]`."""
    if x.ndim != len(self._index_dims) + 2 or (
        tuple(x.shape[1:-1]) != self._index_dims):
      raise ValueError(
          f'Expected inputs of shape [batch, *{list(self._index_dims)}, '
          f'channels], got {x.shape}.')
    batch_size = x.shape[0]
    inputs = x.reshape(batch_size, self._num_positions, x.shape[-1])
    if self._position_encoding == 'fourier':
      positions = jnp.broadcast_to(
          jnp.asarray(self._fourier, x.dtype),
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
