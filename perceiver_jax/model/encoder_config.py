"""`EncoderConfig`: every setting of the Perceiver encoder, checked once.

Built from `config.model.encoder` (`EncoderConfig.from_mapping`) and handed
to `perceiver.Perceiver`. The defaults are the paper's ImageNet model
(docs/paper.md sections 1-2); the execution modes change how the same
function is computed, never what it computes.
"""

import dataclasses
import math
from typing import Any, Mapping, Optional

from perceiver_jax import checks

ATTENTION_IMPLS = ('einsum', 'dot_product')
MLP_ACTIVATIONS = ('gelu_tanh', 'gelu')
PLACEMENTS = ('interleaved', 'start')
PRECISIONS = ('float32', 'bfloat16')
REMAT_POLICIES = ('none', 'block')


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  """The encoder's structure, sizes and execution modes; docs/model.md
  describes every field. `num_cross_heads` must divide C, `num_self_heads`
  D; interleaved cross-attend j runs before latent Transformer
  `floor(j * num_blocks / num_cross_attends)`."""
  num_blocks: int = 8
  num_self_attends_per_block: int = 6
  num_cross_attends: int = 8
  cross_attend_placement: str = 'interleaved'
  share_weights: bool = True
  num_latents: int = 512
  num_latent_channels: int = 1024
  num_cross_heads: int = 1
  num_self_heads: int = 8
  widening_factor: int = 1
  dropout: float = 0.0
  attention_impl: str = 'einsum'
  mlp_activation: str = 'gelu_tanh'
  cross_attend_widening_factor: Optional[int] = None
  self_attend_widening_factor: Optional[int] = None
  qk_channels: Optional[int] = None
  v_channels: Optional[int] = None
  cross_attend_query_residual: bool = True
  reuse_shared_keys_values: bool = True
  absorb_cross_attend_projections: bool = True
  scan_blocks: bool = False
  precision: str = 'float32'
  remat: str = 'none'

  def __post_init__(self):
    for name in ('num_blocks', 'num_cross_attends', 'num_latents',
                 'num_latent_channels', 'num_cross_heads', 'num_self_heads',
                 'widening_factor'):
      checks.positive_int(getattr(self, name), name)
    depth = self.num_self_attends_per_block
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
      raise ValueError('num_self_attends_per_block must be a non-negative '
                       f'integer, got {depth!r}.')
    checks.one_of(self.cross_attend_placement, 'cross_attend_placement',
            PLACEMENTS)
    if (self.cross_attend_placement == 'interleaved' and depth > 0 and
        self.num_cross_attends > self.num_blocks):
      raise ValueError(
          f'num_cross_attends={self.num_cross_attends} exceeds num_blocks='
          f'{self.num_blocks}: interleaved placement puts at most one '
          'cross-attend before each latent Transformer (use placement '
          '"start" for more).')
    for name in ('cross_attend_widening_factor', 'self_attend_widening_factor',
                 'qk_channels', 'v_channels'):
      if getattr(self, name) is not None:
        checks.positive_int(getattr(self, name), name)
    self._check_heads(self.num_self_heads, 'num_self_heads',
                      self.num_latent_channels,
                      f'num_latent_channels={self.num_latent_channels}')
    rate = self.dropout
    if (isinstance(rate, bool) or not isinstance(rate, (int, float)) or
        not math.isfinite(rate) or not 0.0 <= rate < 1.0):
      raise ValueError(f'dropout must be a finite rate in [0, 1), got '
                       f'{rate!r}.')
    checks.one_of(self.attention_impl, 'attention_impl', ATTENTION_IMPLS)
    checks.one_of(self.mlp_activation, 'mlp_activation', MLP_ACTIVATIONS)
    for name in ('share_weights', 'cross_attend_query_residual',
                 'reuse_shared_keys_values',
                 'absorb_cross_attend_projections', 'scan_blocks'):
      checks.boolean(getattr(self, name), name)
    checks.one_of(self.precision, 'precision', PRECISIONS)
    checks.one_of(self.remat, 'remat', REMAT_POLICIES)

  @classmethod
  def from_mapping(cls, fields: Mapping[str, Any],
                   where: str = 'config.model.encoder') -> 'EncoderConfig':
    """The config of a mapping such as `config.model.encoder`; errors name
    the field by its path (`where.field`), unknown fields too."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
      raise ValueError(f'{where} has unknown field(s) {unknown}; the '
                       f'encoder fields are {sorted(known)}.')
    try:
      return cls(**dict(fields))
    except ValueError as error:
      raise ValueError(f'{where}.{error}') from None

  def check_input_channels(self, channels: int, where: str) -> None:
    """Checks that the cross-attend heads divide the inputs' width C
    (`where` names the inputs)."""
    checks.positive_int(channels, 'input_channels')
    self._check_heads(self.num_cross_heads, 'num_cross_heads', channels,
                      f'the input channel count {channels} ({where})')

  def _check_heads(self, num_heads: int, heads_name: str, channels: int,
                   what: str) -> None:
    widths = [(channels, what) if self.qk_channels is None else
              (self.qk_channels, f'qk_channels={self.qk_channels}')]
    if self.v_channels is not None:
      widths.append((self.v_channels, f'v_channels={self.v_channels}'))
    for width, name in widths:
      if width % num_heads:
        raise ValueError(f'{heads_name}={num_heads} does not divide {name}.')

  def widening_factors(self) -> tuple[int, int]:
    """The MLP widening of the cross-attends and of the self-attends."""
    return (self.cross_attend_widening_factor or self.widening_factor,
            self.self_attend_widening_factor or self.widening_factor)
