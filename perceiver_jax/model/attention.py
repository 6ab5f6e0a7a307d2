"""Attention, MLP and the two Perceiver blocks (PAPER.md section 1).

Shapes: byte array (inputs) `[B, M, C]`; latents `[B, N, D]`.

- `CrossAttendBlock`: latents query the inputs, one head of width C, output
  projected back to D; then an MLP.
- `SelfAttendLayer`: one latent Transformer layer, 8 heads of width D / 8.
- `LatentTransformer`: a stack of `SelfAttendLayer`s.

Every Linear has a bias and uses `VarianceScaling(1.0)` weights and zero
biases; every LayerNorm normalises the channel axis with eps 1e-5.
"""

import math
from typing import NamedTuple, Optional

import haiku as hk
import jax
import jax.numpy as jnp

from perceiver_jax import checks
from perceiver_jax.model import grid_byte_array

ATTENTION_IMPLS = ('einsum', 'dot_product')
LAYER_NORM_EPS = 1e-5
# The MLPs' nonlinearity: 'gelu_tanh' is the paper's (and DeepMind's JAX
# code's) tanh approximation; 'gelu' is the exact erf form, which
# transformers' Perceiver applies for its `hidden_act='gelu'`.
MLP_ACTIVATIONS = {
    'gelu_tanh': lambda x: jax.nn.gelu(x, approximate=True),
    'gelu': lambda x: jax.nn.gelu(x, approximate=False),
}


class FlatLinear(hk.Linear):
  """`hk.Linear` that multiplies its inputs as one `[prod(leading), C]` matrix.

  The parameters (`w`, `b`) and outputs are `hk.Linear`'s. Why: on
  `[B, T, C]` inputs, the weight gradient `x^T dy` contracts over two axes
  (B and T). XLA:CPU then stores the output gradient `dy` transposed for
  the matmul and fuses into that transposing copy the whole elementwise
  chain that produces `dy` (the residual stream's gradient through every
  later LayerNorm), recomputing it, with strided reads, once per weight
  gradient. With one contracting axis `dy` is read as it is stored. On the
  digits model (batch 64) this cuts the gradient's time by about 40%
  (README, Performance).
  """

  def __call__(self, inputs: jax.Array, *,
               precision: Optional[jax.lax.Precision] = None) -> jax.Array:
    flat = inputs.reshape(-1, inputs.shape[-1])
    outputs = super().__call__(flat, precision=precision)
    return outputs.reshape(*inputs.shape[:-1], outputs.shape[-1])

  def parameters(self, input_size: int,
                 dtype: jnp.dtype) -> tuple[jax.Array, jax.Array]:
    """The weight `[input_size, output_size]` and bias `[output_size]` that
    `__call__` on inputs of width `input_size` would use (same names, shapes
    and initialisers), without applying them."""
    if not self.with_bias or self.w_init is None:
      raise ValueError('parameters() needs a Linear built by linear(): with '
                       'a bias and an explicit w_init.')
    w = hk.get_parameter('w', [input_size, self.output_size], dtype,
                         init=self.w_init)
    b = hk.get_parameter('b', [self.output_size], dtype, init=self.b_init)
    return w, b


def linear(output_size: int, name: str) -> hk.Linear:
  """A Linear layer (`FlatLinear`) with the paper's initialisers."""
  return FlatLinear(
      output_size,
      with_bias=True,
      w_init=hk.initializers.VarianceScaling(1.0),
      b_init=jnp.zeros,
      name=name)


class ChannelLayerNorm(hk.LayerNorm):
  """`hk.LayerNorm` over the last axis that can also hand out its scale and
  offset unapplied (same names, shapes, dtype and initialisers)."""

  def parameters(self, channels: int) -> tuple[jax.Array, jax.Array]:
    """The scale `[channels]` and offset `[channels]`, float32."""
    scale = hk.get_parameter('scale', [channels], jnp.float32,
                             init=self.scale_init)
    offset = hk.get_parameter('offset', [channels], jnp.float32,
                              init=self.offset_init)
    return scale, offset


