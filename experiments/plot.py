r"""Draws training loss and evaluation curves of runs into one PNG.

  python -m experiments.plot --workdir=DIR [DIR ...] [--out=FILE.png]

Reads each run's `metrics.jsonl` (and `config.json` for the evaluation
metric's name); several runs share the axes, labelled by directory name.
Default output: `curves.png` in the first run's directory.
"""

import os

from absl import flags

from perceiver_jax import cli

_WORKDIR = flags.DEFINE_multi_string(
    'workdir', None, 'Run directories (the flag may repeat; further '
    'directories may follow as plain arguments).')
_OUT = flags.DEFINE_string('out', None, 'The PNG to write.')


def main(argv):
  workdirs = list(_WORKDIR.value or []) + list(argv[1:])
  if not workdirs:
    raise cli.UsageError('give at least one run directory: --workdir=DIR.')
  for workdir in workdirs:
    if not os.path.isfile(os.path.join(workdir, 'metrics.jsonl')):
      raise cli.UsageError(f'{workdir} holds no run (no metrics.jsonl); give '
                           'a run directory that experiments.train wrote.')
  # pylint: disable=g-import-not-at-top
  from perceiver_jax import pictures
  # pylint: enable=g-import-not-at-top
  out = _OUT.value or os.path.join(workdirs[0], 'curves.png')
  print(pictures.plot_runs(workdirs, out))


if __name__ == '__main__':
  cli.run(main)
