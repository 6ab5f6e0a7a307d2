"""What the command-line tools share: clean errors and multi-host start-up.

`run(main)` replaces `absl.app.run(main)`: flag errors and the errors a user
can fix (ValueError for a bad config value, OSError for missing data or a
failed checkpoint write, FloatingPointError for a diverged loss) end the
process with one `error: ...` message on stderr and exit status 1, instead
of a traceback. `--traceback` shows the full traceback instead.

`initialize_distributed()` joins a multi-process run through
`jax.distributed.initialize` when `--multihost` or `--coordinator_address`
is given, or when the environment is a multi-process cluster launch
(`JAX_COORDINATOR_ADDRESS`, SLURM with several tasks, Open MPI with several
ranks). It must run before anything else touches JAX's devices.

This module imports JAX only inside functions, so `--help` stays fast.
"""

import os
import sys
from typing import Any, Callable, Optional, Sequence

from absl import app
from absl import flags
from ml_collections import config_flags

_MULTIHOST = flags.DEFINE_bool(
    'multihost', False, 'Join a multi-process run with '
    'jax.distributed.initialize (cluster settings are read from the '
    'environment unless the three flags below are given).')
_COORDINATOR_ADDRESS = flags.DEFINE_string(
    'coordinator_address', None, 'host:port of process 0 in a multi-process '
    'run (implies --multihost).')
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', None, 'Processes in the multi-process run.')
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', None, 'This process\'s index in [0, num_processes).')
_TRACEBACK = flags.DEFINE_bool(
    'traceback', False, 'Show full tracebacks instead of one-line errors.')

# Errors a user fixes by changing a value, a path or the disk; anything
# else (a bug) keeps its traceback.
USER_ERRORS = (ValueError, OSError, FloatingPointError)


def _fail(message: str, status: int = 1) -> None:
  print(f'error: {message}', file=sys.stderr, flush=True)
  sys.exit(status)


def _flag_error_message(error: Exception) -> str:
  """A flag error in one line; config files' tracebacks reduced to the end."""
  text = str(error)
  if 'Traceback (most recent call last)' in text:
    first = text.splitlines()[0].rstrip(':').strip()
    last = [line.strip() for line in text.splitlines() if line.strip()][-1]
    return f'{first}: {last}'
  return ' '.join(line.strip() for line in text.splitlines() if line.strip())


def define_config_flag(default: str, help_text: str) -> flags.FlagHolder:
  """`--config` (locked), with a mistyped override of it in one line.

  ml_collections loads the default config file, and applies `--config.x=y`
  overrides from the command line, when the flag is defined: a mistyped
  field of the default config fails there, before `run` can catch it.
  """
  try:
    return config_flags.DEFINE_config_file('config', default, help_text,
                                           lock_config=True)
  except (AttributeError, KeyError) as e:
    if '--traceback' in sys.argv:
      raise
    _fail(_unknown_field_message(e))
    raise  # Not reached.


def _unknown_field_message(error: Exception) -> str:
  """ConfigDict's (nested) unknown-field error as one line."""
  while error.args and isinstance(error.args[0], Exception):
    error = error.args[0]
  text = str(error.args[0]) if error.args else str(error)
  return ('Unknown config field in an override: ' +
          ' '.join(text.split()) + ' (--traceback for details)')


def parse_flags(argv: Sequence[str]) -> list[str]:
  """`app.run`'s flag parser, reporting bad flags in one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    if '--traceback' in argv:
      raise
    _fail(f'{_flag_error_message(e)} (--helpshort lists the flags)')
  except (AttributeError, KeyError) as e:
    # A `--config.x=y` override naming no field of the config.
    if '--traceback' in argv:
      raise
    _fail(_unknown_field_message(e))
  return []  # Not reached.


def _clean_errors(main: Callable[[list[str]], Optional[int]]
                  ) -> Callable[[list[str]], Optional[int]]:
  def wrapped(argv):
    try:
      return main(argv)
    except USER_ERRORS as e:
      if _TRACEBACK.value:
        raise
      _fail(f'{type(e).__name__}: {e}')
    except KeyboardInterrupt:
      if _TRACEBACK.value:
        raise
      _fail('interrupted.', status=130)
    return None  # Not reached.

  return wrapped


def one_line_errors(build: Callable[[], Any], *,
                    traceback: bool = False) -> Any:
  """`build()`, a user error ending the process with one `error:` line.

  For the commands that parse their flags with argparse (the dataset
  builders); `traceback` re-raises instead.
  """
  try:
    return build()
  except USER_ERRORS as e:
    if traceback:
      raise
    _fail(f'{type(e).__name__}: {e}')


def run(main: Callable[[list[str]], Optional[int]]) -> None:
  """`app.run(main)` with one-line errors (see the module docstring)."""
  app.run(_clean_errors(main), flags_parser=parse_flags)


def cluster_environment() -> Optional[str]:
  """The multi-process launcher seen in the environment, or None."""
  if os.environ.get('JAX_COORDINATOR_ADDRESS'):
    return 'JAX_COORDINATOR_ADDRESS'
  # Set by `srun` for the tasks of a job step; SLURM_NTASKS alone is also
  # set in an `sbatch` script that runs a single process.
  if int(os.environ.get('SLURM_STEP_NUM_TASKS', '1') or 1) > 1:
    return 'SLURM'
  if int(os.environ.get('OMPI_COMM_WORLD_SIZE', '1') or 1) > 1:
    return 'Open MPI'
  return None


def initialize_distributed() -> bool:
  """Starts JAX's multi-process runtime when asked to; True if it did.

  Uses `--coordinator_address`, `--num_processes` and `--process_id` when
  given, else JAX's detection of the cluster (SLURM, Open MPI, Cloud TPU,
  `JAX_COORDINATOR_ADDRESS` with `JAX_NUM_PROCESSES`/`JAX_PROCESS_ID`).

  Raises:
    ValueError: inconsistent flags.
  """
  explicit = (_COORDINATOR_ADDRESS.value, _NUM_PROCESSES.value,
              _PROCESS_ID.value)
  if not (_MULTIHOST.value or _COORDINATOR_ADDRESS.value or
          cluster_environment()):
    if any(value is not None for value in explicit):
      raise ValueError('--num_processes and --process_id need '
                       '--coordinator_address (or --multihost).')
    return False
  if any(value is not None for value in explicit) and any(
      value is None for value in explicit):
    raise ValueError('Give all of --coordinator_address, --num_processes and '
                     '--process_id, or none (to read them from the cluster '
                     f'environment); got {explicit}.')
  if _NUM_PROCESSES.value is not None and not (
      _NUM_PROCESSES.value >= 1 and
      0 <= _PROCESS_ID.value < _NUM_PROCESSES.value):
    raise ValueError(f'--process_id must be in [0, --num_processes), got '
                     f'{_PROCESS_ID.value} of {_NUM_PROCESSES.value}.')
  import jax  # pylint: disable=g-import-not-at-top
  # CPU devices of different processes talk over gloo (the default CPU
  # client has no cross-process collectives); other backends ignore this.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address=_COORDINATOR_ADDRESS.value,
                             num_processes=_NUM_PROCESSES.value,
                             process_id=_PROCESS_ID.value)
  return True
