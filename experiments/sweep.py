r"""Runs or summarises a sweep.

  python -m experiments.sweep --config=configs/x.py[:arg] --workdir=ROOT \
      [--parallel=N] [--dry_run]
  python -m experiments.sweep --summarize ROOT

The first form trains every point of the config's `get_hyper` in
`ROOT/<point>` (see perceiver_jax/sweep.py), N at a time; run it again
after an interruption to skip finished points and resume the others. With
`--dry_run` it prints each point's command. The second form writes
`ROOT/summary.md` and `ROOT/summary.csv` and prints the Markdown table.
"""

import signal
import sys

from absl import app
from absl import flags

from perceiver_jax import sweep

_CONFIG = flags.DEFINE_string(
    'config', None, "The config file, 'configs/x.py[:arg]', with get_hyper.")
_WORKDIR = flags.DEFINE_string('workdir', None, 'The sweep directory.')
_PARALLEL = flags.DEFINE_integer('parallel', 1, 'Runs at once.')
_DRY_RUN = flags.DEFINE_bool('dry_run', False, 'Print the commands only.')
_SUMMARIZE = flags.DEFINE_string('summarize', None,
                                 'Summarise the sweep in this directory.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if _SUMMARIZE.value:
    print(sweep.summarize(_SUMMARIZE.value), end='')
    return
  if not _CONFIG.value or not _WORKDIR.value:
    raise app.UsageError('Give --config and --workdir (or --summarize ROOT).')
  # A terminated sweep stops its runs too, as on Ctrl-C.
  signal.signal(signal.SIGTERM, signal.default_int_handler)
  failed = sweep.run_sweep(_CONFIG.value, _WORKDIR.value,
                           parallel=_PARALLEL.value, dry_run=_DRY_RUN.value)
  if failed:
    sys.exit(f'{failed} point(s) failed.')


if __name__ == '__main__':
  app.run(main)
