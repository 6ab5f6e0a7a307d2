"""`EncoderConfig`: every setting of the Perceiver encoder, checked once.

Built from `config.model.encoder` (`EncoderConfig.from_mapping`) and passed
to `perceiver.Perceiver(**fields)`. The defaults are the paper's ImageNet
model (docs/paper.md sections 1-2). The execution modes at the end change
how the same function is computed, never what it computes.
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


def _divides(num_heads: int, heads_name: str, channels: int,
             what: str) -> None:
  """`what` names the width `channels` in the error."""
  if channels % num_heads:
    raise ValueError(f'{heads_name}={num_heads} does not divide {what}.')


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  """The encoder's structure, sizes and execution modes.

  Structure (docs/paper.md section 2):
    num_blocks: latent Transformers (8 for ImageNet).
    num_self_attends_per_block: self-attend layers per latent Transformer
      (6); 0 means cross-attends only.
    num_cross_attends: cross-attends (8).
    cross_attend_placement: 'interleaved' (cross-attend j before block
      `floor(j * num_blocks / num_cross_attends)`) or 'start' (all before
      the first block).
    share_weights: the first cross-attend owns its weights, the later ones
      share one set, and every latent Transformer shares one set.
  Sizes (section 1):
    num_latents: N. num_latent_channels: D.
    num_cross_heads: heads of the cross-attends (1); must divide C.
    num_self_heads: heads of the self-attends (8); must divide D.
    widening_factor: MLP hidden width over its input width (1).
    dropout: on attention weights and residual branches (0).
    attention_impl: 'einsum' or 'dot_product' (`jax.nn.dot_product_attention`).
  Other Perceivers' variations (transformers' Perceiver, Perceiver IO;
  docs/checkpoints.md); the defaults are the paper's:
    mlp_activation: 'gelu_tanh' (the paper's) or 'gelu' (exact erf form).
    cross_attend_widening_factor, self_attend_widening_factor: the MLP
      widening of each kind of block (None: `widening_factor`).
    qk_channels, v_channels: the Q/K and V widths of every attention
      (None: the width attended over, C for cross-attends and D for
      self-attends; V defaults to the Q/K width).
    cross_attend_query_residual: the cross-attends add their attention to
      the latents (the paper); without it they replace them.
  Execution modes (same parameters and outputs up to float rounding):
    reuse_shared_keys_values: the input LayerNorm and K/V projections of
      cross-attends that share weights are computed once per forward.
    absorb_cross_attend_projections: one-head cross-attends apply the
      inputs' LayerNorm affine map and K/V projections to the queries
      (`fast_cross_attend`), fewer FLOPs when M > N.
    scan_blocks: runs of identical blocks run under `hk.scan`, so the
      compiled program does not grow with depth.
    precision: 'float32' or 'bfloat16' compute (parameters stay float32;
      LayerNorm statistics, logits and softmax run in float32).
    remat: 'none' or 'block' (each cross-attend and each latent
      Transformer rematerialised in the backward).
  """
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
    """Builds the config from a mapping such as `config.model.encoder`;
    errors name the field by its path (`where.field`), and a field that
    `EncoderConfig` does not have is named too."""
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
    """Checks that the cross-attend heads divide the inputs' width C;
    `where` names the inputs in the error (their shape, or a field)."""
    checks.positive_int(channels, 'input_channels')
    self._check_heads(self.num_cross_heads, 'num_cross_heads', channels,
                      f'the input channel count {channels} ({where})')

  def _check_heads(self, num_heads: int, heads_name: str, channels: int,
                   what: str) -> None:
    """Checks that `num_heads` divide the Q/K and V widths of attention over
    `channels` wide inputs (named `what`)."""
    if self.qk_channels is None:
      _divides(num_heads, heads_name, channels, what)
    else:
      _divides(num_heads, heads_name, self.qk_channels,
               f'qk_channels={self.qk_channels}')
    if self.v_channels is not None:
      _divides(num_heads, heads_name, self.v_channels,
               f'v_channels={self.v_channels}')

  def widening_factors(self) -> tuple[int, int]:
    """The MLP widening of the cross-attends and of the self-attends."""
    return (self.cross_attend_widening_factor or self.widening_factor,
            self.self_attend_widening_factor or self.widening_factor)
