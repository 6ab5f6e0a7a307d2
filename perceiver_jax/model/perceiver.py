"""The Perceiver encoder and the paper's classifier.

docs/paper.md sections 1-2: learned latents `[N, D]` run the schedule
(`schedule.schedule`) of cross-attends and latent Transformers; the
classifier averages the latents over N and applies one Linear. Parameter
names (checkpoints and weight-decay masks rely on them): `perceiver/latents`,
`perceiver/cross_attend_<set>/...`,
`perceiver/latent_transformer_<set>/self_attend_<i>/...` and
`classification_head/logits`. With every execution mode off the encoder
runs `attention`'s reference blocks; the modes compute the same function.
"""

from typing import Callable, Optional

import haiku as hk
import jax
import jax.numpy as jnp

from perceiver_jax import checks
from perceiver_jax.model import attention
from perceiver_jax.model import encoder_config
from perceiver_jax.model import fast_cross_attend
from perceiver_jax.model import grid_byte_array
from perceiver_jax.model import schedule as schedule_lib

ByteArray = fast_cross_attend.ByteArray
_COMPUTE_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def _float32_creator(next_creator, shape, dtype, init, context):
  """Parameters in float32 (Haiku's Linear follows its inputs' dtype)."""
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


def _check_inputs(inputs: ByteArray, input_mask: Optional[jax.Array]) -> None:
  if isinstance(inputs, grid_byte_array.GridByteArray):
    inputs.check()
  if inputs.ndim != 3:
    raise ValueError(
        f'Perceiver inputs must have rank 3 [batch, positions, channels], '
        f'got shape {inputs.shape}.')
  if 0 in inputs.shape:
    raise ValueError(f'Perceiver inputs must be non-empty, got shape '
                     f'{inputs.shape}.')
  if input_mask is not None and input_mask.shape != inputs.shape[:2]:
    raise ValueError(f'input_mask has shape {input_mask.shape}; expected '
                     f'{inputs.shape[:2]} for inputs of shape '
                     f'{inputs.shape}.')


class Perceiver(hk.Module):
  """Latents that cross-attend to a byte array `[B, M, C]` and self-attend:
  latents `[B, N, D]` (float32 whatever the compute precision)."""

  def __init__(self, config: encoder_config.EncoderConfig, *,
               name: Optional[str] = 'perceiver'):
    super().__init__(name=name)
    self.config = config
    self.steps = schedule_lib.schedule(config)

  def __call__(self, inputs: ByteArray, *,
               input_mask: Optional[jax.Array] = None,
               is_training: bool) -> jax.Array:
    """Encodes inputs `[B, M, C]` (or a `GridByteArray`; mask `[B, M]`)."""
    _check_inputs(inputs, input_mask)
    self.config.check_input_channels(inputs.shape[-1],
                                     f'inputs of shape {inputs.shape}')
    if self.config.precision == 'float32':
      return self._encode(inputs.astype(jnp.float32), input_mask,
                          is_training)
    dtype = _COMPUTE_DTYPES[self.config.precision]
    with hk.custom_creator(_float32_creator), hk.custom_getter(
        _cast_parameters_getter(dtype)):
      latents = self._encode(inputs.astype(dtype), input_mask, is_training)
    return latents.astype(jnp.float32)

  @hk.name_like('__call__')  # Parameter names as if built in __call__.
  def _encode(self, inputs: ByteArray, input_mask: Optional[jax.Array],
              is_training: bool) -> jax.Array:
    config = self.config
    reads_parts = fast_cross_attend.absorbs_projections(
        num_heads=config.num_cross_heads,
        absorb_projections=config.absorb_cross_attend_projections,
        dropout=config.dropout, is_training=is_training)
    if isinstance(inputs, grid_byte_array.GridByteArray) and not reads_parts:
      inputs = inputs.materialize()  # Once here, not in every cross-attend.
    latents = hk.get_parameter(
        'latents', [config.num_latents, config.num_latent_channels],
        init=hk.initializers.TruncatedNormal(stddev=0.02))
    latents = jnp.broadcast_to(latents.astype(inputs.dtype),
                               (inputs.shape[0], *latents.shape))  # [B, N, D]
    steps = _Steps(config, inputs, input_mask, is_training)
    for block, repeats in schedule_lib.runs(self.steps):
      steps.prepare(block)  # Outside any scan: the scan body closes over it.
      run_block = lambda z, block=block: steps.run(block, z)
      if repeats > 1 and config.scan_blocks:
        latents, _ = hk.scan(lambda z, _, run=run_block: (run(z), None),
                             latents, None, length=repeats)
      else:
        for _ in range(repeats):
          latents = run_block(latents)
    return latents


