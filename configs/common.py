"""Pieces every experiment config shares.

A config is an `ml_collections.ConfigDict` with these sections:

- `task`: the task registry entry ('digits', 'imagenet', ...).
- `seed`: the base seed of parameters, data order and dropout.
- `data`: what the task's loader reads (`num_classes`, `num_train_examples`,
  directories, augmentation).
- `model`: `model.encoder`, the fields of `perceiver_jax.model.
  encoder_config.EncoderConfig`, and `model.input`, the input adapter (see
  `perceiver_jax.model.factory` and `perceiver_jax.model.inputs`).
- `train`: batch size, length (`num_steps`, or `num_epochs` when
  `num_steps` is None), logging, evaluation and checkpoint intervals.
- `optimizer`, `loss`, `evaluator`, `checkpoint`.

Values that depend on others (steps per epoch, total steps, learning-rate
boundaries in steps) are computed at launch from the final config, so an
override of `train.batch_size` or `train.num_epochs` moves them too.
"""

import dataclasses
from typing import Any, Iterable, Optional

import ml_collections

from perceiver_jax.model import decoder as decoder_lib
from perceiver_jax.model import encoder_config


def parse_arg(arg: Optional[str], *, flags: Iterable[str] = (),
              options: Optional[dict[str, Optional[Iterable[str]]]] = None
              ) -> dict[str, Any]:
  """Parses a config argument such as 'variant=learned_pos,runlocal'.

  Args:
    arg: the text after ':' in `--config=configs/x.py:...` (may be None).
    flags: names allowed alone (True when present, else False).
    options: name -> allowed values (None: any), for `name=value` items.

  Returns:
    Every flag (bool) and every option given (its string value).

  Raises:
    ValueError: an unknown name or value, naming it and the allowed ones.
  """
  flags = tuple(flags)
  options = dict(options or {})
  parsed: dict[str, Any] = {flag: False for flag in flags}
  for item in filter(None, (arg or '').split(',')):
    name, sep, value = item.partition('=')
    name = name.strip()
    if not sep:
      if name not in flags:
        raise ValueError(f'Unknown config flag {name!r}; known flags: '
                         f'{list(flags)}, options: {sorted(options)}.')
      parsed[name] = True
      continue
    if name not in options:
      raise ValueError(f'Unknown config option {name!r}; known options: '
                       f'{sorted(options)}.')
    value = value.strip()
    if options[name] is not None and value not in tuple(options[name]):
      raise ValueError(f'Unknown {name} {value!r}; choose one of '
                       f'{list(options[name])}.')
    parsed[name] = value
  return parsed


def perceiver_model(**encoder_overrides: Any) -> ml_collections.ConfigDict:
  """`config.model` of the paper's ImageNet model (docs/paper.md sections
  1-2), without its input.

  `encoder` holds every field of `EncoderConfig` (its defaults are the
  paper's, plus `encoder_overrides`); `grid_parts` lets grid inputs reach
  the encoder in parts (same outputs, fewer FLOPs; `perceiver_jax.model.
  factory`).
  """
  encoder = dataclasses.asdict(
      encoder_config.EncoderConfig(**encoder_overrides))
  for field in dataclasses.fields(encoder_config.EncoderConfig):
    if field.type == Optional[int]:
      # Typed, so that `--config.model.encoder.qk_channels=256` overrides
      # a default of None.
      encoder[field.name] = ml_collections.FieldReference(
          encoder[field.name], field_type=int)
  # 'mean_linear' (the paper's) or 'perceiver_io' (one trainable query
  # cross-attends to the latents; model/decoder.py, set by `decoder`).
  decoder = {
      key: (ml_collections.FieldReference(None, field_type=int)
            if value is None else value)
      for key, value in decoder_lib.DECODER_DEFAULTS.items()}
  return ml_collections.ConfigDict(dict(encoder=encoder, grid_parts=True,
                                        head='mean_linear', decoder=decoder))


def small_model() -> ml_collections.ConfigDict:
  """The CPU-sized encoder of the embedded defaults (digits, shapes).

  The paper's structure at small scale: 2 blocks, each a cross-attend and 2
  self-attends (shared weights), 32 latents of 64 channels, 4 heads.
  """
  return perceiver_model(
      num_blocks=2,
      num_self_attends_per_block=2,
      num_cross_attends=2,
      num_latents=32,
      num_latent_channels=64,
      num_self_heads=4)


def small_runlocal(config: ml_collections.ConfigDict, *,
                   eval_batch_size: int) -> None:
  """Shrinks a `small_model` config for `runlocal`, in place.

  8 latents of 16 channels, 2 heads, 4 bands; 6 steps of 16 examples,
  evaluated and checkpointed every 3.
  """
  config.model.encoder.update(num_latents=8, num_latent_channels=16,
                              num_self_heads=2)
  config.model.input.num_bands = 4
  config.train.update(batch_size=16, num_steps=6, log_every_steps=2,
                      eval_every_steps=3, checkpoint_every_steps=3)
  config.evaluator.batch_size = eval_batch_size


