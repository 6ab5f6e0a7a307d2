r"""One command that measures the headline figures on an accelerator.

  XLA_PYTHON_CLIENT_MEM_FRACTION=0.95 python -m experiments.gpu_report \
      --out=gpu_report
  python -m experiments.gpu_report --tiny --out=/tmp/gpu_report  # CPU test

Runs the stages of `perceiver_jax.benchmarking.report` on the headline
config (configs/imagenet.py in bfloat16 with the dot-product attention)
within `--budget_seconds` (480; 60 with `--tiny`), each within its cap
(`--stage_seconds=name=seconds,...`), rewriting `report.json` and
`report.md` in `--out` after every attempt. A failed stage makes the exit
status 1. `--tiny`: runlocal ImageNet shrunk, on any backend.
"""

import datetime
import json
import os
import sys
import time
from typing import Sequence

from absl import flags

from configs import common
from configs import imagenet
from perceiver_jax import cli
from perceiver_jax import host_memory

_OUT = flags.DEFINE_string('out', None, 'Directory for report.json, '
                           'report.md and scaling.png (created).')
_TINY = flags.DEFINE_bool('tiny', False, 'The CPU-sized form for tests: '
                          'runlocal ImageNet shrunk, on any backend.')
_BUDGET = flags.DEFINE_float(
    'budget_seconds', None, 'Wall-clock budget of the whole run (default '
    '480; 60 with --tiny).')
_STAGE_SECONDS = flags.DEFINE_list(
    'stage_seconds', [], 'Per-stage caps, name=seconds (stages: headline, '
    'float32, einsum, max_inputs, scaling).')


def headline_config(profile):
  """configs/imagenet.py (shrunk by `profile`) in the headline's modes."""
  from perceiver_jax.benchmarking import report  # pylint: disable=g-import-not-at-top
  return report.with_changes(
      imagenet.get_config(profile.config_arg), side=profile.image_side,
      **profile.encoder, precision='bfloat16', attention_impl='dot_product')


def main(argv: Sequence[str]) -> None:
  host_memory.keep_freed_memory()  # Process-wide, before JAX allocates.
  start = time.monotonic()  # The budget includes JAX's start-up.
  cli.no_arguments(argv)
  import jax  # pylint: disable=g-import-not-at-top
  from perceiver_jax.benchmarking import report  # pylint: disable=g-import-not-at-top
  profile = report.TINY if _TINY.value else report.FULL
  caps = report.parse_caps(_STAGE_SECONDS.value, profile.caps)
  budget = (_BUDGET.value if _BUDGET.value is not None else
            profile.budget_seconds)
  if not _TINY.value and jax.default_backend() == 'cpu':
    raise ValueError('JAX sees no accelerator (backend cpu): the full report '
                     'is for a GPU or TPU; --tiny runs its CPU-sized form.')
  header = dict(
      command='python -m experiments.gpu_report ' + ' '.join(sys.argv[1:]),
      tiny=_TINY.value,
      started_utc=datetime.datetime.now(datetime.timezone.utc).strftime(
          '%Y-%m-%d %H:%M:%S UTC'))
  config = headline_config(profile)
  done = report.run_report(
      profile, config, lambda m: common.with_num_inputs(config, m),
      _OUT.value, budget_seconds=budget, caps=caps, header=header,
      start=start)
  statuses = {name: s['status'] for name, s in done.stages.items()}
  print(json.dumps(dict(out=_OUT.value, elapsed_seconds=done.doc[
      'elapsed_seconds'], stages=statuses)), flush=True)
  failed = [name for name, status in statuses.items() if status == 'failed']
  if failed:
    print(f'error: stage(s) {", ".join(failed)} failed (tracebacks above and '
          f'in {os.path.join(_OUT.value, report.JSON_NAME)})',
          file=sys.stderr, flush=True)
    sys.exit(1)


if __name__ == '__main__':
  flags.mark_flag_as_required('out')
  cli.run(main)
