"""Perceiver IO decoding: output queries cross-attend to the latents.

Perceiver IO (Jaegle et al. 2021b) reads latents `[B, N, D]` out with a
cross-attend whose queries describe the outputs (trainable, or Fourier
features of the outputs' positions). Its classifiers, DeepMind's released
ImageNet models, use one trainable query and a Linear to the logits
(`ClassificationDecoder`: `classification_decoder/{query, cross_attend,
logits}`); the paper we reproduce averages the latents instead.
"""

import math
from typing import Any, Mapping, Optional, Sequence

import haiku as hk
import jax
import jax.numpy as jnp

from perceiver_jax import checks
from perceiver_jax.model import attention as attention_lib
from perceiver_jax.model import encoder_config
from perceiver_jax.model import perceiver
from perceiver_jax.model import position_encoding as pe

HEADS = ('mean_linear', 'perceiver_io')
QUERY_TYPES = ('trainable', 'fourier')

# `config.model.decoder` fields and their defaults (those of the released
# classifiers: one head, no widening, a query residual, the query as wide
# as the latents).
DECODER_DEFAULTS = dict(
    query_type='trainable',
    query_num_bands=16,
    num_heads=1,
    widening_factor=1,
    query_residual=True,
    num_query_channels=None,
    qk_channels=None,
    v_channels=None,
)


def decoder_settings(model_config: Mapping[str, Any]) -> dict[str, Any]:
  """`config.model.decoder` with `DECODER_DEFAULTS` filled in."""
  given = dict(model_config.get('decoder') or {})
  unknown = sorted(set(given) - set(DECODER_DEFAULTS))
  if unknown:
    raise ValueError(f'config.model.decoder has unknown fields {unknown}; '
                     f'known: {sorted(DECODER_DEFAULTS)}.')
  return {**DECODER_DEFAULTS, **given}


class PerceiverIODecoder(hk.Module):
  """Maps latents `[B, N, D]` to outputs `[B, O, output_channels]`: queries
  `[O, E]` (`query_type` 'trainable', E `num_query_channels` or D; or
  'fourier', the features of the `output_index_dims` grid) cross-attend to
  the latents, and a Linear maps each output. `qk_channels` defaults to D
  (transformers' `cross_attention_shape_for_attention='kv'`)."""

  def __init__(self,
               output_channels: int,
               *,
               output_index_dims: Sequence[int] = (1,),
               query_type: str = 'trainable',
               query_num_bands: int = 16,
               num_heads: int = 1,
               widening_factor: int = 1,
               query_residual: bool = True,
               num_query_channels: Optional[int] = None,
               qk_channels: Optional[int] = None,
               v_channels: Optional[int] = None,
               mlp_activation: str = 'gelu_tanh',
               attention_impl: str = 'einsum',
               output_name: str = 'outputs',
               name: Optional[str] = 'perceiver_io_decoder'):
    super().__init__(name=name)
    self._output_channels = checks.positive_int(output_channels,
                                                'output_channels')
    self._output_index_dims = pe.check_index_dims(output_index_dims)
    field = 'config.model.decoder.'
    checks.one_of(query_type, field + 'query_type', QUERY_TYPES)
    checks.positive_int(query_num_bands, field + 'query_num_bands')
    if num_query_channels is not None:
      if query_type == 'fourier':
        raise ValueError(f'{field}num_query_channels must be None with '
                         'Fourier queries (their width is d (2K + 1)).')
      checks.positive_int(num_query_channels, field + 'num_query_channels')
    for key, value in (('num_heads', num_heads),
                       ('widening_factor', widening_factor),
                       ('qk_channels', qk_channels),
                       ('v_channels', v_channels)):
      if value is not None:  # Only the channels may be None (default).
        checks.positive_int(value, field + key)
    checks.one_of(mlp_activation, 'mlp_activation',
                  tuple(attention_lib.ACTIVATIONS))
    checks.boolean(query_residual, field + 'query_residual')
    self._query_type = query_type
    self._query_num_bands = query_num_bands
    self._num_query_channels = num_query_channels
    self._output_name = output_name
    self._block_kwargs = dict(
        num_heads=num_heads, widening_factor=widening_factor,
        qk_channels=qk_channels, v_channels=v_channels,
        activation=mlp_activation, query_residual=query_residual,
        attention_impl=attention_impl)

  @hk.name_like('__call__')
  def queries(self, batch_size: int, latent_channels: int,
              dtype: jnp.dtype) -> jax.Array:
    """The queries `[B, O, E]`."""
    num_outputs = math.prod(self._output_index_dims)
    if self._query_type == 'fourier':
      features = pe.fourier_grid_features(self._output_index_dims,
                                          self._query_num_bands)  # [O, E]
      query = jnp.asarray(features, dtype)
    else:
      channels = self._num_query_channels or latent_channels
      query = hk.get_parameter(
          'query', [num_outputs, channels], jnp.float32,
          init=hk.initializers.TruncatedNormal(stddev=0.02)).astype(dtype)
    return jnp.broadcast_to(query, (batch_size, *query.shape))

  def __call__(self, latents: jax.Array, *, is_training: bool) -> jax.Array:
    """Maps latents `[B, N, D]` to outputs `[B, O, output_channels]`."""
    batch_size, _, channels = latents.shape
    qk_channels = self._block_kwargs['qk_channels'] or channels
    v_channels = self._block_kwargs['v_channels'] or qk_channels
    if qk_channels % self._block_kwargs['num_heads'] or (
        v_channels % self._block_kwargs['num_heads']):
      raise ValueError(
          f'config.model.decoder.num_heads={self._block_kwargs["num_heads"]} '
          f'does not divide the decoder\'s query/key width {qk_channels} or '
          f'value width {v_channels}.')
    queries = self.queries(batch_size, channels, latents.dtype)
    block = attention_lib.CrossAttendBlock(name='cross_attend',
                                           **self._block_kwargs)
    decoded = block(queries, latents, is_training=is_training)  # [B, O, E]
    outputs = hk.Linear(self._output_channels, name=self._output_name)(
        decoded)
    return outputs.astype(jnp.float32)  # [B, O, output_channels]