def adamw_cosine(optimizer: ml_collections.ConfigDict, *,
                 weight_decay: float) -> None:
  """The embedded defaults' optimizer, in place: AdamW, 1e-3, cosine decay.

  At this scale LAMB at the paper's rates learns far more slowly.
  """
  optimizer.update(name='adamw', learning_rate=1e-3, schedule='cosine',
                   weight_decay=weight_decay, eps=1e-8)


def lamb_recipe(optimizer: ml_collections.ConfigDict, *,
                learning_rate: float, schedule: str) -> None:
  """The paper-scale optimizer (ImageNet, ModelNet40, AudioSet), in place.

  LAMB without warm-up (ASSUMED: LAMB often failed with one), with Perceiver
  IO's weight decay 0.1 and global-norm clipping at 10 (both ASSUMED).
  """
  optimizer.update(name='lamb', learning_rate=learning_rate,
                   schedule=schedule, warmup_steps=0, weight_decay=0.1,
                   clip_global_norm=10.0)


def paper_scale_runlocal(config: ml_collections.ConfigDict, *,
                         max_eval_examples: int = 16) -> None:
  """Shrinks a paper-scale config (ImageNet, ModelNet40, AudioSet) in place.

  For `runlocal`: 2 blocks of one cross-attend (at most 2 in all) and one
  self-attend, 16 latents of 32 channels, 2 heads; 4 steps of 8 examples,
  logged and checkpointed every 2, evaluated at the end on at most
  `max_eval_examples` examples. The input's size is each config's own.
  """
  config.model.encoder.update(
      num_blocks=2, num_self_attends_per_block=1,
      num_cross_attends=min(config.model.encoder.num_cross_attends, 2),
      num_latents=16, num_latent_channels=32, num_self_heads=2)
  config.train.update(batch_size=8, num_steps=4, log_every_steps=2,
                      eval_every_steps=4, checkpoint_every_steps=2)
  config.evaluator.update(batch_size=8, max_examples=max_eval_examples)


def grid_input(*, key: str, index_dims, raw_channels: int,
               num_bands: int, max_resolution: Optional[tuple[float, ...]],
               position_encoding: str = 'fourier'
               ) -> ml_collections.ConfigDict:
  """`config.model.input` for a grid adapter.

  Args:
    key: the batch entry to read.
    index_dims: the grid, a tuple or a `FieldReference` to one (so that the
      data's shape and the model's grid cannot disagree).
    raw_channels: channels per position before position features.
    num_bands: Fourier bands per axis.
    max_resolution: mu per axis; None means the grid size per axis.
    position_encoding: 'fourier', 'learned' or 'none'.
  """
  return ml_collections.ConfigDict(dict(
      type='grid',
      key=key,
      index_dims=index_dims,
      raw_channels=raw_channels,
      position_encoding=position_encoding,
      num_bands=num_bands,
      max_resolution=ml_collections.FieldReference(
          None if max_resolution is None else tuple(
              float(mu) for mu in max_resolution), field_type=tuple),
      learned_position_channels=128,
      learned_position_init_scale=1.0,
      permutation_seed=ml_collections.FieldReference(None, field_type=int),
  ))


def base_config() -> ml_collections.ConfigDict:
  """Training, optimizer, evaluation and checkpoint defaults."""
  config = ml_collections.ConfigDict()
  config.task = ''
  config.seed = 0
  config.data = ml_collections.ConfigDict()
  config.model = perceiver_model()
  config.train = ml_collections.ConfigDict(dict(
      batch_size=64,
      # Exactly one of these two sets the run's length: num_steps when it is
      # not None, else num_epochs over data.num_train_examples.
      num_steps=ml_collections.FieldReference(None, field_type=int),
      num_epochs=ml_collections.FieldReference(None, field_type=float),
      log_every_steps=100,
      eval_every_steps=1000,
      checkpoint_every_steps=1000,
      # Keep going on a non-finite loss by skipping the update (counted in
      # the logs) instead of stopping with an error.
      skip_nonfinite_updates=False,
  ))
  config.optimizer = ml_collections.ConfigDict(dict(
      name='lamb',  # 'lamb', 'adamw', 'adam', 'sgd'
      learning_rate=1e-3,
      schedule='constant',  # 'constant', 'step', 'cosine'
      # For 'step': epochs at which the rate is multiplied by decay_factor.
      decay_epochs=(),
      decay_factor=0.1,
      warmup_steps=0,
      weight_decay=0.0,  # Never applied to biases or LayerNorm parameters.
      clip_global_norm=ml_collections.FieldReference(None, field_type=float),
      b1=0.9,
      b2=0.999,
      eps=1e-6,
      momentum=0.9,  # 'sgd' only.
  ))
  config.loss = ml_collections.ConfigDict(dict(
      type='softmax_xent',  # or 'sigmoid_xent' (multi-label)
      label_smoothing=0.0,
  ))
  config.evaluator = ml_collections.ConfigDict(dict(
      type='classification',
      split='test',
      batch_size=256,
      metric='top1',  # The metric that picks the best checkpoint.
      metric_mode='max',
      # Evaluate on at most this many examples of the split (None: all).
      max_examples=ml_collections.FieldReference(None, field_type=int),
  ))
  config.checkpoint = ml_collections.ConfigDict(dict(
      keep=3,  # The newest `keep` checkpoints, plus the best.
  ))
  return config
