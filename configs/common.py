"""Pieces every experiment config shares.

Sections: `task`, `seed`, `data` (the loader's), `model` (`encoder`: the
fields of `EncoderConfig`; `input`: the input adapter), `train`,
`optimizer`, `loss`, `evaluator`, `checkpoint`. Values that depend on
others (steps per epoch, total steps, boundaries) are computed at launch,
so overrides move them too.
"""

import dataclasses
from typing import Any, Iterable, Optional

import ml_collections

from perceiver_jax import checks
from perceiver_jax.model import decoder as decoder_lib
from perceiver_jax.model import encoder_config


def parse_arg(arg: Optional[str], *, flags: Iterable[str] = (),
              options: Optional[dict[str, Optional[Iterable[str]]]] = None
              ) -> dict[str, Any]:
  """Flags (True when given) and `name=value` options of a config argument
  such as 'variant=learned_pos,runlocal'; unknown names or values raise.
  """
  flags = tuple(flags)
  options = dict(options or {})
  parsed: dict[str, Any] = {flag: False for flag in flags}
  for item in filter(None, (arg or '').split(',')):
    name, sep, value = (part.strip() for part in item.partition('='))
    if not sep:
      if name not in flags:
        raise ValueError(f'Unknown config flag {name!r}; known flags: '
                         f'{list(flags)}, options: {sorted(options)}.')
      parsed[name] = True
      continue
    if name not in options:
      raise ValueError(f'Unknown config option {name!r}; known options: '
                       f'{sorted(options)}.')
    if options[name] is not None and value not in tuple(options[name]):
      raise ValueError(f'Unknown {name} {value!r}; choose one of '
                       f'{list(options[name])}.')
    parsed[name] = value
  return parsed


def perceiver_model(**encoder_overrides: Any) -> ml_collections.ConfigDict:
  """`config.model` of the paper's ImageNet model, without its input.

  `grid_parts` lets grid inputs reach the encoder in parts (same outputs,
  fewer FLOPs).
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
  """The CPU-sized model of digits, shapes and images (no input)."""
  return perceiver_model(
      num_blocks=2, num_self_attends_per_block=2, num_cross_attends=2,
      num_latents=32, num_latent_channels=64, num_self_heads=4)


def small_runlocal(config: ml_collections.ConfigDict, *,
                   eval_batch_size: int) -> None:
  """Shrinks a `small_model` config for `runlocal`: 6 steps of 16 examples."""
  config.model.encoder.update(num_latents=8, num_latent_channels=16,
                              num_self_heads=2)
  config.model.input.num_bands = 4
  config.train.update(batch_size=16, num_steps=6, log_every_steps=2,
                      eval_every_steps=3, checkpoint_every_steps=3)
  config.evaluator.batch_size = eval_batch_size


def adamw_cosine(optimizer: ml_collections.ConfigDict, *,
                 weight_decay: float) -> None:
  """AdamW at 1e-3 with cosine decay (LAMB at the paper's rates learns small
  models far more slowly)."""
  optimizer.update(name='adamw', learning_rate=1e-3, schedule='cosine',
                   weight_decay=weight_decay, eps=1e-8)


def lamb_recipe(optimizer: ml_collections.ConfigDict, *,
                learning_rate: float, schedule: str) -> None:
  """LAMB without warm-up, weight decay 0.1 and clipping at 10 (ASSUMED, from
  Perceiver IO)."""
  optimizer.update(name='lamb', learning_rate=learning_rate,
                   schedule=schedule, warmup_steps=0, weight_decay=0.1,
                   clip_global_norm=10.0)


def paper_scale_runlocal(config: ml_collections.ConfigDict, *,
                         max_eval_examples: int = 16) -> None:
  """Shrinks a paper-scale config for `runlocal`: 2 small blocks, 4 steps of
  8 examples, evaluation on at most `max_eval_examples`."""
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
  """`config.model.input` of a grid adapter.

  `index_dims` may be a `FieldReference`, so that data and model grids
  cannot disagree; `max_resolution` None means the grid size per axis.
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


def with_num_inputs(config: ml_collections.ConfigDict,
                    num_inputs: int) -> ml_collections.ConfigDict:
  """A copy of `config` whose input is a 1D grid of `num_inputs` positions,
  with the config's raw channels and Fourier bands (benchmarks' M axis)."""
  checks.positive_int(num_inputs, 'num_inputs')
  config = config.copy_and_resolve_references()
  old = config.model.input
  with config.unlocked():
    config.model.input = grid_input(
        key='inputs', index_dims=(num_inputs,),
        raw_channels=int(old.get('raw_channels', 3)),
        num_bands=int(old.get('num_bands', 64)), max_resolution=None,
        position_encoding=old.get('position_encoding', 'fourier'))
  return config