class Float32LayerNorm:
  """An `hk.LayerNorm` applied to float32 values; the result has the input's
  dtype.

  In float32 this is the `hk.LayerNorm` call itself; in bfloat16 the mean,
  variance and affine map run in float32, so the statistics over a wide
  channel axis keep their precision (the parameters stay float32, see
  `Perceiver(precision)`). A wrapper, not a subclass, so that the module
  (a `ChannelLayerNorm`, itself an `hk.LayerNorm`) and its parameters are
  exactly `hk.LayerNorm`'s.
  """

  def __init__(self, norm: ChannelLayerNorm):
    self.norm = norm

  def __call__(self, inputs: jax.Array) -> jax.Array:
    if inputs.dtype == jnp.float32:
      return self.norm(inputs)
    return self.norm(inputs.astype(jnp.float32)).astype(inputs.dtype)

  def standardize(
      self, inputs: jax.Array | grid_byte_array.GridByteArray
  ) -> jax.Array | grid_byte_array.StandardizedGrid:
    """`(x - mean) / sqrt(var + eps)` over the channel axis: the LayerNorm
    without its scale and offset (statistics in float32, result in the
    input's dtype). It involves no parameter, so a gradient with respect to
    the parameters never flows back into it. A grid's byte array in parts
    gives the result in parts."""
    if isinstance(inputs, grid_byte_array.GridByteArray):
      return inputs.standardize(self.norm.eps)
    x = inputs.astype(jnp.float32)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    variance = jnp.var(x, axis=-1, keepdims=True)
    standardized = (x - mean) * jax.lax.rsqrt(variance + self.norm.eps)
    return standardized.astype(inputs.dtype)

  def parameters(self, channels: int) -> tuple[jax.Array, jax.Array]:
    """The scale and offset `[channels]` that `__call__` would apply."""
    return self.norm.parameters(channels)


def layer_norm(name: str) -> Float32LayerNorm:
  """LayerNorm over the channel axis with scale, offset and eps 1e-5."""
  return Float32LayerNorm(ChannelLayerNorm(
      axis=-1,
      create_scale=True,
      create_offset=True,
      eps=LAYER_NORM_EPS,
      name=name))


def check_positive_int(value, what: str) -> int:
  """Returns `value` if it is a positive integer, else raises ValueError."""
  return checks.positive_int(value, what)


def check_dropout(rate, what: str = 'dropout') -> float:
  """Returns `rate` if it is a finite number in [0, 1), else raises."""
  if (isinstance(rate, bool) or not isinstance(rate, (int, float)) or
      not math.isfinite(rate) or not 0.0 <= rate < 1.0):
    raise ValueError(f'{what} must be a finite rate in [0, 1), got {rate!r}.')
  return float(rate)


def dropout(x: jax.Array, rate: float, is_training: bool) -> jax.Array:
  """Dropout that is a no-op (and needs no rng) at rate 0 or in evaluation."""
  if rate == 0.0 or not is_training:
    return x
  return hk.dropout(hk.next_rng_key(), rate, x)


