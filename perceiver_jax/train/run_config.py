"""A run's `config.json`: written at launch, read by everything after.

Evaluation, the sweep summary and the pictures all rebuild a run from this
file alone, so it holds the fully resolved config (overrides and values
derived from them included).
"""

import json
import os

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
    return ml_collections.ConfigDict(json.load(f))