class _Steps:
  """Runs schedule steps inside `Perceiver._encode`: one module per weight
  set, and the keys and values that shared cross-attends reuse."""

  def __init__(self, config: encoder_config.EncoderConfig, inputs: ByteArray,
               input_mask: Optional[jax.Array], is_training: bool):
    self._config = config
    self._inputs = inputs
    self._input_mask = input_mask
    self._is_training = is_training
    self._modules = {}
    self._keys_values = {}

  def _module(self, step: schedule_lib.Step) -> hk.Module:
    key = (step.kind, step.weight_set)
    if key not in self._modules:
      self._modules[key] = _block_module(self._config, step,
                                         self._inputs.shape[-1])
    return self._modules[key]

  def prepare(self, block: tuple[schedule_lib.Step, ...]) -> None:
    """Builds the block's modules and (`reuse_shared_keys_values`) K/V once
    per weight set, in schedule order: the same parameter order in every
    mode."""
    for step in block:
      module = self._module(step)
      if (step.kind == schedule_lib.CROSS_ATTEND and
          self._config.reuse_shared_keys_values and
          step.weight_set not in self._keys_values):
        self._keys_values[step.weight_set] = module.keys_values(
            self._inputs, is_training=self._is_training)

  def _call(self, step: schedule_lib.Step) -> Callable[[jax.Array], jax.Array]:
    module = self._module(step)
    if step.kind == schedule_lib.LATENT_TRANSFORMER:
      return lambda z: module(z, is_training=self._is_training)
    if step.weight_set in self._keys_values:
      return lambda z: module.attend(
          z, self._keys_values[step.weight_set], input_mask=self._input_mask,
          is_training=self._is_training)
    return lambda z: module(z, self._inputs, input_mask=self._input_mask,
                            is_training=self._is_training)

  def run(self, block: tuple[schedule_lib.Step, ...],
          latents: jax.Array) -> jax.Array:
    """Runs the block's steps on latents `[B, N, D]`."""
    for step in block:
      call = self._call(step)
      if self._config.remat == 'block':
        call = hk.remat(call)
      latents = call(latents)
    return latents


def _block_module(config: encoder_config.EncoderConfig,
                  step: schedule_lib.Step, input_channels: int) -> hk.Module:
  """The reference block of `step`, or the fast cross-attend."""
  cross_widening, self_widening = config.widening_factors()
  shared = dict(dropout=config.dropout, attention_impl=config.attention_impl,
                activation=config.mlp_activation,
                qk_channels=config.qk_channels, v_channels=config.v_channels,
                name=f'{step.kind}_{step.weight_set}')
  if step.kind == schedule_lib.LATENT_TRANSFORMER:
    return attention.LatentTransformer(
        num_layers=config.num_self_attends_per_block,
        num_heads=config.num_self_heads, widening_factor=self_widening,
        **shared)
  cross = dict(num_heads=config.num_cross_heads, widening_factor=cross_widening,
               query_residual=config.cross_attend_query_residual, **shared)
  if (config.reuse_shared_keys_values or
      config.absorb_cross_attend_projections):
    return fast_cross_attend.FastCrossAttendBlock(
        input_channels=input_channels,
        absorb_projections=config.absorb_cross_attend_projections, **cross)
  return attention.CrossAttendBlock(**cross)


class ClassificationHead(hk.Module):
  """Mean of the latents over N, then a zero-initialised Linear to logits."""

  def __init__(self, num_classes: int,
               name: Optional[str] = 'classification_head'):
    super().__init__(name=name)
    self._num_classes = checks.positive_int(num_classes, 'num_classes')

  def __call__(self, latents: jax.Array) -> jax.Array:
    """Maps latents `[B, N, D]` to logits `[B, num_classes]`."""
    pooled = jnp.mean(latents.astype(jnp.float32), axis=1)  # [B, D]
    return hk.Linear(
        self._num_classes, w_init=jnp.zeros, b_init=jnp.zeros,
        name='logits')(pooled)


class PerceiverClassifier:
  """The encoder, then the head: a plain composition (not an `hk.Module`),
  so the parameters keep their top-level names."""

  def __init__(self, num_classes: int,
               config: encoder_config.EncoderConfig):
    self.encoder = Perceiver(config)
    self.head = ClassificationHead(num_classes)

  def __call__(self, inputs: ByteArray, *,
               input_mask: Optional[jax.Array] = None,
               is_training: bool) -> jax.Array:
    """Maps inputs `[B, M, C]` to logits `[B, num_classes]`."""
    latents = self.encoder(inputs, input_mask=input_mask,
                           is_training=is_training)
    return self.head(latents)
