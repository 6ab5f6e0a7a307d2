"""The Perceiver encoder, its schedule and weight sharing, and the classifier.

PAPER.md section 2: `num_blocks` latent Transformers, with `num_cross_attends`
cross-attends placed either interleaved (spread evenly, one before each of
some blocks) or all at the start. With `share_weights`, the first
cross-attend owns its weights, later cross-attends share one set, and every
latent Transformer shares one set of `num_self_attends_per_block` layers.

Parameter names (stable; weight-decay masks and checkpoints rely on them):
`perceiver/latents`, `perceiver/cross_attend_<set>/...`,
`perceiver/latent_transformer_<set>/self_attend_<i>/...`, where `<set>` numbers
the distinct weight sets; and `classification_head/...`.

Execution modes (the parameters, their names and the outputs are the same in
every mode, up to float rounding; bfloat16 within its own precision):
- `scan_blocks`: a run of repeated steps with shared weights (the headline's
  cross-attend 1 + latent Transformer 0, seven times) runs as one
  `hk.scan` whose body closes over the shared parameters, so the traced and
  compiled program does not grow with depth.
- `remat='block'`: every cross-attend and latent Transformer is
  rematerialised in the backward pass (`hk.remat`): activation memory per
  block instead of per layer, for about one more forward of compute.
- `precision='bfloat16'`: parameters stay float32 and are cast to bfloat16
  where used; inputs and latents are bfloat16; LayerNorm statistics,
  attention logits and softmax are float32; the encoder returns float32, so
  the head's logits and the loss are float32.
"""

import dataclasses
import math
from typing import Any, Mapping, Optional

import haiku as hk
import jax
import jax.numpy as jnp

from perceiver_jax.model import attention as attention_lib
from perceiver_jax.model import grid_byte_array

PLACEMENTS = ('interleaved', 'start')
PRECISIONS = ('float32', 'bfloat16')
REMAT_POLICIES = ('none', 'block')
_COMPUTE_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


# The encoder's inputs: a byte array `[B, M, C]`, or a grid's in parts.
ByteArray = jax.Array | grid_byte_array.GridByteArray


@dataclasses.dataclass(frozen=True)
class Step:
  """One step of the schedule: a cross-attend or a latent Transformer.

  Attributes:
    kind: 'cross_attend' or 'latent_transformer'.
    index: the step's position among steps of its kind (0-based).
    weight_set: which set of weights the step uses.
  """
  kind: str
  index: int
  weight_set: int


def schedule(*, num_blocks: int, num_self_attends_per_block: int,
             num_cross_attends: int, cross_attend_placement: str,
             share_weights: bool) -> list[Step]:
  """The order of cross-attends and latent Transformers, with weight sets.

  Args:
    num_blocks: number of latent Transformers.
    num_self_attends_per_block: layers per latent Transformer; 0 means
      cross-attends only (no latent Transformer, `num_blocks` unused).
    num_cross_attends: 1..num_blocks when interleaved; at least 1 otherwise.
    cross_attend_placement: 'interleaved' puts cross-attend j before block
      `floor(j * num_blocks / num_cross_attends)`; 'start' puts all of them
      back to back before the first block.
    share_weights: the paper's sharing scheme (see module docstring).

  Returns:
    The steps in execution order.
  """
  attention_lib.check_positive_int(num_blocks, 'num_blocks')
  attention_lib.check_positive_int(num_cross_attends, 'num_cross_attends')
  if (isinstance(num_self_attends_per_block, bool) or
      not isinstance(num_self_attends_per_block, int) or
      num_self_attends_per_block < 0):
    raise ValueError('num_self_attends_per_block must be a non-negative '
                     f'integer, got {num_self_attends_per_block!r}.')
  if cross_attend_placement not in PLACEMENTS:
    raise ValueError(f'cross_attend_placement must be one of {PLACEMENTS}, '
                     f'got {cross_attend_placement!r}.')
  if not isinstance(share_weights, bool):
    raise ValueError(f'share_weights must be a bool, got {share_weights!r}.')

  def cross(j):
    weight_set = min(j, 1) if share_weights else j
    return Step('cross_attend', j, weight_set)

  def latent(b):
    return Step('latent_transformer', b, 0 if share_weights else b)

  if num_self_attends_per_block == 0:
    return [cross(j) for j in range(num_cross_attends)]
  if cross_attend_placement == 'start':
    return ([cross(j) for j in range(num_cross_attends)] +
            [latent(b) for b in range(num_blocks)])
  if num_cross_attends > num_blocks:
    raise ValueError(
        f'num_cross_attends={num_cross_attends} exceeds num_blocks='
        f'{num_blocks}: interleaved placement puts at most one cross-attend '
        'before each latent Transformer (use placement "start" for more).')
  first_block_of = {
      (j * num_blocks) // num_cross_attends: j for j in range(num_cross_attends)
  }
  steps = []
  for b in range(num_blocks):
    if b in first_block_of:
      steps.append(cross(first_block_of[b]))
    steps.append(latent(b))
  return steps


