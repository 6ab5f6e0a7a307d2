r"""Forward against gradient time of a config's model, and where it goes.

  python -m experiments.gradient_profile --config=configs/digits.py \
      [--batch_size=64] [--calls=10] [--top=25] [--module_depth=3] \
      [--hlo_dir=/tmp/hlo]

Prints one JSON line: compile seconds, min and median seconds per call of
the training loss and its gradient, their ratio, XLA's FLOPs and bytes per
example (a scanned body counts once) and the load; `--top=K` then the K
costliest XLA operations of the gradient (`--module_depth=D`: also summed
by Haiku module path); `--hlo_dir` writes both optimised HLO modules.
"""

import json
import os
from typing import Sequence

from absl import flags

from perceiver_jax import cli
from perceiver_jax import host_memory

_CONFIG = cli.define_config_flag('configs/digits.py',
                                 'The experiment config file.')
_BATCH_SIZE = flags.DEFINE_integer(
    'batch_size', None, 'Batch size (default: config.train.batch_size).')
_CALLS = flags.DEFINE_integer('calls', 10, 'Timed calls of each program.')
_TOP = flags.DEFINE_integer('top', 0, 'Profile the gradient: print the K '
                            'costliest XLA operations (0: no profile).')
_HLO_DIR = flags.DEFINE_string('hlo_dir', None,
                               'Write the optimised HLO of both programs.')
_MODULE_DEPTH = flags.DEFINE_integer(
    'module_depth', 0, 'With --top: also print the profiled time summed by '
    'Haiku module path, this many modules deep (0: no).')


def main(argv: Sequence[str]) -> None:
  host_memory.keep_freed_memory()  # Process-wide, before JAX allocates.
  cli.no_arguments(argv)
  from perceiver_jax.benchmarking import profile  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  result, compiled = profile.gradient_profile(
      config, _BATCH_SIZE.value or config.train.batch_size, _CALLS.value)
  print(json.dumps(result), flush=True)
  if _HLO_DIR.value:
    os.makedirs(_HLO_DIR.value, exist_ok=True)
    for name in ('forward', 'gradient'):
      with open(os.path.join(_HLO_DIR.value, f'{name}.hlo.txt'), 'w') as f:
        f.write(compiled[name].as_text())
  if _TOP.value:
    gradient = compiled['gradient']
    rows = profile.profile_top(gradient, compiled['args'], gradient.as_text(),
                               _CALLS.value, _TOP.value)
    if _MODULE_DEPTH.value:
      rows += profile.by_module(rows, _MODULE_DEPTH.value)
    for row in rows:
      print(json.dumps(row), flush=True)


if __name__ == '__main__':
  cli.run(main)
