"""`attention.CrossAttendBlock` with the same parameters, fewer FLOPs.

`FastCrossAttendBlock` has the reference block's parameters (same names,
shapes, initialisers and draw order) and computes the same function up to
float rounding (tests/model/test_fast_cross_attend.py). It splits the block
into the input side `keys_values(x)`, which the encoder computes once per
weight set (`reuse_shared_keys_values`), and the query side `attend(z,
kv)`. With one head and `absorb_projections` (no attention dropout in this
pass) the input side stays unprojected and the query side absorbs the
projections, so a grid's byte array in parts is never built.
"""

import math
from typing import NamedTuple, Optional

import haiku as hk
import jax
import jax.numpy as jnp

from perceiver_jax.model import attention
from perceiver_jax.model import grid_byte_array
from perceiver_jax.model import layers
from perceiver_jax.model import matmul

# The encoder's inputs: a byte array `[B, M, C]`, or a grid's in parts.
ByteArray = jax.Array | grid_byte_array.GridByteArray


class KeysValues(NamedTuple):
  """Projected keys `[B, M, H, Dqk/H]` and values `[B, M, H, Dv/H]`."""
  keys: jax.Array
  values: jax.Array


class UnprojectedKeysValues(NamedTuple):
  """The input side of a one-head cross-attend, projections not applied:
  the standardised inputs `[B, M, C]` (or a `StandardizedGrid`), the input
  LayerNorm's scale and offset `[C]`, and the K/V Linears' parameters."""
  standardized: jax.Array | grid_byte_array.StandardizedGrid
  norm_scale: jax.Array
  norm_offset: jax.Array
  key_w: jax.Array
  key_b: jax.Array
  value_w: jax.Array
  value_b: jax.Array


def absorbs_projections(*, num_heads: int, absorb_projections: bool,
                        dropout: float, is_training: bool) -> bool:
  """Whether a pass absorbs the projections: one head only (several would
  need C-wide queries per head), and no attention dropout in training (the
  absorbed values need weights summing to 1)."""
  return (absorb_projections and num_heads == 1 and
          not (dropout > 0.0 and is_training))


class _FastAttention(attention.Attention):
  """`attention.Attention` that can apply its K/V projections on the
  queries' side."""

  @hk.name_like('__call__')
  def projection_parameters(
      self, input_channels: int, dtype: jnp.dtype
  ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    return (*layers.linear(self.qk_channels, 'key').parameters(
        input_channels, dtype),
            *layers.linear(self.v_channels, 'value').parameters(
                input_channels, dtype))

  @hk.name_like('__call__')
  def attend_unprojected(self, inputs_q: jax.Array,
                         kv: UnprojectedKeysValues, *,
                         key_mask: Optional[jax.Array]) -> jax.Array:
    """One-head attention on the standardised inputs S; `[B, N, Cq]`.

    With `X = S diag(g) + 1 o^T`, `Q K^T = ((Q Wk^T) diag(g)) S^T` plus one
    value per query, which the softmax cancels, and as the weights' rows sum
    to 1, `P V = ((P S) diag(g) + 1 o^T) Wv + bv`: every parameter acts on
    the N queries, not the M inputs.
    """
    queries = layers.linear(self.qk_channels, 'query')(inputs_q)
    s = kv.standardized
    batch, num_queries, qk_channels = queries.shape
    # [B * N, Dqk] x [Dqk, C]: one contracting axis (see layers.FlatLinear).
    queries_in = matmul.linear_product(
        queries.reshape(-1, qk_channels), kv.key_w.T).reshape(
        batch, num_queries, -1)  # [B, N, C]
    queries_in = (queries_in * kv.norm_scale).astype(s.dtype)
    scale = 1.0 / math.sqrt(qk_channels)
    if isinstance(s, grid_byte_array.StandardizedGrid):
      # Its own contractions (whatever `impl`): no fused kernel takes parts.
      logits = s.logits(queries_in)[:, None] * scale  # [B, 1, N, M]
      pooled = s.pool(attention.attention_weights(logits, key_mask,
                                                  s.dtype)[:, 0])
    else:
      pooled = attention.scaled_dot_product_attention(
          queries_in[:, :, None], s[:, :, None], s[:, :, None],
          key_mask=key_mask, impl=self.impl, scale=scale)  # [B, N, 1, C]
    pooled = (pooled.reshape(batch * num_queries, -1) * kv.norm_scale +
              kv.norm_offset).astype(s.dtype)  # P X, [B * N, C]
    attended = (matmul.linear_product(pooled, kv.value_w) +
                kv.value_b).reshape(batch, num_queries, -1)  # P V, [B, N, Dv]
    return self.output(attended, inputs_q.shape[-1])


class FastCrossAttendBlock(attention.CrossAttendBlock):
  """`attention.CrossAttendBlock` split into its input and query sides."""

  attention_class = _FastAttention

  def __init__(self, *, input_channels: int, absorb_projections: bool,
               **kwargs):
    super().__init__(**kwargs)
    self._input_channels = input_channels
    self._absorb_projections = absorb_projections

  def absorbs(self, is_training: bool) -> bool:
    return absorbs_projections(
        num_heads=self.num_heads, absorb_projections=self._absorb_projections,
        dropout=self.dropout, is_training=is_training)

  @hk.name_like('__call__')
  def keys_values(self, inputs: ByteArray, *,
                  is_training: bool) -> KeysValues | UnprojectedKeysValues:
    """The input side of the block for inputs `[B, M, C]` (or in parts)."""
    norm = layers.layer_norm('input_norm')
    attention_module = self.attention(self._input_channels)
    if self.absorbs(is_training):
      channels = self._input_channels
      if isinstance(inputs, grid_byte_array.GridByteArray):
        standardized = inputs.standardize(layers.LAYER_NORM_EPS)
      else:
        standardized = layers.standardize(inputs)
      return UnprojectedKeysValues(
          standardized, *norm.parameters(channels),
          *attention_module.projection_parameters(channels, inputs.dtype))
    if isinstance(inputs, grid_byte_array.GridByteArray):
      inputs = inputs.materialize()
    return KeysValues(*attention_module.keys_values(norm(inputs)))

  @hk.name_like('__call__')
  def attend(self, latents: jax.Array,
             keys_values: KeysValues | UnprojectedKeysValues, *,
             input_mask: Optional[jax.Array] = None,
             is_training: bool) -> jax.Array:
    """The query side: updates latents `[B, N, D]` from `keys_values`."""
    if isinstance(keys_values, UnprojectedKeysValues) != self.absorbs(
        is_training):
      # E.g. unprojected K/V of an evaluation pass in a training pass with
      # attention dropout, which the absorbed path cannot apply.
      raise ValueError('keys_values were computed for another pass: call '
                       'keys_values with the same is_training as attend.')
    attention_module = self.attention(self._input_channels)
    queries_in = layers.layer_norm('query_norm')(latents)
    if isinstance(keys_values, UnprojectedKeysValues):
      attended = attention_module.attend_unprojected(
          queries_in, keys_values, key_mask=input_mask)
    else:
      attended = attention_module.attend(
          queries_in, keys_values.keys, keys_values.values,
          key_mask=input_mask, is_training=is_training)
    return self.residual_then_mlp(latents, attended, is_training=is_training,
                                  residual=self.query_residual)

  def __call__(self, latents: jax.Array, inputs: ByteArray, *,
               input_mask: Optional[jax.Array] = None,
               is_training: bool) -> jax.Array:
    return self.attend(latents,
                       self.keys_values(inputs, is_training=is_training),
                       input_mask=input_mask, is_training=is_training)
