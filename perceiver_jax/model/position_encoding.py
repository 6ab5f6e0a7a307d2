"""Position encodings concatenated to the inputs (docs/paper.md section 3).

Fourier features of positions `x_d in [-1, 1]` with K bands `f_k =
linspace(1, mu_d / 2, K)` per axis: `[x_1..x_d, sin(pi f_k x_d),
cos(pi f_k x_d)]` (axis-major), `d (2K + 1)` channels; learned positions
`[M, channels]`; a fixed permutation of the M positions.
"""

import math
from typing import Optional, Sequence

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from perceiver_jax import checks


def check_index_dims(index_dims: Sequence[int]) -> tuple[int, ...]:
  """Returns `index_dims` as a tuple of ints; raises unless all positive."""
  index_dims = tuple(index_dims)
  if not index_dims or any(
      isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1
      for n in index_dims):
    raise ValueError(
        f'index_dims must be a non-empty list of positive integers, got '
        f'{index_dims!r}.')
  return tuple(int(n) for n in index_dims)


def grid_positions(index_dims: Sequence[int]) -> np.ndarray:
  """`[prod(index_dims), d]` float32 coordinates of a grid's points, each
  axis spanning [-1, 1], in the row-major order a `[*index_dims, C]` array
  flattens in."""
  index_dims = check_index_dims(index_dims)
  axes = [np.linspace(-1.0, 1.0, n, dtype=np.float64) for n in index_dims]
  grid = np.stack(np.meshgrid(*axes, indexing='ij'), axis=-1)
  return grid.reshape(-1, len(index_dims)).astype(np.float32)


def num_fourier_channels(num_dims: int, num_bands: int) -> int:
  """Channels that `fourier_features` adds: `d * (2K + 1)`."""
  return num_dims * (2 * num_bands + 1)


def fourier_features(positions, num_bands: int,
                     max_resolution: Sequence[float]):
  """`[..., d (2K + 1)]` features of positions `[..., d]` in [-1, 1] (numpy
  or traced): the positions, the sines, the cosines, each axis-major; mu per
  axis puts the highest frequency at mu / 2."""
  checks.positive_int(num_bands, 'num_bands')
  num_dims = positions.shape[-1]
  max_resolution = tuple(max_resolution)
  if len(max_resolution) != num_dims:
    raise ValueError(
        f'max_resolution {max_resolution} has {len(max_resolution)} entries '
        f'but positions have {num_dims} axes (shape {positions.shape}).')
  if not all(math.isfinite(mu) and mu >= 2 for mu in max_resolution):
    raise ValueError(
        f'max_resolution must be finite and at least 2 per axis (the lowest '
        f'frequency is 1), got {max_resolution}.')
  xp = jnp if isinstance(positions, jax.Array) else np
  # [d, K]: row a holds linspace(1, mu_a / 2, K).
  freqs = np.stack(
      [np.linspace(1.0, mu / 2.0, num_bands) for mu in max_resolution])
  freqs = freqs.astype(np.float32)
  # [..., d, K] -> [..., d * K], axis-major.
  angles = math.pi * positions[..., :, None] * freqs
  angles = angles.reshape(*positions.shape[:-1], num_dims * num_bands)
  return xp.concatenate([positions, xp.sin(angles), xp.cos(angles)], axis=-1)


def fourier_grid_features(index_dims: Sequence[int], num_bands: int,
                          max_resolution: Optional[Sequence[float]] = None
                          ) -> np.ndarray:
  """`[prod(index_dims), d (2K + 1)]` Fourier features of a grid (mu per
  axis: default the grid's size)."""
  index_dims = check_index_dims(index_dims)
  if max_resolution is None:
    max_resolution = index_dims
  return fourier_features(grid_positions(index_dims), num_bands,
                          max_resolution).astype(np.float32)


def axis_tables(grid_features: np.ndarray) -> tuple[np.ndarray, ...]:
  """Splits `[*index_dims, F]` features whose channels each vary along at
  most one axis (Fourier features) into d tables `[n_a, F]` with
  `features[i_1, ..., i_d] == sum_a tables[a][i_a]` exactly; table a holds
  the channels varying along axis a (constant ones: axis 0), zeros
  elsewhere."""
  grid_features = np.asarray(grid_features)
  num_dims = grid_features.ndim - 1
  if num_dims < 1:
    raise ValueError(f'grid_features must be [*index_dims, F], got shape '
                     f'{grid_features.shape}.')
  # [d, F]: whether channel f changes along axis a anywhere on the grid.
  varies = np.stack([
      np.any(np.diff(grid_features, axis=a) != 0, axis=tuple(range(num_dims)))
      for a in range(num_dims)])
  if np.any(varies.sum(axis=0) > 1):
    channels = np.flatnonzero(varies.sum(axis=0) > 1).tolist()
    raise ValueError(f'Channels {channels} of the grid features vary along '
                     f'more than one axis; they do not split into per-axis '
                     f'tables.')
  owner = np.where(varies.any(axis=0), varies.argmax(axis=0), 0)  # [F]
  tables = []
  for a in range(num_dims):
    # The features along axis a, the other coordinates at 0.
    line = grid_features[tuple(slice(None) if b == a else 0
                               for b in range(num_dims))]  # [n_a, F]
    tables.append(np.where(owner == a, line, 0).astype(grid_features.dtype))
  return tuple(tables)


def permutation(num_positions: int, seed: int) -> np.ndarray:
  """A fixed permutation of `range(num_positions)`, the same on every host
  and launch (numpy's PCG64 stream is stable)."""
  if num_positions < 1:
    raise ValueError(f'num_positions must be positive, got {num_positions}.')
  return np.random.default_rng(seed).permutation(num_positions)


class LearnedPositions(hk.Module):
  """A trainable `[M, channels]` position array, broadcast over the batch."""

  def __init__(self,
               num_positions: int,
               num_channels: int = 128,
               init_scale: float = 1.0,
               name: Optional[str] = None):
    super().__init__(name=name)
    if num_positions < 1 or num_channels < 1:
      raise ValueError(
          f'LearnedPositions needs positive sizes, got num_positions='
          f'{num_positions}, num_channels={num_channels}.')
    if not math.isfinite(init_scale) or init_scale <= 0:
      raise ValueError(f'init_scale must be positive and finite, got '
                       f'{init_scale}.')
    self._num_positions = num_positions
    self._num_channels = num_channels
    self._init_scale = init_scale

  def __call__(self, batch_size: int) -> jax.Array:
    """Returns `[batch_size, M, channels]`."""
    embeddings = hk.get_parameter(
        'pos_embs', [self._num_positions, self._num_channels],
        init=hk.initializers.TruncatedNormal(stddev=self._init_scale))
    return jnp.broadcast_to(embeddings,
                            (batch_size, *embeddings.shape))