@dataclasses.dataclass(frozen=True)
class Segment:
  """`repeats` consecutive runs of the steps `unit` (a scan when > 1)."""
  unit: tuple[Step, ...]
  repeats: int


def _signature(steps) -> tuple[tuple[str, int], ...]:
  return tuple((s.kind, s.weight_set) for s in steps)


def scan_segments(steps: list[Step]) -> list[Segment]:
  """Splits a schedule into runs of a repeated unit of steps.

  Two steps are the same computation when they have the same kind and
  weight set, so a unit repeated back to back can run as a scan. Greedy
  from the front: at each position the unit that covers the most steps
  (at least two repeats; the shortest such unit on ties) is taken, else a
  single step. The headline `C0 L0 C1 L0 ... C1 L0` becomes `[C0] x1,
  [L0 C1] x7, [L0] x1`; without weight sharing nothing repeats.

  Args:
    steps: a schedule, as returned by `schedule`.

  Returns:
    Segments whose units, repeated and concatenated, give `steps`.
  """
  signature = _signature(steps)
  segments = []
  i = 0
  while i < len(steps):
    best_period, best_repeats = 1, 1
    for period in range(1, (len(steps) - i) // 2 + 1):
      unit = signature[i:i + period]
      repeats = 1
      while signature[i + repeats * period:
                      i + (repeats + 1) * period] == unit:
        repeats += 1
      if repeats > 1 and repeats * period > best_repeats * best_period:
        best_period, best_repeats = period, repeats
    segments.append(Segment(tuple(steps[i:i + best_period]), best_repeats))
    i += best_period * best_repeats
  return segments


def _float32_creator(next_creator, shape, dtype, init, context):
  """Creates every parameter in float32 (Haiku's Linear would follow the
  dtype of its inputs)."""
  del context
  if jnp.issubdtype(dtype, jnp.floating):
    dtype = jnp.float32
  return next_creator(shape, dtype, init)


def _cast_parameters_getter(dtype):
  """A Haiku getter casting float32 parameters to `dtype`, LayerNorms not."""

  def getter(next_getter, value, context):
    if (value.dtype == jnp.float32 and
        not isinstance(context.module, hk.LayerNorm)):
      value = value.astype(dtype)
    return next_getter(value)

  return getter


class Perceiver(hk.Module):
  """Latents that iteratively cross-attend to a byte array and self-attend.

  Maps inputs `[B, M, C]` to latents `[B, N, D]`.
  """

  def __init__(self,
               *,
               num_blocks: int = 8,
               num_self_attends_per_block: int = 6,
               num_cross_attends: int = 8,
               cross_attend_placement: str = 'interleaved',
               share_weights: bool = True,
               num_latents: int = 512,
               num_latent_channels: int = 1024,
               num_cross_heads: int = 1,
               num_self_heads: int = 8,
               widening_factor: int = 1,
               dropout: float = 0.0,
               attention_impl: str = 'einsum',
               reuse_shared_keys_values: bool = True,
               absorb_cross_attend_projections: bool = True,
               scan_blocks: bool = False,
               precision: str = 'float32',
               remat: str = 'none',
               input_channels: Optional[int] = None,
               mlp_activation: str = 'gelu_tanh',
               cross_attend_widening_factor: Optional[int] = None,
               self_attend_widening_factor: Optional[int] = None,
               qk_channels: Optional[int] = None,
               v_channels: Optional[int] = None,
               cross_attend_query_residual: bool = True,
               name: Optional[str] = 'perceiver'):
    """Builds the encoder.

    Args:
      num_blocks: latent Transformers (8 for ImageNet).
      num_self_attends_per_block: self-attend layers per latent Transformer
        (6); 0 means cross-attends only.
      num_cross_attends: number of cross-attends (8).
      cross_attend_placement: 'interleaved' or 'start'.
      share_weights: the paper's sharing scheme.
      num_latents: N.
      num_latent_channels: D.
      num_cross_heads: heads of the cross-attends (1); must divide C.
      num_self_heads: heads of the self-attends (8); must divide D.
      widening_factor: MLP hidden width over its input width (1).
      dropout: dropout rate on attention weights and residual branches.
      attention_impl: 'einsum' or 'dot_product'.
      reuse_shared_keys_values: compute the input LayerNorm and key/value
        projections once for all cross-attends that share weights (the same
        outputs; fewer FLOPs than the paper's nominal count).
      absorb_cross_attend_projections: one-head cross-attends apply their
        key/value projections and the inputs' LayerNorm scale and offset to
        the queries' side instead of the M inputs
        (`attention.Attention._attend_unprojected`; same parameters and
        outputs, up to float rounding; fewer FLOPs when M > N, and no
        `[B, M, C]` gradient). Ignored for multi-head cross-attends, where
        it would cost more.
      scan_blocks: run repeated shared steps under `hk.scan` (see module
        docstring); compile time then does not grow with depth.
      precision: 'float32' or 'bfloat16' compute (parameters stay float32).
      remat: 'none' or 'block' (rematerialise each block in the backward).
      input_channels: C; when given, inputs with another channel count are
        rejected with a clear error (otherwise taken from the first call).
      mlp_activation: 'gelu_tanh' (the paper's) or 'gelu' (exact erf, as
        transformers' `hidden_act='gelu'`).
      cross_attend_widening_factor: the cross-attends' MLP widening; None:
        `widening_factor`.
      self_attend_widening_factor: the self-attends' MLP widening; None:
        `widening_factor`.
      qk_channels: query/key width of every attention (cross-attends and
        self-attends alike, as transformers' `config.qk_channels`); None:
        the paper's (C for cross-attends, D for self-attends).
      v_channels: value width likewise; None: the query/key width.
      cross_attend_query_residual: the cross-attends add their output to the
        latents (the paper's); False replaces the latents by it.
      name: module name.
    """
    super().__init__(name=name)
    self._schedule = schedule(
        num_blocks=num_blocks,
        num_self_attends_per_block=num_self_attends_per_block,
        num_cross_attends=num_cross_attends,
        cross_attend_placement=cross_attend_placement,
        share_weights=share_weights)
    self._num_latents = attention_lib.check_positive_int(
        num_latents, 'num_latents')
    self._num_latent_channels = attention_lib.check_positive_int(
        num_latent_channels, 'num_latent_channels')
    attention_lib.check_positive_int(num_cross_heads, 'num_cross_heads')
    attention_lib.check_positive_int(num_self_heads, 'num_self_heads')
    attention_lib.check_positive_int(widening_factor, 'widening_factor')
    for what, factor in (
        ('cross_attend_widening_factor', cross_attend_widening_factor),
        ('self_attend_widening_factor', self_attend_widening_factor)):
      if factor is not None:
        attention_lib.check_positive_int(factor, what)
    self._cross_widening_factor = (cross_attend_widening_factor or
                                   widening_factor)
    self._self_widening_factor = self_attend_widening_factor or widening_factor
    self_qk, self_v = attention_lib.attention_widths(
        num_latent_channels, qk_channels, v_channels)
    if self_qk % num_self_heads or self_v % num_self_heads:
      raise ValueError(
          f'num_self_heads={num_self_heads} does not divide the self-attend '
          f'widths (query/key {self_qk}, value {self_v}; '
          f'num_latent_channels={num_latent_channels} unless qk_channels/'
          'v_channels are set).')
    if qk_channels is not None:
      cross_qk, cross_v = attention_lib.attention_widths(
          1, qk_channels, v_channels)
      if cross_qk % num_cross_heads or cross_v % num_cross_heads:
        raise ValueError(
            f'num_cross_heads={num_cross_heads} does not divide qk_channels='
            f'{qk_channels} or v_channels={v_channels}.')
    self._qk_channels = qk_channels
    self._v_channels = v_channels
    self._mlp_activation = attention_lib.check_mlp_activation(mlp_activation)
    if not isinstance(cross_attend_query_residual, bool):
      raise ValueError(f'cross_attend_query_residual must be a bool, got '
                       f'{cross_attend_query_residual!r}.')
    self._cross_attend_query_residual = cross_attend_query_residual
    if input_channels is not None:
      attention_lib.check_positive_int(input_channels, 'input_channels')
      if qk_channels is None and input_channels % num_cross_heads:
        raise ValueError(
            f'num_cross_heads={num_cross_heads} does not divide the input '
            f'channel count {input_channels}.')
    if attention_impl not in attention_lib.ATTENTION_IMPLS:
      raise ValueError(f'attention_impl must be one of '
                       f'{attention_lib.ATTENTION_IMPLS}, got '
                       f'{attention_impl!r}.')
    if not isinstance(scan_blocks, bool):
      raise ValueError(f'scan_blocks must be a bool, got {scan_blocks!r}.')
    if not isinstance(reuse_shared_keys_values, bool):
      raise ValueError(f'reuse_shared_keys_values must be a bool, got '
                       f'{reuse_shared_keys_values!r}.')
    if not isinstance(absorb_cross_attend_projections, bool):
      raise ValueError(f'absorb_cross_attend_projections must be a bool, got '
                       f'{absorb_cross_attend_projections!r}.')
    if precision not in PRECISIONS:
      raise ValueError(f'precision must be one of {PRECISIONS}, got '
                       f'{precision!r}.')
    if remat not in REMAT_POLICIES:
      raise ValueError(f'remat must be one of {REMAT_POLICIES}, got '
                       f'{remat!r}.')
    self._scan_blocks = scan_blocks
    self._precision = precision
    self._remat = remat
    self._num_self_attends_per_block = num_self_attends_per_block
    self._num_cross_heads = num_cross_heads
    self._num_self_heads = num_self_heads
    self._widening_factor = widening_factor
    self._dropout = attention_lib.check_dropout(dropout)
    self._attention_impl = attention_impl
    self._reuse_shared_keys_values = reuse_shared_keys_values
    self._absorb_cross_attend_projections = absorb_cross_attend_projections
    self._input_channels = input_channels

  def _reads_grid_parts(self, is_training: bool) -> bool:
    """Whether the cross-attends use a `GridByteArray`'s parts: one head,
    absorbed projections, and no attention dropout in this pass (see
    `attention.Attention._attend_unprojected`)."""
    return (self._absorb_cross_attend_projections and
            self._num_cross_heads == 1 and
            not (self._dropout > 0.0 and is_training))

  @property
  def steps(self) -> list[Step]:
    """The schedule this encoder runs."""
    return list(self._schedule)

  def _check_inputs(self, inputs: ByteArray,
                    input_mask: Optional[jax.Array]) -> None:
    if isinstance(inputs, grid_byte_array.GridByteArray):
      inputs.check()
    if inputs.ndim != 3:
      raise ValueError(
          f'Perceiver inputs must have rank 3 [batch, positions, channels], '
          f'got shape {inputs.shape}.')
    if 0 in inputs.shape:
      raise ValueError(f'Perceiver inputs must be non-empty, got shape '
                       f'{inputs.shape}.')
    if (self._input_channels is not None and
        inputs.shape[-1] != self._input_channels):
      raise ValueError(
          f'Perceiver inputs have shape {inputs.shape} with '
          f'{inputs.shape[-1]} channels, but the model was built for '
          f'{self._input_channels} input channels.')
    if self._qk_channels is None and inputs.shape[-1] % self._num_cross_heads:
      raise ValueError(
          f'num_cross_heads={self._num_cross_heads} does not divide the input '
          f'channel count of inputs with shape {inputs.shape}.')
    if input_mask is not None and input_mask.shape != inputs.shape[:2]:
      raise ValueError(f'input_mask has shape {input_mask.shape}; expected '
                       f'{inputs.shape[:2]} for inputs of shape '
                       f'{inputs.shape}.')

  def __call__(self,
               inputs: ByteArray,
               *,
               input_mask: Optional[jax.Array] = None,
               is_training: bool) -> jax.Array:
    """Encodes inputs `[B, M, C]` (mask `[B, M]`) into latents `[B, N, D]`.

    The inputs may be a `GridByteArray` (a grid's byte array in parts,
    `GridAdapter.parts`): one-head cross-attends with absorbed projections
    then never build the `[B, M, C]` array.

    The latents are float32 whatever `precision` is.
    """
    self._check_inputs(inputs, input_mask)
    if self._precision == 'float32':
      return self._encode(inputs, input_mask, is_training)
    dtype = _COMPUTE_DTYPES[self._precision]
    with hk.custom_creator(_float32_creator), hk.custom_getter(
        _cast_parameters_getter(dtype)):
      latents = self._encode(inputs.astype(dtype), input_mask, is_training)
    return latents.astype(jnp.float32)

  @hk.name_like('__call__')  # Parameter names as if built in __call__.
  def _encode(self, inputs: ByteArray, input_mask: Optional[jax.Array],
              is_training: bool) -> jax.Array:
    batch_size, _, input_channels = inputs.shape
    if isinstance(inputs, grid_byte_array.GridByteArray) and not (
        self._reads_grid_parts(is_training)):
      # Built once here, rather than by every cross-attend call.
      inputs = inputs.materialize()
    latents = hk.get_parameter(
        'latents', [self._num_latents, self._num_latent_channels],
        init=hk.initializers.TruncatedNormal(stddev=0.02))
    latents = jnp.broadcast_to(latents.astype(inputs.dtype),
                               (batch_size, *latents.shape))  # [B, N, D]

    # Shared weights are modules built once and called many times.
    cross_attends = {}
    latent_transformers = {}
    shared_keys_values = {}

    def module_of(step):
      if step.kind == 'cross_attend':
        if step.weight_set not in cross_attends:
          cross_attends[step.weight_set] = attention_lib.CrossAttendBlock(
              input_channels=input_channels,
              num_heads=self._num_cross_heads,
              widening_factor=self._cross_widening_factor,
              dropout=self._dropout,
              attention_impl=self._attention_impl,
              absorb_projections=self._absorb_cross_attend_projections,
              qk_channels=self._qk_channels,
              v_channels=self._v_channels,
              mlp_activation=self._mlp_activation,
              query_residual=self._cross_attend_query_residual,
              name=f'cross_attend_{step.weight_set}')
        return cross_attends[step.weight_set]
      if step.weight_set not in latent_transformers:
        latent_transformers[step.weight_set] = (
            attention_lib.LatentTransformer(
                num_layers=self._num_self_attends_per_block,
                num_heads=self._num_self_heads,
                widening_factor=self._self_widening_factor,
                dropout=self._dropout,
                attention_impl=self._attention_impl,
                qk_channels=self._qk_channels,
                v_channels=self._v_channels,
                mlp_activation=self._mlp_activation,
                name=f'latent_transformer_{step.weight_set}'))
      return latent_transformers[step.weight_set]

    def keys_values_of(step):
      # Computed outside any scan, so that a scanned cross-attend closes
      # over them like over its weights. A cross-attend whose weights no
      # other step uses gains nothing from the cache but loses nothing.
      if step.weight_set not in shared_keys_values:
        shared_keys_values[step.weight_set] = module_of(step).keys_values(
            inputs)
      return shared_keys_values[step.weight_set]

    def run_step(step, latents):
      block = module_of(step)
      if step.kind == 'cross_attend':
        if self._reuse_shared_keys_values:
          kv = keys_values_of(step)
          call = lambda z: block(z, keys_values=kv, input_mask=input_mask,
                                 is_training=is_training)
        else:
          call = lambda z: block(z, inputs, input_mask=input_mask,
                                 is_training=is_training)
      else:
        call = lambda z: block(z, is_training=is_training)
      if self._remat == 'block':
        call = hk.remat(call)
      return call(latents)

    if self._scan_blocks:
      segments = scan_segments(self._schedule)
    else:
      segments = [Segment((step,), 1) for step in self._schedule]
    for segment in segments:
      if segment.repeats == 1:
        for step in segment.unit:
          latents = run_step(step, latents)
        continue
      for step in segment.unit:
        module_of(step)
        if step.kind == 'cross_attend' and self._reuse_shared_keys_values:
          keys_values_of(step)

      def body(z, _, unit=segment.unit):
        for step in unit:
          z = run_step(step, z)
        return z, None

      latents, _ = hk.scan(body, latents, None, length=segment.repeats)
    return latents


class ClassificationHead(hk.Module):
  """Mean of the latents over N, then a zero-initialised Linear to logits."""

  def __init__(self, num_classes: int,
               name: Optional[str] = 'classification_head'):
    super().__init__(name=name)
    self._num_classes = attention_lib.check_positive_int(
        num_classes, 'num_classes')

  def __call__(self, latents: jax.Array) -> jax.Array:
    """Maps latents `[B, N, D]` to logits `[B, num_classes]`."""
    pooled = jnp.mean(latents.astype(jnp.float32), axis=1)  # [B, D]
    return hk.Linear(
        self._num_classes, w_init=jnp.zeros, b_init=jnp.zeros,
        name='logits')(pooled)


# The fields of `config.model` that configure the encoder, by constructor name.
ENCODER_FIELDS = (
    'num_blocks', 'num_self_attends_per_block', 'num_cross_attends',
    'cross_attend_placement', 'share_weights', 'num_latents',
    'num_latent_channels', 'num_cross_heads', 'num_self_heads',
    'widening_factor', 'dropout', 'attention_impl',
    'reuse_shared_keys_values', 'absorb_cross_attend_projections',
    'scan_blocks', 'precision', 'remat', 'mlp_activation',
    'cross_attend_widening_factor', 'self_attend_widening_factor',
    'qk_channels', 'v_channels', 'cross_attend_query_residual')


def encoder_kwargs(model_config: Mapping[str, Any]) -> dict[str, Any]:
  """Picks the encoder's constructor arguments out of `config.model`.

  Numbers that are not finite are rejected here, so that a config such as
  `--config.model.dropout=nan` fails with the field's name.
  """
  kwargs = {}
  for field in ENCODER_FIELDS:
    if field in model_config:
      value = model_config[field]
      if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f'config.model.{field} must be finite, got {value}.')
      kwargs[field] = value
  return kwargs


class PerceiverClassifier:
  """Perceiver encoder followed by the classification head.

  A plain composition rather than an `hk.Module`, so the parameters keep the
  top-level names `perceiver/...` and `classification_head/...`. Build it
  inside a Haiku transform, like any module.
  """

  def __init__(self, num_classes: int, **encoder_config):
    """Builds (and validates) both parts; `encoder_config`: `Perceiver` args."""
    self.encoder = Perceiver(**encoder_config)
    self.head = ClassificationHead(num_classes)

  def __call__(self,
               inputs: ByteArray,
               *,
               input_mask: Optional[jax.Array] = None,
               is_training: bool) -> jax.Array:
    """Maps inputs `[B, M, C]` to logits `[B, num_classes]`."""
    latents = self.encoder(inputs, input_mask=input_mask,
                           is_training=is_training)
    return self.head(latents)
