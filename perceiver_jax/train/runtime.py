"""Process set-up shared by the command-line tools."""

import os

import jax

DEFAULT_CACHE_DIR = os.path.join(
    os.path.expanduser('~'), '.cache', 'perceiver_jax', 'xla')


def enable_compilation_cache(directory: str = DEFAULT_CACHE_DIR) -> None:
  """Keeps compiled XLA programs on disk so relaunches skip compilation.

  A resumed run, an evaluation of a checkpoint or a sweep's next point
  compiles the same programs again; the persistent cache turns those
  compiles into reads. `JAX_COMPILATION_CACHE_DIR` set by the user wins.
  """
  if jax.config.jax_compilation_cache_dir:
    return
  os.makedirs(directory, exist_ok=True)
  jax.config.update('jax_compilation_cache_dir', directory)
  # Small programs are the ones relaunched most often (tests, local runs).
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
