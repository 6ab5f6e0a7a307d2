r"""Forward against gradient time of a config's model, and where it goes.

  python -m experiments.gradient_profile --config=configs/digits.py \
      [--batch_size=64] [--calls=10] [--top=25] [--module_depth=3] \
      [--hlo_dir=/tmp/hlo]

Jits the training loss (softmax cross-entropy of the classifier's logits,
`is_training=True`) and its gradient with respect to the parameters, on
one device and a synthetic batch, and prints one JSON line: compile
seconds, min and median seconds per call of each, their ratio, XLA's
count of each program's FLOPs and bytes accessed per example (independent
of the machine's load; XLA counts a scanned body once, so pass
`--config.model.encoder.scan_blocks=False` to count every block), and the
1-minute load average. With `--top=K` it then runs the gradient under
`jax.profiler` and prints the K XLA operations (thunks) that took the most
time per call, summed over threads, each with its HLO instruction name and
the `op_name` of the JAX operation it came from; `--hlo_dir` writes both
optimised HLO modules, so that an expensive fusion can be read in full;
`--module_depth=D` also sums the listed operations' time by Haiku module
path, D modules deep (e.g. 3: `perceiver/latent_transformer_0/
self_attend_1`).
This is how the transposing copies of `perceiver_jax.model.layers.
FlatLinear`'s docstring were found.
"""

import collections
import glob
import json
import os
import re
import tempfile
import time
from typing import Any, Sequence

from absl import flags
import jax
import numpy as np
import optax

from experiments import benchmark
from experiments import model_summary
from perceiver_jax import host_memory
from perceiver_jax import cli
from perceiver_jax.model import factory

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


def _time_calls(compiled, args, calls: int) -> list[float]:
  jax.block_until_ready(compiled(*args))
  seconds = []
  for _ in range(calls):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    seconds.append(time.perf_counter() - start)
  return seconds


def _op_names(hlo_text: str) -> dict[str, str]:
  """HLO instruction name -> the JAX op_name in its metadata.

  An instruction without metadata that calls a computation (a fusion, e.g.
  `ynn_fusion.94`) takes the first op_name found in that computation.
  """
  names, calls = {}, {}
  first_in_computation = {}
  computation = None
  for line in hlo_text.splitlines():
    header = re.match(r'(?:ENTRY )?%?([\w.\-]+) .*\{$', line)
    if header and not line.startswith(' '):
      computation = header.group(1)
      continue
    match = re.match(r'\s*(?:ROOT )?%(\S+) = ', line)
    if not match:
      continue
    op_name = re.search(r'op_name="([^"]*)"', line)
    if op_name:
      names[match.group(1)] = op_name.group(1)
      first_in_computation.setdefault(computation, op_name.group(1))
    else:
      called = re.search(r'calls=%?([\w.\-]+)', line)
      if called:
        calls[match.group(1)] = called.group(1)
  for instruction, called in calls.items():
    if called in first_in_computation:
      names[instruction] = first_in_computation[called]
  return names


def module_path(op_name: str, depth: int) -> str:
  """The first `depth` Haiku module names of a JAX op_name.

  `jit(loss)/transpose(jvp(perceiver))/_encode/perceiver/cross_attend_0/
  attention/attend_unprojected/attention/reduce_sum` with depth 2 ->
  `perceiver/cross_attend_0`: the transformation wrappers (`jvp(...)`,
  `transpose(...)`) are removed, and so are the jitted function, method
  names (`_encode`), control flow (`while`, `body`, `closed_call`), nested
  jits and the primitive (the last part). Consecutive repeats collapse.
  """
  parts = []
  for part in op_name.split('/')[1:-1]:
    inner = re.sub(r'^(?:\w+\()+|\)+$', '', part)
    if (not inner or inner.startswith('_') or part.startswith('jit(') or
        inner in ('while', 'body', 'closed_call', 'cond', 'branch')):
      continue
    if not parts or parts[-1] != inner:
      parts.append(inner)
  return '/'.join(parts[:depth]) or '(outside modules)'


