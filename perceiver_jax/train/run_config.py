"""A run's `config.json`: written at launch, read by everything after.

Evaluation, the sweep summary and the pictures all rebuild a run from this
file alone, so it holds the fully resolved config (overrides and values
derived from them included).
"""

import json
import os
from typing import Any

import ml_collections

from perceiver_jax.train import writers

FILE_NAME = 'config.json'


def path(workdir: str) -> str:
  """Where the config of the run in `workdir` lives."""
  return os.path.join(workdir, FILE_NAME)


def exists(workdir: str) -> bool:
  """Whether `workdir` holds a run's config."""
  return os.path.exists(path(workdir))


def write(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Writes `config` as sorted, indented JSON into `workdir`.

  Atomically (`writers.write_json`): a kill mid-write leaves the previous
  config whole.
  """
  writers.write_json(path(workdir), json.loads(config.to_json_best_effort()))


def read(workdir: str) -> ml_collections.ConfigDict:
  """The config the run in `workdir` was launched with.

  Raises:
    FileNotFoundError: `workdir` is not a run directory.
  """
  if not exists(workdir):
    raise FileNotFoundError(f'{path(workdir)} not found: is {workdir} a run '
                            'directory made by experiments.train?')
  with open(path(workdir)) as f:
    return ml_collections.ConfigDict(upgrade(json.load(f)))


# The encoder fields that runs written before 2026-12 kept directly in
# `config.model` (since then: `config.model.encoder`).
_FLAT_ENCODER_FIELDS = (
    'num_blocks', 'num_self_attends_per_block', 'num_cross_attends',
    'cross_attend_placement', 'share_weights', 'num_latents',
    'num_latent_channels', 'num_cross_heads', 'num_self_heads',
    'widening_factor', 'dropout', 'attention_impl',
    'reuse_shared_keys_values', 'absorb_cross_attend_projections',
    'scan_blocks', 'precision', 'remat')


def upgrade(config: dict[str, Any]) -> dict[str, Any]:
  """A config as read from JSON, in today's layout: the encoder fields of
  an older run move from `model` into `model.encoder`. The parameter names
  did not change, so the run's checkpoints restore as they are."""
  model = config.get('model')
  if not isinstance(model, dict) or 'encoder' in model:
    return config
  flat = [name for name in _FLAT_ENCODER_FIELDS if name in model]
  if not flat:
    return config
  encoder = {name: model[name] for name in flat}
  rest = {k: v for k, v in model.items() if k not in encoder}
  return dict(config, model=dict(rest, encoder=encoder))