class ClassificationDecoder(PerceiverIODecoder):
  """Maps latents `[B, N, D]` to logits `[B, num_classes]` with one query."""

  def __init__(self, num_classes: int, *,
               name: Optional[str] = 'classification_decoder', **kwargs: Any):
    if tuple(kwargs.get('output_index_dims', (1,))) != (1,):
      raise ValueError('A classification decoder has one output query.')
    super().__init__(checks.positive_int(num_classes, 'num_classes'),
                     output_name='logits', name=name, **kwargs)

  def __call__(self, latents: jax.Array, *, is_training: bool) -> jax.Array:
    """Maps latents `[B, N, D]` to logits `[B, num_classes]`."""
    return super().__call__(latents, is_training=is_training)[:, 0]


class PerceiverIOClassifier:
  """The encoder, then `ClassificationDecoder` (a plain composition, like
  `perceiver.PerceiverClassifier`)."""

  def __init__(self, num_classes: int,
               config: encoder_config.EncoderConfig, *,
               decoder: Optional[Mapping[str, Any]] = None):
    """`decoder`: `ClassificationDecoder` arguments (`DECODER_DEFAULTS`);
    the encoder's `mlp_activation` and `attention_impl` apply to it too."""
    self.encoder = perceiver.Perceiver(config)
    self.decoder = ClassificationDecoder(
        num_classes, mlp_activation=config.mlp_activation,
        attention_impl=config.attention_impl, **(decoder or {}))

  def __call__(self,
               inputs: perceiver.ByteArray,
               *,
               input_mask: Optional[jax.Array] = None,
               is_training: bool) -> jax.Array:
    """Maps inputs `[B, M, C]` to logits `[B, num_classes]`."""
    latents = self.encoder(inputs, input_mask=input_mask,
                           is_training=is_training)
    return self.decoder(latents, is_training=is_training)