def scaled_dot_product_attention(
    queries: jax.Array,
    keys: jax.Array,
    values: jax.Array,
    *,
    key_mask: Optional[jax.Array] = None,
    impl: str = 'einsum',
    dropout_rate: float = 0.0,
    is_training: bool = False,
    scale: Optional[float] = None,
) -> jax.Array:
  """Multi-head attention of queries over keys, softmax over the key axis.

  Args:
    queries: `[B, N, H, Dqk]`.
    keys: `[B, M, H, Dqk]`.
    values: `[B, M, H, Dv]`.
    key_mask: optional `[B, M]` booleans, True for keys that may be attended.
    impl: 'einsum' (the reference: logits, softmax and weighted sum written
      out) or 'dot_product' (`jax.nn.dot_product_attention`, fused cuDNN
      attention where the backend offers it).
    dropout_rate: dropout on the attention weights (training only).
    is_training: whether dropout applies.
    scale: multiplies the logits; default `1 / sqrt(Dqk)`.

  Returns:
    `[B, N, H, Dv]`.
  """
  if impl not in ATTENTION_IMPLS:
    raise ValueError(
        f'attention_impl must be one of {ATTENTION_IMPLS}, got {impl!r}.')
  if scale is None:
    scale = 1.0 / math.sqrt(queries.shape[-1])
  use_dropout = dropout_rate > 0.0 and is_training
  if impl == 'dot_product' and not use_dropout:
    mask = None if key_mask is None else key_mask[:, None, None, :]
    return jax.nn.dot_product_attention(
        queries, keys, values, mask=mask, scale=scale)

  # The reference path materialises the [B, H, N, M] weights and nothing
  # larger; the logits accumulate and the softmax runs in float32 whatever
  # the compute dtype (a no-op in float32).
  logits = jnp.einsum('bnhd,bmhd->bhnm', queries, keys,
                      preferred_element_type=jnp.float32)
  weights = attention_weights(logits * scale, key_mask, values.dtype)
  weights = dropout(weights, dropout_rate, is_training)
  return jnp.einsum('bhnm,bmhd->bnhd', weights, values)


def attention_weights(logits: jax.Array, key_mask: Optional[jax.Array],
                      dtype: jnp.dtype) -> jax.Array:
  """Softmax over the key axis, masked keys excluded.

  Args:
    logits: scaled float32 logits `[B, H, N, M]`.
    key_mask: optional `[B, M]` booleans, True for keys that may be attended.
    dtype: the result's dtype.

  Returns:
    The attention weights `[B, H, N, M]`, rows summing to 1.
  """
  if key_mask is not None:
    logits = jnp.where(key_mask[:, None, None, :], logits,
                       jnp.finfo(jnp.float32).min)
  return jax.nn.softmax(logits, axis=-1).astype(dtype)


class KeysValues(NamedTuple):
  """Projected keys and values of the inputs, `[B, M, H, Dqk]`/`[B, M, H, Dv]`.

  Computed once and handed to several cross-attends that share weights.
  """
  keys: jax.Array
  values: jax.Array


class UnprojectedKeysValues(NamedTuple):
  """Key/value inputs for one-head attention that applies the inputs'
  LayerNorm affine map and the key/value projections on the query side.

  Attributes:
    standardized: the inputs standardised over channels (the LayerNorm
      without scale and offset, `Float32LayerNorm.standardize`), `[B, M, C]`,
      or in parts (`grid_byte_array.StandardizedGrid`) for a grid.
    norm_scale: the LayerNorm's scale `[C]` (float32).
    norm_offset: the LayerNorm's offset `[C]` (float32).
    key_w: `[C, Dqk]`.
    key_b: `[Dqk]`.
    value_w: `[C, Dv]`.
    value_b: `[Dv]`.

  Computed once and handed to several cross-attends that share weights.
  """
  standardized: jax.Array | grid_byte_array.StandardizedGrid
  norm_scale: jax.Array
  norm_offset: jax.Array
  key_w: jax.Array
  key_b: jax.Array
  value_w: jax.Array
  value_b: jax.Array

  def normalized(self) -> jax.Array:
    """The LayerNorm's output `[B, M, C]`, in the inputs' dtype."""
    x = self.standardized
    if isinstance(x, grid_byte_array.StandardizedGrid):
      x = x.dense()
    return (x.astype(jnp.float32) * self.norm_scale +
            self.norm_offset).astype(x.dtype)


