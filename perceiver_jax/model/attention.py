"""Attention, the MLP and the Perceiver's blocks: the reference semantics.

docs/paper.md section 1, byte array `x: [B, M, C]`, latents `z: [B, N, D]`:
`CrossAttendBlock` is `z += Attn(q=LN(z), kv=LN(x))` (one head of width C
projected back to D), then `z += MLP(LN(z))`; `SelfAttendLayer` the same
over `LN(z)` with 8 heads; `LatentTransformer` a stack of them.
`fast_cross_attend` computes the same cross-attend with fewer FLOPs.
"""

import math
from typing import Optional

import haiku as hk
import jax
import jax.numpy as jnp

from perceiver_jax import checks
from perceiver_jax.model import encoder_config
from perceiver_jax.model import layers
from perceiver_jax.model import matmul

ATTENTION_IMPLS = encoder_config.ATTENTION_IMPLS


def attention_weights(logits: jax.Array, key_mask: Optional[jax.Array],
                      dtype: jnp.dtype) -> jax.Array:
  """Softmax over the key axis of `[B, H, N, M]` float32 logits, with the
  keys where the `[B, M]` `key_mask` is False excluded; in `dtype`."""
  if key_mask is not None:
    logits = jnp.where(key_mask[:, None, None, :], logits,
                       jnp.finfo(jnp.float32).min)
  return jax.nn.softmax(logits, axis=-1).astype(dtype)


def scaled_dot_product_attention(
    queries: jax.Array, keys: jax.Array, values: jax.Array, *,
    key_mask: Optional[jax.Array] = None, impl: str = 'einsum',
    dropout_rate: float = 0.0, is_training: bool = False,
    scale: Optional[float] = None) -> jax.Array:
  """`softmax(scale * Q K^T) V` per head: queries `[B, N, H, Dqk]`, keys
  `[B, M, H, Dqk]`, values `[B, M, H, Dv]` -> `[B, N, H, Dv]`.

  `key_mask` `[B, M]` is True for keys that may be attended; `scale`
  defaults to `1 / sqrt(Dqk)`. `impl` 'einsum' writes it out (logits and
  softmax in float32); 'dot_product' is `jax.nn.dot_product_attention`
  (not with dropout in training).
  """
  checks.one_of(impl, 'impl', ATTENTION_IMPLS)
  if scale is None:
    scale = 1.0 / math.sqrt(queries.shape[-1])
  if impl == 'dot_product' and not (dropout_rate > 0.0 and is_training):
    mask = None if key_mask is None else key_mask[:, None, None, :]
    return jax.nn.dot_product_attention(queries, keys, values, mask=mask,
                                        scale=scale)
  logits = jnp.einsum('bnhd,bmhd->bhnm', queries, keys,
                      preferred_element_type=jnp.float32)
  weights = attention_weights(logits * scale, key_mask, values.dtype)
  weights = layers.dropout(weights, dropout_rate, is_training)
  return matmul.einsum('bhnm,bmhd->bnhd', weights, values)


