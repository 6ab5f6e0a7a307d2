"""A grid's byte array kept as its parts, for one-head cross-attends.

On a grid the byte array `[B, M, C]` is each position's raw channels
(`content` `[B, M, Cc]`) and Fourier features, which are a sum of one
table row per axis (`position_encoding.axis_tables`). The absorbed
cross-attend (`fast_cross_attend`) needs only `q S^T` and `w S` of the
standardised byte array S; both follow from the parts: the LayerNorm
statistics from per-axis table sums, `q S^T` from a content matmul plus
small per-axis ones, `w S` from the weights' per-axis marginals. The
`4 B N M C` FLOPs become `4 B N M Cc` plus `O(B N M)` (ImageNet: Cc = 3 of
C = 261), and `[B, M, C]` is never stored. The variance is `E[x^2] -
mean^2` here (two-pass in `layers.LayerNorm`).
"""

import itertools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp


def _broadcast_sum(per_axis: list[jax.Array]) -> jax.Array:
  """`sum_a x_a[..., i_a]`: `[..., n_a]` each -> `[..., M]` (row-major)."""
  num_dims = len(per_axis)
  total = 0
  for a, x in enumerate(per_axis):
    shape = [1] * num_dims
    shape[a] = x.shape[-1]
    total = total + x.reshape(*x.shape[:-1], *shape)
  return total.reshape(*total.shape[:-num_dims], -1)


def _grid_sums(tables: tuple[jax.Array, ...]) -> tuple[jax.Array, jax.Array]:
  """Per position, the sums of the features and of their squares `[M]`
  (with cross terms, so overlapping tables work too)."""
  tables = tuple(t.astype(jnp.float32) for t in tables)
  sums = _broadcast_sum([t.sum(-1) for t in tables])
  squares = _broadcast_sum([(t * t).sum(-1) for t in tables])
  num_dims = len(tables)
  for a, b in itertools.combinations(range(num_dims), 2):
    cross = tables[a] @ tables[b].T  # [n_a, n_b]
    shape = [1] * num_dims
    shape[a], shape[b] = cross.shape
    squares = squares + 2 * jnp.broadcast_to(
        cross.reshape(shape), [t.shape[0] for t in tables]).reshape(-1)
  return sums, squares


class StandardizedGrid(NamedTuple):
  """S `[B, M, C]` of a `GridByteArray` in parts: `S[b, m] = (x[b, m] -
  mean[b, m]) * rstd[b, m]`, `mean` and `rstd` `[B, M]` float32."""
  content: jax.Array
  axis_features: tuple[jax.Array, ...]
  mean: jax.Array
  rstd: jax.Array

  @property
  def dtype(self) -> jnp.dtype:
    return self.content.dtype

  def dense(self) -> jax.Array:
    """S itself, `[B, M, C]` in the content's dtype."""
    x = GridByteArray(self.content, self.axis_features).materialize()
    return ((x.astype(jnp.float32) - self.mean[..., None]) *
            self.rstd[..., None]).astype(self.content.dtype)

  def logits(self, queries: jax.Array) -> jax.Array:
    """`queries S^T`: queries `[B, N, C]` -> `[B, N, M]` float32."""
    content_channels = self.content.shape[-1]
    content_term = jnp.einsum(
        'bnc,bmc->bnm', queries[..., :content_channels], self.content,
        preferred_element_type=jnp.float32)
    feature_queries = queries[..., content_channels:]
    feature_term = _broadcast_sum([
        jnp.einsum('bnf,if->bni', feature_queries, table,
                   preferred_element_type=jnp.float32)
        for table in self.axis_features])
    query_sums = jnp.sum(queries.astype(jnp.float32), axis=-1)  # [B, N]
    return ((content_term + feature_term -
             self.mean[:, None, :] * query_sums[..., None]) *
            self.rstd[:, None, :])

  def pool(self, weights: jax.Array) -> jax.Array:
    """`weights S`: weights `[B, N, M]` -> `[B, N, C]` (content's dtype)."""
    dtype = self.content.dtype
    scaled = weights.astype(jnp.float32) * self.rstd[:, None, :]  # u
    # In float32 (Cc is small), like the mean's share below, so that both
    # round alike and the content channels' error scales with x - mean.
    content_part = jnp.einsum('bnm,bmc->bnc', scaled,
                              self.content.astype(jnp.float32))
    index_dims = [table.shape[0] for table in self.axis_features]
    grid = scaled.reshape(*scaled.shape[:2], *index_dims)
    num_dims = len(index_dims)
    feature_part = sum(
        jnp.einsum('bni,if->bnf',
                   grid.sum(axis=tuple(2 + b for b in range(num_dims)
                                       if b != a)),
                   table.astype(jnp.float32))
        for a, table in enumerate(self.axis_features))
    mean_part = jnp.einsum('bnm,bm->bn', scaled, self.mean)
    pooled = jnp.concatenate([content_part, feature_part], axis=-1)
    return (pooled - mean_part[..., None]).astype(dtype)


class GridByteArray(NamedTuple):
  """A byte array `[B, M, C]` on a grid: position `m = (i_1, ..., i_d)`
  (row-major) holds `concat(content[:, m], sum_a axis_features[a][i_a])`,
  content `[B, M, Cc]`, tables `[n_a, F]`. Built by
  `inputs.GridAdapter.parts`; the encoder takes it as a byte array."""
  content: jax.Array
  axis_features: tuple[jax.Array, ...]

  @property
  def shape(self) -> tuple[int, int, int]:
    """`(B, M, C)` of the byte array."""
    batch, positions, channels = self.content.shape
    return (batch, positions, channels + self.axis_features[0].shape[-1])

  @property
  def ndim(self) -> int:
    return 3

  @property
  def dtype(self) -> jnp.dtype:
    return self.content.dtype

  def astype(self, dtype: jnp.dtype) -> 'GridByteArray':
    return GridByteArray(self.content.astype(dtype),
                         tuple(t.astype(dtype) for t in self.axis_features))

  def check(self) -> None:
    """Raises ValueError unless the parts fit together."""
    shapes = [tuple(t.shape) for t in self.axis_features]
    if (self.content.ndim != 3 or not shapes or
        any(len(s) != 2 for s in shapes) or
        len({s[1] for s in shapes}) != 1 or
        math.prod(s[0] for s in shapes) != self.content.shape[1]):
      raise ValueError(
          f'GridByteArray parts do not fit: content {self.content.shape} '
          f'(expected [B, M, Cc]) and tables {shapes} (expected [n_a, F] '
          f'with one F and prod(n_a) == M).')

  def materialize(self) -> jax.Array:
    """The byte array `[B, M, C]`."""
    features = _broadcast_sum(
        [table.T for table in self.axis_features]).T  # [M, F]
    batch, positions, _ = self.content.shape
    features = jnp.broadcast_to(features.astype(self.content.dtype),
                                (batch, positions, features.shape[-1]))
    return jnp.concatenate([self.content, features], axis=-1)

  def standardize(self, eps: float) -> StandardizedGrid:
    """S: the LayerNorm without scale and offset, in parts."""
    channels = self.shape[-1]
    content = self.content.astype(jnp.float32)
    feature_sums, feature_squares = _grid_sums(self.axis_features)
    mean = (content.sum(-1) + feature_sums) / channels  # [B, M]
    mean_square = (jnp.sum(content * content, axis=-1) +
                   feature_squares) / channels
    variance = jnp.maximum(mean_square - mean * mean, 0.0)
    return StandardizedGrid(self.content, self.axis_features, mean,
                            jax.lax.rsqrt(variance + eps))
