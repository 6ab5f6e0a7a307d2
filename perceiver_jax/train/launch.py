"""Process start-up of the training commands: joining a multi-process run,
and the on-disk compilation cache. Imports JAX only inside functions, so
that `--help` stays fast.
"""

import os
from typing import Optional

from absl import flags

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

CACHE_DIR = os.path.join(os.path.expanduser('~'), '.cache', 'perceiver_jax',
                         'xla')


def enable_compilation_cache(directory: str = CACHE_DIR) -> None:
  """Keeps compiled programs on disk, so relaunches, evaluations and sweep
  points skip compilation; `JAX_COMPILATION_CACHE_DIR` wins."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax.config.jax_compilation_cache_dir:
    return
  os.makedirs(directory, exist_ok=True)
  jax.config.update('jax_compilation_cache_dir', directory)
  # Small programs are the ones relaunched most often.
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)


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
  """Joins a multi-process run when asked to or launched as one; True if
  it did. ValueError for inconsistent flags.
  """
  explicit = (_COORDINATOR_ADDRESS.value, _NUM_PROCESSES.value,
              _PROCESS_ID.value)
  given = [value is not None for value in explicit]
  if not (_MULTIHOST.value or _COORDINATOR_ADDRESS.value or
          cluster_environment()):
    if any(given):
      raise ValueError('--num_processes and --process_id need '
                       '--coordinator_address (or --multihost).')
    return False
  if any(given) and not all(given):
    raise ValueError('Give all of --coordinator_address, --num_processes and '
                     '--process_id, or none (to read them from the cluster '
                     f'environment); got {explicit}.')
  if all(given) and not 0 <= _PROCESS_ID.value < _NUM_PROCESSES.value:
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