class Attention(hk.Module):
  """Multi-head attention; Q, K, V and output Linears, the output as wide
  as the query inputs. `qk_channels`, `v_channels`: all heads together."""

  def __init__(self, *, num_heads: int, qk_channels: int, v_channels: int,
               impl: str = 'einsum', dropout_rate: float = 0.0,
               name: Optional[str] = None):
    super().__init__(name=name)
    self.num_heads = num_heads
    self.qk_channels = qk_channels
    self.v_channels = v_channels
    self.impl = impl
    self.dropout_rate = dropout_rate

  def split_heads(self, x: jax.Array) -> jax.Array:
    return x.reshape(*x.shape[:-1], self.num_heads, -1)

  @hk.name_like('__call__')
  def keys_values(self, inputs_kv: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Keys `[B, M, H, Dqk/H]` and values `[B, M, H, Dv/H]` of `[B, M, C]`."""
    keys = layers.linear(self.qk_channels, 'key')(inputs_kv)
    values = layers.linear(self.v_channels, 'value')(inputs_kv)
    return self.split_heads(keys), self.split_heads(values)

  @hk.name_like('__call__')
  def attend(self, inputs_q: jax.Array, keys: jax.Array, values: jax.Array,
             *, key_mask: Optional[jax.Array] = None,
             is_training: bool) -> jax.Array:
    """`inputs_q` `[B, N, Cq]` attend to `keys_values`; `[B, N, Cq]`."""
    queries = self.split_heads(
        layers.linear(self.qk_channels, 'query')(inputs_q))  # [B, N, H, Dh]
    attended = scaled_dot_product_attention(
        queries, keys, values, key_mask=key_mask, impl=self.impl,
        dropout_rate=self.dropout_rate, is_training=is_training)
    attended = attended.reshape(*attended.shape[:2], -1)  # [B, N, Dv]
    return self.output(attended, inputs_q.shape[-1])

  @hk.name_like('__call__')
  def output(self, attended: jax.Array, channels: int) -> jax.Array:
    """The output Linear: `[B, N, Dv]` -> `[B, N, channels]`."""
    return layers.linear(channels, 'output')(attended)

  def __call__(self, inputs_q: jax.Array, inputs_kv: jax.Array, *,
               key_mask: Optional[jax.Array] = None,
               is_training: bool) -> jax.Array:
    """`inputs_q` `[B, N, Cq]` attend to `inputs_kv` `[B, M, Ckv]`."""
    keys, values = self.keys_values(inputs_kv)
    return self.attend(inputs_q, keys, values, key_mask=key_mask,
                       is_training=is_training)


# The MLP's nonlinearity: the paper's GELU is the tanh approximation;
# transformers' Perceiver (config.hidden_act 'gelu') uses the exact erf form.
ACTIVATIONS = {
    'gelu_tanh': lambda x: jax.nn.gelu(x, approximate=True),
    'gelu': lambda x: jax.nn.gelu(x, approximate=False),
}


class MLP(hk.Module):
  """`Linear(w * D) -> GELU -> Linear(D)`."""

  def __init__(self, *, widening_factor: int = 1, dropout_rate: float = 0.0,
               activation: str = 'gelu_tanh', name: Optional[str] = None):
    super().__init__(name=name)
    self._widening_factor = widening_factor
    self._dropout_rate = dropout_rate
    self._activation = ACTIVATIONS[activation]

  def __call__(self, x: jax.Array, *, is_training: bool) -> jax.Array:
    """Maps `[..., D]` to `[..., D]`."""
    channels = x.shape[-1]
    hidden = layers.linear(self._widening_factor * channels, 'hidden')(x)
    hidden = self._activation(hidden)
    out = layers.linear(channels, 'output')(hidden)
    return layers.dropout(out, self._dropout_rate, is_training)


class _Block(hk.Module):
  """What both blocks share: their settings and the MLP half.
  `qk_channels`, `v_channels` (None: the width attended over) and
  `activation` serve other Perceivers' checkpoints."""

  attention_class = Attention  # Subclasses may compute it differently.

  def __init__(self, *, num_heads: int, widening_factor: int = 1,
               dropout: float = 0.0, attention_impl: str = 'einsum',
               activation: str = 'gelu_tanh',
               qk_channels: Optional[int] = None,
               v_channels: Optional[int] = None,
               name: Optional[str] = None):
    super().__init__(name=name)
    self.num_heads = num_heads
    self.dropout = dropout
    self.widening_factor = widening_factor
    self.activation = activation
    self._attention_kwargs = dict(num_heads=num_heads, impl=attention_impl,
                                  dropout_rate=dropout, name='attention')
    self._widths = (qk_channels, v_channels)  # None: the default widths.

  @hk.name_like('__call__')
  def attention(self, channels: int) -> Attention:
    """The attention over inputs `channels` wide."""
    qk_channels = self._widths[0] or channels
    return self.attention_class(qk_channels=qk_channels,
                                v_channels=self._widths[1] or qk_channels,
                                **self._attention_kwargs)

  @hk.name_like('__call__')
  def residual_then_mlp(self, latents: jax.Array, attended: jax.Array, *,
                        is_training: bool,
                        residual: bool = True) -> jax.Array:
    """`z += Dropout(attended)` (or `z = ...`), then `z += MLP(LN(z))`."""
    attended = layers.dropout(attended, self.dropout, is_training)
    latents = latents + attended if residual else attended
    mlp = MLP(widening_factor=self.widening_factor,
              dropout_rate=self.dropout, activation=self.activation,
              name='mlp')
    return latents + mlp(layers.layer_norm('mlp_norm')(latents),
                         is_training=is_training)


class CrossAttendBlock(_Block):
  """`z += Attn(q=LN(z), kv=LN(x))`, then `z += MLP(LN(z))`; without
  `query_residual` (Perceiver IO's option) `z = Attn(...)`."""

  def __init__(self, *, num_heads: int = 1, query_residual: bool = True,
               **kwargs):
    super().__init__(num_heads=num_heads, **kwargs)
    self.query_residual = query_residual

  def __call__(self, latents: jax.Array, inputs: jax.Array, *,
               input_mask: Optional[jax.Array] = None,
               is_training: bool) -> jax.Array:
    """Latents `[B, N, D]` from inputs `[B, M, C]` (mask `[B, M]`)."""
    attention = self.attention(inputs.shape[-1])
    attended = attention(layers.layer_norm('query_norm')(latents),
                         layers.layer_norm('input_norm')(inputs),
                         key_mask=input_mask, is_training=is_training)
    return self.residual_then_mlp(latents, attended, is_training=is_training,
                                  residual=self.query_residual)


class SelfAttendLayer(_Block):
  """`z += Attn(LN(z), LN(z))`, then `z += MLP(LN(z))`."""

  def __init__(self, *, num_heads: int = 8, **kwargs):
    super().__init__(num_heads=num_heads, **kwargs)

  def __call__(self, latents: jax.Array, *, is_training: bool) -> jax.Array:
    """Maps latents `[B, N, D]` to `[B, N, D]`."""
    normed = layers.layer_norm('attention_norm')(latents)
    attended = self.attention(latents.shape[-1])(normed, normed,
                                                 is_training=is_training)
    return self.residual_then_mlp(latents, attended, is_training=is_training)


class LatentTransformer(hk.Module):
  """`num_layers` self-attend layers, each with its own weights."""

  def __init__(self, *, num_layers: int, name: Optional[str] = None,
               **layer_kwargs):
    super().__init__(name=name)
    self._num_layers = num_layers
    self._layer_kwargs = layer_kwargs

  def __call__(self, latents: jax.Array, *, is_training: bool) -> jax.Array:
    """Maps latents `[B, N, D]` to `[B, N, D]`."""
    for i in range(self._num_layers):
      layer = SelfAttendLayer(name=f'self_attend_{i}', **self._layer_kwargs)
      latents = layer(latents, is_training=is_training)
    return latents
