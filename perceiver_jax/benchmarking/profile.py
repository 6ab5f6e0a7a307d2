"""Forward against gradient time of a config's loss, and where time goes.

`profile_top` reads `jax.profiler`'s trace of a compiled program: the
costliest XLA operations (thunks) per call, each with the JAX `op_name` of
its HLO instruction; `by_module` sums them by Haiku module path.
"""

import collections
import glob
import os
import re
import tempfile
import time
from typing import Any, Sequence

import jax
import ml_collections
import optax

from perceiver_jax.benchmarking import machine
from perceiver_jax.benchmarking import steps
from perceiver_jax.model import factory


def op_names(hlo_text: str) -> dict[str, str]:
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
  """The first `depth` Haiku module names of a JAX op_name, without
  transformations, the jitted function, methods (`_encode`), control flow,
  nested jits and the primitive; repeats collapse."""
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
  names = op_names(hlo_text)
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


def gradient_profile(config: ml_collections.ConfigDict, batch_size: int,
                     calls: int) -> tuple[dict[str, Any], dict[str, Any]]:
  """Compiles and times the training loss and its gradient on one device.

  Returns:
    (the JSON fields: compile seconds, XLA's FLOPs and bytes per example,
    min and median seconds of each, their ratio, the load; the compiled
    programs by name with their `args`).
  """
  forward = factory.transform_classifier(config.model,
                                         config.data.num_classes)
  batch = steps.synthetic_batch(config, (batch_size,))
  labels = batch.pop('label')
  del batch['mask']
  params = jax.jit(lambda key, b: forward.init(key, b, is_training=True))(
      jax.random.PRNGKey(0), batch)

  def loss(p, b):
    logits = forward.apply(p, jax.random.PRNGKey(1), b, is_training=True)
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, labels).mean()

  result, compiled = dict(batch_size=batch_size), dict(args=(params, batch))
  for name, fn in (('forward', loss), ('gradient', jax.grad(loss))):
    start = time.perf_counter()
    compiled[name] = jax.jit(fn).lower(params, batch).compile()
    result[f'{name}_compile_seconds'] = round(time.perf_counter() - start, 2)
    flops, bytes_accessed = machine.xla_cost(compiled[name])
    result[f'{name}_xla_gflops_per_example'] = round(
        flops / batch_size / 1e9, 3)
    result[f'{name}_xla_gbytes_per_example'] = round(
        bytes_accessed / batch_size / 1e9, 3)
    times, _ = machine.time_steps(compiled[name], (params, batch),
                                  steps=calls, warmup=1, carry_first=False)
    result[f'{name}_seconds_min'] = times['min']
    result[f'{name}_seconds_median'] = times['median']
  result['gradient_over_forward_min'] = (
      result['gradient_seconds_min'] / result['forward_seconds_min'])
  result['load_average_1m'] = machine.load_average()
  return result, compiled
