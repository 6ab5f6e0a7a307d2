"""A run's `config.json`, fully resolved: evaluation, sweeps and pictures
rebuild the run from it. A relaunch may change only `RELAUNCH_MAY_CHANGE` and
`*_dir` fields; the previous file goes to `config_history/`.
"""

import dataclasses
import json
import os
import shutil
import time
from typing import Any, Optional

import ml_collections

from perceiver_jax.model import encoder_config
from perceiver_jax.train import writers

FILE_NAME = 'config.json'
HISTORY_DIR = 'config_history'

# Fields a relaunch may change: length, cadence, and knobs that change neither
# the parameters nor the numbers trained (memory, speed, evaluation batching).
RELAUNCH_MAY_CHANGE = (
    'train.num_steps', 'train.num_epochs', 'train.log_every_steps',
    'train.eval_every_steps', 'train.checkpoint_every_steps',
    'train.skip_nonfinite_updates', 'checkpoint.keep',
    'evaluator.max_examples', 'evaluator.batch_size',
    'data.threadpool_size',
    # Execution modes: the same function, computed another way.
    'model.encoder.remat', 'model.encoder.attention_impl',
    'model.encoder.scan_blocks', 'model.encoder.reuse_shared_keys_values',
    'model.encoder.absorb_cross_attend_projections', 'model.grid_parts')

Change = tuple[str, Any, Any]  # (field, value in config.json, new value)


def path(workdir: str) -> str:
  """Where the config of the run in `workdir` lives."""
  return os.path.join(workdir, FILE_NAME)


def exists(workdir: str) -> bool:
  """Whether `workdir` holds a run's config."""
  return os.path.exists(path(workdir))


def write(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Writes `config` as sorted JSON, atomically."""
  writers.write_json(path(workdir), json.loads(config.to_json_best_effort()))


def read(workdir: str) -> ml_collections.ConfigDict:
  """The run's config; FileNotFoundError (no run) or ValueError (unreadable)."""
  if not exists(workdir):
    raise FileNotFoundError(f'{path(workdir)} not found: is {workdir} a run '
                            'directory made by experiments.train?')
  return ml_collections.ConfigDict(upgrade(writers.read_json(path(workdir))))


def _flat(tree: Any, prefix: str = '') -> dict[str, Any]:
  if not isinstance(tree, dict):
    return {prefix: tree}
  flat = {}
  for key, value in tree.items():
    flat.update(_flat(value, f'{prefix}.{key}' if prefix else key))
  return flat


def check_relaunch(workdir: str,
                   config: ml_collections.ConfigDict) -> list[Change]:
  """The accepted changes `(field, old, new)` of a relaunch; reads only.

  Fields one side lacks are not compared (the restore checks the shapes).
  ValueError names the first other difference, or an unreadable file.
  """
  if not exists(workdir):
    return []
  # An older run's layout is upgraded first, so that a relaunch of it in
  # today's layout compares field by field.
  stored = _flat(upgrade(writers.read_json(path(workdir))))
  new = _flat(json.loads(config.to_json_best_effort()))
  changes = [(field, stored[field], new[field]) for field in sorted(stored)
             if field in new and stored[field] != new[field]]
  refused = [change for change in changes
             if change[0] not in RELAUNCH_MAY_CHANGE
             and not change[0].endswith('_dir')]
  if refused:
    field, old, value = refused[0]
    others = ', '.join(c[0] for c in refused[1:])
    more = (f' (and {len(refused) - 1} more field(s): {others})' if others
            else '')
    raise ValueError(
        f'config.{field} is {json.dumps(old)} in {path(workdir)} but '
        f'{json.dumps(value)} in this launch{more}: a relaunch of an existing '
        'run may change only its length, evaluation cadence, data paths and '
        'execution modes that compute the same function. '
        'Train the changed config in a new --workdir; nothing was written.')
  return changes


def describe(changes: list[Change]) -> str:
  """`'train.num_steps 6 -> 12, ...'` for a console line."""
  return ', '.join(f'{field} {json.dumps(old)} -> {json.dumps(new)}'
                   for field, old, new in changes)


def keep_history(workdir: str) -> Optional[str]:
  """Copies `config.json` into `config_history/` (never overwriting); its
  path, or None when there is none.
  """
  if not exists(workdir):
    return None
  history = os.path.join(workdir, HISTORY_DIR)
  os.makedirs(history, exist_ok=True)
  stamp = time.strftime('%Y%m%d-%H%M%S')
  target = os.path.join(history, f'config-{stamp}.json')
  number = 1
  while os.path.exists(target):
    number += 1
    target = os.path.join(history, f'config-{stamp}-{number}.json')
  shutil.copy2(path(workdir), target)
  return target


def upgrade(config: dict[str, Any]) -> dict[str, Any]:
  """An older run's config in today's layout: encoder fields move into
  `model.encoder` and the fields added since take the defaults the old code
  used, so relaunches compare them; parameter names are unchanged.
  """
  model = config.get('model')
  if not isinstance(model, dict):
    return config
  if 'encoder' not in model:
    # Older runs kept the encoder's fields directly in `config.model`.
    flat = [field.name for field in dataclasses.fields(
        encoder_config.EncoderConfig) if field.name in model]
    if not flat:
      return config
    encoder = {name: model[name] for name in flat}
    model = dict({k: v for k, v in model.items() if k not in encoder},
                 encoder=encoder)
  encoder = {**dataclasses.asdict(encoder_config.EncoderConfig()),
             **model['encoder']}
  return dict(config, model=dict({'head': 'mean_linear'}, **dict(
      model, encoder=encoder)))
