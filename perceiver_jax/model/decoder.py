"""Perceiver IO decoding: output queries cross-attend to the latents.

The Perceiver IO paper (Jaegle et al. 2021b) reads the encoder's latents
`[B, N, D]` out with a cross-attend whose queries describe the outputs. For
classification there is one trainable query `[1, E]`; its cross-attend output
`[B, 1, E]` goes through a Linear to the logits. This is the head of
DeepMind's released ImageNet classifiers (and of transformers'
`PerceiverForImageClassification*` ports of them); the paper we reproduce
averages the latents instead (`perceiver.ClassificationHead`).

Parameter names: `classification_decoder/query`,
`classification_decoder/cross_attend/...` (an `attention.CrossAttendBlock`:
the query plays the latents' part, the latents the inputs'), and
`classification_decoder/logits/{w,b}`.
"""

from typing import Any, Mapping, Optional

import haiku as hk
import jax
import jax.numpy as jnp

from perceiver_jax import checks
from perceiver_jax.model import attention as attention_lib
from perceiver_jax.model import perceiver

HEADS = ('mean_linear', 'perceiver_io')

# `config.model.decoder` fields and their defaults (those of the released
# classifiers: one head, no widening, a query residual, the query as wide
# as the latents).
DECODER_DEFAULTS = dict(
    num_heads=1,
    widening_factor=1,
    query_residual=True,
    num_query_channels=None,
    qk_channels=None,
    v_channels=None,
)


def decoder_settings(model_config: Mapping[str, Any]) -> dict[str, Any]:
  """`config.model.decoder` with `DECODER_DEFAULTS` filled in.

  Raises:
    ValueError: on a field the decoder does not know.
  """
  given = dict(model_config.get('decoder') or {})
  unknown = sorted(set(given) - set(DECODER_DEFAULTS))
  if unknown:
    raise ValueError(f'config.model.decoder has unknown fields {unknown}; '
                     f'known: {sorted(DECODER_DEFAULTS)}.')
  return {**DECODER_DEFAULTS, **given}


def _checked_block_kwargs(**kwargs: Any) -> dict[str, Any]:
  """The decoding cross-attend's `attention.CrossAttendBlock` arguments,
  checked; errors name the `config.model.decoder` field."""
  for name in ('num_heads', 'widening_factor'):
    checks.positive_int(kwargs[name], f'config.model.decoder.{name}')
  for name in ('qk_channels', 'v_channels'):
    if kwargs[name] is not None:
      checks.positive_int(kwargs[name], f'config.model.decoder.{name}')
  if kwargs['activation'] not in attention_lib.ACTIVATIONS:
    raise ValueError(f'mlp_activation must be one of '
                     f'{sorted(attention_lib.ACTIVATIONS)}, got '
                     f'{kwargs["activation"]!r}.')
  if not isinstance(kwargs['query_residual'], bool):
    raise ValueError(f'config.model.decoder.query_residual must be a bool, '
                     f'got {kwargs["query_residual"]!r}.')
  return kwargs


class ClassificationDecoder(hk.Module):
  """One trainable query cross-attends to the latents; a Linear gives logits.

  Maps latents `[B, N, D]` to logits `[B, num_classes]`.
  """

  def __init__(self,
               num_classes: int,
               *,
               num_heads: int = 1,
               widening_factor: int = 1,
               query_residual: bool = True,
               num_query_channels: Optional[int] = None,
               qk_channels: Optional[int] = None,
               v_channels: Optional[int] = None,
               mlp_activation: str = 'gelu_tanh',
               attention_impl: str = 'einsum',
               name: Optional[str] = 'classification_decoder'):
    """Builds the decoder.

    Args:
      num_classes: logits per example.
      num_heads: heads of the decoding cross-attend.
      widening_factor: its MLP's widening.
      query_residual: add the attention output to the query.
      num_query_channels: E, the query's width; None: D.
      qk_channels: query/key width; None: D (the latents' width, as
        transformers' `cross_attention_shape_for_attention='kv'`).
      v_channels: value width; None: the query/key width.
      mlp_activation: one of `attention.MLP_ACTIVATIONS`.
      attention_impl: one of `attention.ATTENTION_IMPLS`.
      name: module name.
    """
    super().__init__(name=name)
    self._num_classes = checks.positive_int(num_classes, 'num_classes')
    if num_query_channels is not None:
      checks.positive_int(num_query_channels,
                          'config.model.decoder.num_query_channels')
    self._num_query_channels = num_query_channels
    self._block_kwargs = _checked_block_kwargs(
        num_heads=num_heads, widening_factor=widening_factor,
        qk_channels=qk_channels, v_channels=v_channels,
        activation=mlp_activation, query_residual=query_residual,
        attention_impl=attention_impl)

  def __call__(self, latents: jax.Array, *, is_training: bool) -> jax.Array:
    """Maps latents `[B, N, D]` to logits `[B, num_classes]`."""
    batch_size, _, channels = latents.shape
    query_channels = self._num_query_channels or channels
    query = hk.get_parameter(
        'query', [1, query_channels], jnp.float32,
        init=hk.initializers.TruncatedNormal(stddev=0.02))
    query = jnp.broadcast_to(query.astype(latents.dtype),
                             (batch_size, 1, query_channels))  # [B, 1, E]
    qk_channels = self._block_kwargs['qk_channels'] or channels
    v_channels = self._block_kwargs['v_channels'] or qk_channels
    if qk_channels % self._block_kwargs['num_heads'] or (
        v_channels % self._block_kwargs['num_heads']):
      raise ValueError(
          f'config.model.decoder.num_heads={self._block_kwargs["num_heads"]} '
          f'does not divide the decoder\'s query/key width {qk_channels} or '
          f'value width {v_channels}.')
    block = attention_lib.CrossAttendBlock(name='cross_attend',
                                           **self._block_kwargs)
    decoded = block(query, latents, is_training=is_training)  # [B, 1, E]
    logits = hk.Linear(self._num_classes, name='logits')(decoded[:, 0])
    return logits.astype(jnp.float32)  # [B, num_classes]


class PerceiverIOClassifier:
  """The Perceiver encoder followed by `ClassificationDecoder`.

  Like `perceiver.PerceiverClassifier` a plain composition, so that the
  parameters are `perceiver/...` and `classification_decoder/...`.
  """

  def __init__(self, num_classes: int, *,
               decoder: Optional[Mapping[str, Any]] = None,
               **encoder_config):
    """Builds both parts.

    Args:
      num_classes: logits per example.
      decoder: `ClassificationDecoder` arguments (`DECODER_DEFAULTS`).
      **encoder_config: `perceiver.Perceiver` arguments; its
        `mlp_activation` and `attention_impl` apply to the decoder too.
    """
    self.encoder = perceiver.Perceiver(**encoder_config)
    self.decoder = ClassificationDecoder(
        num_classes,
        mlp_activation=encoder_config.get('mlp_activation', 'gelu_tanh'),
        attention_impl=encoder_config.get('attention_impl', 'einsum'),
        **{**DECODER_DEFAULTS, **(decoder or {})})

  def __call__(self,
               inputs: perceiver.ByteArray,
               *,
               input_mask: Optional[jax.Array] = None,
               is_training: bool) -> jax.Array:
    """Maps inputs `[B, M, C]` to logits `[B, num_classes]`."""
    latents = self.encoder(inputs, input_mask=input_mask,
                           is_training=is_training)
    return self.decoder(latents, is_training=is_training)