def profile_top(compiled, args, hlo_text: str, calls: int,
                top: int) -> list[dict[str, Any]]:
  """The `top` XLA operations by time per call (summed over threads), each
  with its JAX op_name (None where XLA kept no metadata, as for some
  YNNPACK matmul fusions) and its output shape."""
  from jax._src.lib import _profile_data  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as directory:
    with jax.profiler.trace(directory):
      for _ in range(calls):
        jax.block_until_ready(compiled(*args))
    path = glob.glob(os.path.join(directory, '**', '*.xplane.pb'),
                     recursive=True)[0]
    profile = _profile_data.ProfileData.from_file(path)
    totals = collections.Counter()
    for plane in profile.planes:
      if not plane.name.startswith('/host'):
        continue
      for line in plane.lines:
        for event in line.events:
          # XLA's operations carry their HLO names (`dot.3`, `ynn_fusion`);
          # Python frames, executor spans and client calls do not.
          if re.fullmatch(r'[\w\-]+(\.\d+)?', event.name) and (
              'python' not in line.name.lower()):
            totals[event.name] += event.duration_ns
  names = _op_names(hlo_text)
  shapes = dict(re.findall(r'^\s*(?:ROOT )?%(\S+) = (\w+\[[\d,]*\])',
                           hlo_text, flags=re.MULTILINE))
  return [dict(op=name, ms_per_call=round(ns / 1e6 / calls, 3),
               jax_op=names.get(name), shape=shapes.get(name))
          for name, ns in totals.most_common(top)]


def by_module(rows: Sequence[dict[str, Any]], depth: int
              ) -> list[dict[str, Any]]:
  """Sums `profile_top` rows by `module_path(jax_op, depth)`, largest
  first; each with its share of the total."""
  totals = collections.Counter()
  for row in rows:
    module = ('(no metadata)' if row['jax_op'] is None else
              module_path(row['jax_op'], depth))
    totals[module] += row['ms_per_call']
  total = sum(totals.values())
  return [dict(module=module, ms_per_call=round(ms, 3),
               share=round(ms / total, 3) if total else None)
          for module, ms in totals.most_common()]


def main(argv: Sequence[str]) -> None:
  host_memory.keep_freed_memory()  # Process-wide, before JAX allocates.
  cli.no_arguments(argv)
  config = _CONFIG.value
  batch_size = _BATCH_SIZE.value or config.train.batch_size
  forward = factory.transform_classifier(config.model,
                                         config.data.num_classes)
  batch = benchmark.synthetic_batch(config, (batch_size,))
  labels = batch.pop('label')
  del batch['mask']
  params = jax.jit(lambda key, b: forward.init(key, b, is_training=True))(
      jax.random.PRNGKey(0), batch)

  def loss(p, b):
    logits = forward.apply(p, jax.random.PRNGKey(1), b, is_training=True)
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, labels).mean()

  result = dict(batch_size=batch_size)
  compiled = {}
  for name, fn in (('forward', loss), ('gradient', jax.grad(loss))):
    start = time.perf_counter()
    compiled[name] = jax.jit(fn).lower(params, batch).compile()
    result[f'{name}_compile_seconds'] = round(time.perf_counter() - start, 2)
    flops, bytes_accessed = model_summary.xla_cost(compiled[name])
    result[f'{name}_xla_gflops_per_example'] = round(
        flops / batch_size / 1e9, 3)
    result[f'{name}_xla_gbytes_per_example'] = round(
        bytes_accessed / batch_size / 1e9, 3)
    seconds = _time_calls(compiled[name], (params, batch), _CALLS.value)
    result[f'{name}_seconds_min'] = min(seconds)
    result[f'{name}_seconds_median'] = float(np.median(seconds))
    if _HLO_DIR.value:
      os.makedirs(_HLO_DIR.value, exist_ok=True)
      with open(os.path.join(_HLO_DIR.value, f'{name}.hlo.txt'), 'w') as f:
        f.write(compiled[name].as_text())
  result['gradient_over_forward_min'] = (
      result['gradient_seconds_min'] / result['forward_seconds_min'])
  result['load_average_1m'] = round(os.getloadavg()[0], 2)
  print(json.dumps(result), flush=True)
  if _TOP.value:
    rows = profile_top(compiled['gradient'], (params, batch),
                       compiled['gradient'].as_text(), _CALLS.value,
                       _TOP.value)
    for row in rows:
      print(json.dumps(row), flush=True)
    if _MODULE_DEPTH.value:
      for row in by_module(rows, _MODULE_DEPTH.value):
        print(json.dumps(row), flush=True)


if __name__ == '__main__':
  cli.run(main)
