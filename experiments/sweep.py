r"""Runs or summarises a sweep.

  python -m experiments.sweep --config=configs/x.py[:arg] --workdir=ROOT \
      [--sweep='FIELD=V1,V2,...' ...] [--zip] [--parallel=N] [--dry_run]
  python -m experiments.sweep --summarize=ROOT
  python -m experiments.sweep --workdir=ROOT --summarize

The first form trains every point in `ROOT/<point>`, N at a time: the
product of the `--sweep` axes (zipped with `--zip`), crossed with the
config's `get_hyper` points. Run it again to skip finished points and resume
the others; `--dry_run` prints the commands. The others write and print
`ROOT/summary.md` and `ROOT/summary.csv`, with mean and standard deviation
over seeds when seeds are swept.
"""

import signal
import sys

from absl import flags

from perceiver_jax import cli
from perceiver_jax import sweep

_CONFIG = flags.DEFINE_string(
    'config', None, "The config file, 'configs/x.py[:arg]'.")
_WORKDIR = flags.DEFINE_string('workdir', None, 'The sweep directory.')
_SWEEP = flags.DEFINE_multi_string(
    'sweep', [], "An axis of the sweep, 'FIELD=V1,V2,...' (FIELD as in "
    "--config.FIELD, e.g. 'optimizer.learning_rate=3e-4,1e-3'); repeat for "
    'more axes.')
_ZIP = flags.DEFINE_bool(
    'zip', False, 'Pair the --sweep axes value by value instead of crossing '
    'them (they need equally many values).')
_PARALLEL = flags.DEFINE_integer('parallel', 1, 'Runs at once.')
_DRY_RUN = flags.DEFINE_bool('dry_run', False, 'Print the commands only.')
_SUMMARIZE = flags.DEFINE_string(
    'summarize', None, 'Summarise the sweep in this directory (a bare '
    '--summarize: the --workdir).')


def main(argv):
  cli.no_arguments(argv)
  if _SUMMARIZE.value:
    print(sweep.summarize(_SUMMARIZE.value), end='')
    return
  if not _CONFIG.value or not _WORKDIR.value:
    raise cli.UsageError('give --config=configs/x.py and --workdir=DIR to '
                         'run a sweep, or --summarize=DIR to summarise one.')
  # A terminated sweep stops its runs too, as on Ctrl-C.
  signal.signal(signal.SIGTERM, signal.default_int_handler)
  failed = sweep.run_sweep(_CONFIG.value, _WORKDIR.value, axes=_SWEEP.value,
                           zip_axes=_ZIP.value, parallel=_PARALLEL.value,
                           dry_run=_DRY_RUN.value)
  if failed:
    cli.fail(f'{failed} point(s) failed; their logs are named above. Run '
             'the same command again to retry them.', cli.FAILURE_STATUS)
  if not _DRY_RUN.value:
    print('Summarise with: python -m experiments.sweep '
          f'--summarize={_WORKDIR.value}', flush=True)


if __name__ == '__main__':
  sys.argv = cli.guard(sweep.bare_summarize, sys.argv)
  cli.run(main)