class Attention(hk.Module):
  """Multi-head attention with separate Q, K, V and output Linears."""

  def __init__(self,
               *,
               num_heads: int,
               qk_channels: int,
               v_channels: int,
               output_channels: int,
               impl: str = 'einsum',
               dropout_rate: float = 0.0,
               name: Optional[str] = None):
    """Builds the attention.

    Args:
      num_heads: number of heads; must divide `qk_channels` and `v_channels`.
      qk_channels: total width of queries and keys (all heads together).
      v_channels: total width of values.
      output_channels: width after the output projection.
      impl: one of `ATTENTION_IMPLS`.
      dropout_rate: dropout on the attention weights during training.
      name: module name.
    """
    super().__init__(name=name)
    check_positive_int(num_heads, 'num_heads')
    check_positive_int(qk_channels, 'qk_channels')
    check_positive_int(v_channels, 'v_channels')
    check_positive_int(output_channels, 'output_channels')
    for what, channels in (('qk_channels', qk_channels),
                           ('v_channels', v_channels)):
      if channels % num_heads:
        raise ValueError(f'num_heads={num_heads} does not divide '
                         f'{what}={channels}.')
    if impl not in ATTENTION_IMPLS:
      raise ValueError(
          f'attention_impl must be one of {ATTENTION_IMPLS}, got {impl!r}.')
    self._num_heads = num_heads
    self._qk_channels = qk_channels
    self._v_channels = v_channels
    self._output_channels = output_channels
    self._impl = impl
    self._dropout_rate = check_dropout(dropout_rate, 'attention dropout')

  def _split_heads(self, x: jax.Array) -> jax.Array:
    # [B, T, H * Dh] -> [B, T, H, Dh]
    return x.reshape(*x.shape[:-1], self._num_heads, -1)

  @hk.name_like('__call__')
  def keys_values(self, inputs_kv: jax.Array) -> KeysValues:
    """Projects the (already normalised) key/value inputs `[B, M, Ckv]`."""
    keys = linear(self._qk_channels, 'key')(inputs_kv)  # [B, M, Dqk]
    values = linear(self._v_channels, 'value')(inputs_kv)  # [B, M, Dv]
    return KeysValues(self._split_heads(keys), self._split_heads(values))

  @hk.name_like('__call__')
  def projection_parameters(
      self, input_channels: int, dtype: jnp.dtype
  ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """The key and value Linears' parameters that `keys_values` would use
    on inputs of width `input_channels`: `(key_w, key_b, value_w, value_b)`.
    """
    return (*linear(self._qk_channels, 'key').parameters(input_channels,
                                                         dtype),
            *linear(self._v_channels, 'value').parameters(input_channels,
                                                          dtype))

  def _attend_unprojected(self, queries: jax.Array,
                          kv: UnprojectedKeysValues,
                          key_mask: Optional[jax.Array],
                          is_training: bool) -> jax.Array:
    """One-head attention with the inputs' LayerNorm affine map and the K/V
    projections moved to the queries.

    With standardised inputs S `[B, M, C]`, the LayerNorm output is
    `X = S diag(g) + 1 o^T` (scale g, offset o), `K = X Wk + bk` and
    `V = X Wv + bv`. Then `Q K^T = ((Q Wk^T) diag(g)) S^T` plus, for each
    query, one value added to all its logits (`Q Wk^T o + Q bk`), which the
    softmax cancels (also under a key mask); and, because each row of the
    weights P sums to 1, `P V = ((P S) diag(g) + 1 o^T) Wv + bv`. So the
    logits and weighted sum run on S, which involves no parameter, and
    every parameter acts on the N queries instead of the M inputs: for
    M >> N this saves the `4 B M C Dqk` FLOPs of the projections in the
    forward, and in the backward the gradients of the projections and of
    the LayerNorm output `[B, M, C]` (two more `[B, N, M] x [B, M, C]`
    matmuls and the LayerNorm's backward over the inputs). Same outputs up
    to float rounding; the softmax scale stays `1 / sqrt(Dqk)`. With
    dropout on the weights the rows do not sum to 1, so training with
    attention dropout projects K and V. When S is a grid's in parts
    (`grid_byte_array.StandardizedGrid`), the logits `((Q Wk^T) diag(g)) S^T`
    and `P S` come from the parts without building S.

    Args:
      queries: `[B, N, Dqk]` (after the query Linear).
      kv: from `CrossAttendBlock.keys_values` with absorbed projections.
      key_mask: optional `[B, M]` booleans.
      is_training: enables dropout.

    Returns:
      `[B, N, Dv]`.
    """
    if self._dropout_rate > 0.0 and is_training:
      x = kv.normalized()
      flat = x.reshape(-1, x.shape[-1])  # One contracting axis.
      keys = (flat @ kv.key_w + kv.key_b).reshape(*x.shape[:2], -1)
      values = (flat @ kv.value_w + kv.value_b).reshape(*x.shape[:2], -1)
      attended = scaled_dot_product_attention(
          queries[:, :, None], keys[:, :, None], values[:, :, None],
          key_mask=key_mask, impl=self._impl,
          dropout_rate=self._dropout_rate, is_training=is_training)
      return attended[:, :, 0]
    s = kv.standardized
    batch, num_queries, qk_channels = queries.shape
    # [B * N, Dqk] x [Dqk, C]: one contracting axis (see FlatLinear).
    queries_in = (queries.reshape(-1, qk_channels) @ kv.key_w.T).reshape(
        batch, num_queries, -1)  # [B, N, C]
    queries_in = (queries_in * kv.norm_scale).astype(s.dtype)
    scale = 1.0 / math.sqrt(qk_channels)
    if isinstance(s, grid_byte_array.StandardizedGrid):
      # Its own contractions (whatever `impl`): no fused kernel takes parts.
      logits = s.logits(queries_in)[:, None] * scale  # [B, 1, N, M]
      pooled = s.pool(attention_weights(logits, key_mask, s.dtype)[:, 0])
    else:
      pooled = scaled_dot_product_attention(
          queries_in[:, :, None], s[:, :, None], s[:, :, None],
          key_mask=key_mask, impl=self._impl, scale=scale)  # [B, N, 1, C]
    pooled = (pooled.reshape(batch * num_queries, -1) * kv.norm_scale +
              kv.norm_offset).astype(s.dtype)
    return (pooled @ kv.value_w + kv.value_b).reshape(batch, num_queries, -1)

  def __call__(self,
               inputs_q: jax.Array,
               keys_values: KeysValues | UnprojectedKeysValues,
               *,
               key_mask: Optional[jax.Array] = None,
               is_training: bool) -> jax.Array:
    """Attends from `inputs_q` `[B, N, Cq]` to keys and values.

    Returns:
      `[B, N, output_channels]`.
    """
    queries = linear(self._qk_channels, 'query')(inputs_q)  # [B, N, Dqk]
    if isinstance(keys_values, UnprojectedKeysValues):
      attended = self._attend_unprojected(queries, keys_values, key_mask,
                                          is_training)  # [B, N, Dv]
      return linear(self._output_channels, 'output')(attended)
    queries = self._split_heads(queries)  # [B, N, H, Dh]
    attended = scaled_dot_product_attention(
        queries,
        keys_values.keys,
        keys_values.values,
        key_mask=key_mask,
        impl=self._impl,
        dropout_rate=self._dropout_rate,
        is_training=is_training)  # [B, N, H, Dv/H]
    attended = attended.reshape(*attended.shape[:2], self._v_channels)
    return linear(self._output_channels, 'output')(attended)


def check_mlp_activation(activation) -> str:
  """Returns `activation` if it names one of `MLP_ACTIVATIONS`, else raises."""
  if activation not in MLP_ACTIVATIONS:
    raise ValueError(f'mlp_activation must be one of '
                     f'{sorted(MLP_ACTIVATIONS)}, got {activation!r}.')
  return activation


class MLP(hk.Module):
  """`Linear(w * D) -> GELU (tanh form by default) -> Linear(D)`."""

  def __init__(self,
               *,
               widening_factor: int = 1,
               dropout_rate: float = 0.0,
               activation: str = 'gelu_tanh',
               name: Optional[str] = None):
    super().__init__(name=name)
    self._widening_factor = check_positive_int(widening_factor,
                                               'widening_factor')
    self._dropout_rate = check_dropout(dropout_rate)
    self._activation = MLP_ACTIVATIONS[check_mlp_activation(activation)]

  def __call__(self, x: jax.Array, *, is_training: bool) -> jax.Array:
    channels = x.shape[-1]
    hidden = linear(self._widening_factor * channels, 'hidden')(x)
    hidden = self._activation(hidden)
    out = linear(channels, 'output')(hidden)
    return dropout(out, self._dropout_rate, is_training)


def residual_then_mlp(latents: jax.Array, attended: jax.Array, *,
                      widening_factor: int, dropout_rate: float,
                      is_training: bool, mlp_activation: str = 'gelu_tanh',
                      query_residual: bool = True) -> jax.Array:
  """The second half of both blocks: `z += Dropout(attended)`, then
  `z += MLP(LN(z))`, on latents `[B, N, D]`.

  Without `query_residual` the first step is `z = Dropout(attended)` (a
  Perceiver IO decoder whose queries and outputs mean different things).
  Called inside a block's `__call__`, so that its 'mlp' and 'mlp_norm'
  modules are named under the block.
  """
  attended = dropout(attended, dropout_rate, is_training)
  latents = latents + attended if query_residual else attended
  mlp = MLP(widening_factor=widening_factor, dropout_rate=dropout_rate,
            activation=mlp_activation, name='mlp')
  return latents + mlp(layer_norm('mlp_norm')(latents),
                       is_training=is_training)


class CrossAttendBlock(hk.Module):
  """`z += Attn(q=LN(z), kv=LN(x))`, then `z += MLP(LN(z))`.

  Queries, keys and values have the inputs' width C (split over
  `num_heads`); the attention output is projected back to the latent width D.
  The inputs' LayerNorm and key/value projections are exposed separately
  (`keys_values`) so that cross-attends sharing these weights can compute
  them once per forward pass. With `absorb_projections` and one head the
  key/value projections and the LayerNorm's scale and offset act on the
  queries' side instead (`Attention._attend_unprojected`): same parameters
  and outputs, fewer FLOPs when there are more inputs than latents.
  """

  def __init__(self,
               *,
               input_channels: int,
               num_heads: int = 1,
               widening_factor: int = 1,
               dropout: float = 0.0,
               attention_impl: str = 'einsum',
               absorb_projections: bool = False,
               qk_channels: Optional[int] = None,
               v_channels: Optional[int] = None,
               mlp_activation: str = 'gelu_tanh',
               query_residual: bool = True,
               name: Optional[str] = None):
    """Builds the block.

    Args:
      input_channels: C, the inputs' width.
      num_heads: heads; must divide the query/key and value widths.
      widening_factor: the MLP's hidden width over D.
      dropout: dropout on attention weights and residual branches.
      attention_impl: one of `ATTENTION_IMPLS`.
      absorb_projections: see the class docstring.
      qk_channels: query/key width (all heads); None: C, the paper's.
      v_channels: value width; None: the query/key width.
      mlp_activation: one of `MLP_ACTIVATIONS`.
      query_residual: add the attention's output to the queries (the
        paper's); without it the output replaces them.
      name: module name.
    """
    super().__init__(name=name)
    self._input_channels = check_positive_int(input_channels,
                                              'input_channels')
    if not isinstance(absorb_projections, bool):
      raise ValueError(f'absorb_projections must be a bool, got '
                       f'{absorb_projections!r}.')
    self._absorb_projections = absorb_projections
    self._num_heads = check_positive_int(num_heads, 'num_cross_heads')
    self._qk_channels, self._v_channels = attention_widths(
        input_channels, qk_channels, v_channels)
    for what, channels in (('query/key', self._qk_channels),
                           ('value', self._v_channels)):
      if channels % num_heads:
        raise ValueError(
            f'num_cross_heads={num_heads} does not divide the cross-attend '
            f'{what} width {channels} (the input channel count unless '
            'qk_channels/v_channels are set).')
    if not isinstance(query_residual, bool):
      raise ValueError(f'query_residual must be a bool, got '
                       f'{query_residual!r}.')
    self._query_residual = query_residual
    self._mlp_activation = check_mlp_activation(mlp_activation)
    self._widening_factor = widening_factor
    self._dropout = check_dropout(dropout)
    self._attention_impl = attention_impl

  @hk.name_like('__call__')
  def _attention(self, output_channels: Optional[int]) -> Attention:
    # Built the same way by both methods so that Haiku gives its parameters
    # one name ('attention') whichever method runs first.
    return Attention(
        num_heads=self._num_heads,
        qk_channels=self._qk_channels,
        v_channels=self._v_channels,
        output_channels=output_channels or 1,
        impl=self._attention_impl,
        dropout_rate=self._dropout,
        name='attention')

  @hk.name_like('__call__')
  def keys_values(
      self, inputs: jax.Array | grid_byte_array.GridByteArray
  ) -> KeysValues | UnprojectedKeysValues:
    """LayerNorm and key/value projections of the inputs `[B, M, C]`.

    A grid's byte array in parts stays in parts where the projections are
    absorbed (one head), and is materialised otherwise.
    """
    if inputs.shape[-1] != self._input_channels:
      raise ValueError(
          f'inputs have shape {inputs.shape} with {inputs.shape[-1]} '
          f'channels, but this cross-attend was built for '
          f'{self._input_channels} input channels.')
    norm = layer_norm('input_norm')
    attention = self._attention(None)
    if self._absorb_projections and self._num_heads == 1:
      # Parameters created in the order of the other branch: same values.
      scale, offset = norm.parameters(inputs.shape[-1])
      return UnprojectedKeysValues(
          norm.standardize(inputs), scale, offset,
          *attention.projection_parameters(inputs.shape[-1], inputs.dtype))
    if isinstance(inputs, grid_byte_array.GridByteArray):
      inputs = inputs.materialize()
    return attention.keys_values(norm(inputs))  # LayerNorm: [B, M, C]

  def __call__(self,
               latents: jax.Array,
               inputs: Optional[
                   jax.Array | grid_byte_array.GridByteArray] = None,
               *,
               keys_values: Optional[
                   KeysValues | UnprojectedKeysValues] = None,
               input_mask: Optional[jax.Array] = None,
               is_training: bool) -> jax.Array:
    """Updates latents `[B, N, D]` from inputs `[B, M, C]` (or their K/V).

    Args:
      latents: `[B, N, D]`.
      inputs: `[B, M, C]` (or a `GridByteArray`); omit when `keys_values`
        are given.
      keys_values: the result of `keys_values(inputs)`, to reuse it.
      input_mask: optional `[B, M]` booleans, True where an input is real.
      is_training: enables dropout.

    Returns:
      The updated latents, `[B, N, D]`.
    """
    if (inputs is None) == (keys_values is None):
      raise ValueError('Pass exactly one of inputs and keys_values.')
    if keys_values is None:
      keys_values = self.keys_values(inputs)
    latent_channels = latents.shape[-1]
    attention = self._attention(latent_channels)
    attended = attention(
        layer_norm('query_norm')(latents),
        keys_values,
        key_mask=input_mask,
        is_training=is_training)
    return residual_then_mlp(latents, attended,
                             widening_factor=self._widening_factor,
                             dropout_rate=self._dropout,
                             is_training=is_training,
                             mlp_activation=self._mlp_activation,
                             query_residual=self._query_residual)


def attention_widths(default_channels: int, qk_channels: Optional[int],
                     v_channels: Optional[int]) -> tuple[int, int]:
  """The query/key and value widths of an attention: `qk_channels` (None:
  `default_channels`) and `v_channels` (None: the query/key width), as
  transformers' Perceiver derives them from its `qk_channels`/`v_channels`.
  """
  if qk_channels is not None:
    check_positive_int(qk_channels, 'qk_channels')
  if v_channels is not None:
    check_positive_int(v_channels, 'v_channels')
  qk = default_channels if qk_channels is None else qk_channels
  return qk, qk if v_channels is None else v_channels


class SelfAttendLayer(hk.Module):
  """`z += Attn(LN(z), LN(z))`, then `z += MLP(LN(z))`, Q/K/V width D
  (unless `qk_channels`/`v_channels` are set, see `attention_widths`)."""

  def __init__(self,
               *,
               num_heads: int = 8,
               widening_factor: int = 1,
               dropout: float = 0.0,
               attention_impl: str = 'einsum',
               qk_channels: Optional[int] = None,
               v_channels: Optional[int] = None,
               mlp_activation: str = 'gelu_tanh',
               name: Optional[str] = None):
    super().__init__(name=name)
    self._num_heads = check_positive_int(num_heads, 'num_self_heads')
    self._widening_factor = widening_factor
    self._dropout = check_dropout(dropout)
    self._attention_impl = attention_impl
    attention_widths(1, qk_channels, v_channels)  # Validates them.
    self._qk_channels = qk_channels
    self._v_channels = v_channels
    self._mlp_activation = check_mlp_activation(mlp_activation)

  def __call__(self, latents: jax.Array, *, is_training: bool) -> jax.Array:
    """Maps latents `[B, N, D]` to `[B, N, D]`."""
    channels = latents.shape[-1]
    qk_channels, v_channels = attention_widths(channels, self._qk_channels,
                                               self._v_channels)
    if qk_channels % self._num_heads or v_channels % self._num_heads:
      raise ValueError(f'num_self_heads={self._num_heads} does not divide '
                       f'the self-attend widths (query/key {qk_channels}, '
                       f'value {v_channels}; the latent channel count '
                       f'{channels} unless qk_channels/v_channels are set).')
    attention = Attention(
        num_heads=self._num_heads,
        qk_channels=qk_channels,
        v_channels=v_channels,
        output_channels=channels,
        impl=self._attention_impl,
        dropout_rate=self._dropout,
        name='attention')
    normed = layer_norm('attention_norm')(latents)
    attended = attention(normed, attention.keys_values(normed),
                         is_training=is_training)
    return residual_then_mlp(latents, attended,
                             widening_factor=self._widening_factor,
                             dropout_rate=self._dropout,
                             is_training=is_training,
                             mlp_activation=self._mlp_activation)


class LatentTransformer(hk.Module):
  """A stack of `num_layers` self-attend layers, each with its own weights."""

  def __init__(self,
               *,
               num_layers: int,
               num_heads: int = 8,
               widening_factor: int = 1,
               dropout: float = 0.0,
               attention_impl: str = 'einsum',
               qk_channels: Optional[int] = None,
               v_channels: Optional[int] = None,
               mlp_activation: str = 'gelu_tanh',
               name: Optional[str] = None):
    super().__init__(name=name)
    self._num_layers = check_positive_int(num_layers,
                                          'num_self_attends_per_block')
    self._layer_kwargs = dict(
        num_heads=num_heads,
        widening_factor=widening_factor,
        dropout=dropout,
        attention_impl=attention_impl,
        qk_channels=qk_channels,
        v_channels=v_channels,
        mlp_activation=mlp_activation)

  def __call__(self, latents: jax.Array, *, is_training: bool) -> jax.Array:
    """Maps latents `[B, N, D]` to `[B, N, D]`."""
    for i in range(self._num_layers):
      layer = SelfAttendLayer(name=f'self_attend_{i}', **self._layer_kwargs)
      latents = layer(latents, is_training=is_training)
    return latents
