r"""Trains a config: `python -m experiments.train [--config=...] [--workdir=...]`.

With no flags it trains configs/digits.py into `runs/digits-<timestamp>/`; a
workdir that holds a checkpoint resumes from it. Examples:

  python -m experiments.train --config=configs/imagenet.py:variant=permuted
  python -m experiments.train --config=configs/digits.py \
      --config.train.num_steps=3000 --workdir=runs/digits-long

A bad config value ends the launch, before anything is written or compiled,
with one `error: ...` line (`--traceback` for the full traceback). SIGTERM
or SIGINT stops within a step or two, with a checkpoint and exit status 0.
On several hosts, run the same command on every host with `--multihost` (or
`--coordinator_address`, `--num_processes`, `--process_id`) and one shared
workdir.
"""

import os
import time

from absl import flags
from absl import logging

from perceiver_jax import cli
from perceiver_jax import host_memory
from perceiver_jax.train import launch

_CONFIG = cli.define_config_flag('configs/digits.py', 'Experiment config file.')
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Run directory (default: runs/<task>-<timestamp>; give '
    'it explicitly on several hosts).')


def default_workdir(task: str) -> str:
  return os.path.join('runs', f'{task}-{time.strftime("%Y%m%d-%H%M%S")}')


def main(argv):
  host_memory.keep_freed_memory()  # Process-wide, before JAX allocates.
  cli.no_arguments(argv)
  if _WORKDIR.value and os.path.exists(_WORKDIR.value) and not os.path.isdir(
      _WORKDIR.value):
    raise cli.UsageError(f'--workdir={_WORKDIR.value} is a file; give a '
                         'directory (new, or a run to resume).')
  if not flags.FLAGS['verbosity'].present:
    # Orbax logs every step of every save at INFO; progress lines are ours.
    logging.set_verbosity(logging.WARNING)
  if launch.initialize_distributed() and _WORKDIR.value is None:
    raise ValueError('--workdir is required on several hosts (they must '
                     'share it).')
  launch.enable_compilation_cache()
  # After flag parsing, so that `--help` stays fast.
  from perceiver_jax.train import loop  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  loop.train_and_evaluate(config,
                          _WORKDIR.value or default_workdir(config.task))


if __name__ == '__main__':
  cli.run(main)
