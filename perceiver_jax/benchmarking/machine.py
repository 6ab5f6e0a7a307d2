"""The machine: its environment, peak and measured FLOP rates, memory, timing.

Two efficiency figures: the nominal MFU (the paper's FLOP count against a
data-sheet peak, `PEAK_FLOPS`), and the fraction of the machine's own
dense-matmul rate (`matmul_rates`) that the FLOPs XLA actually executes
(`xla_cost` of the compiled step) reach.
"""

import os
import platform
import resource
import sys
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

# XLA:CPU options for a quicker compile (and a slower step): `--fast_compile`.
FAST_COMPILE_OPTIONS = {
    'xla_backend_optimization_level': 0,
    'xla_llvm_disable_expensive_passes': True,
    'xla_cpu_use_fusion_emitters': False,
}

# Dense peak FLOP/s per device by `device_kind` substring (the longest match
# wins) and compute precision, from the vendors' data sheets without
# sparsity (half the sparse figures they list). float32 on NVIDIA GPUs is
# the TF32 tensor-core rate, which XLA uses for float32 matmuls by default.
PEAK_FLOPS: dict[str, dict[str, float]] = {
    'H200 NVL': {'bfloat16': 835e12, 'float32': 418e12},
    'H200': {'bfloat16': 989e12, 'float32': 494e12},  # SXM.
    'H100 NVL': {'bfloat16': 835e12, 'float32': 418e12},
    'H100 PCIe': {'bfloat16': 756e12, 'float32': 378e12},
    'H100': {'bfloat16': 989e12, 'float32': 494e12},  # SXM.
    'A100': {'bfloat16': 312e12, 'float32': 156e12},
    'L4': {'bfloat16': 121e12, 'float32': 60e12},
    'A10': {'bfloat16': 125e12, 'float32': 62.5e12},
    'V100': {'bfloat16': 125e12, 'float32': 15.7e12},  # fp16 tensor cores.
    'TPU v4': {'bfloat16': 275e12, 'float32': 275e12},
    'TPU v5 lite': {'bfloat16': 197e12, 'float32': 197e12},
    'TPU v5p': {'bfloat16': 459e12, 'float32': 459e12},
}


def peak_flops(device_kind: str, precision: str) -> Optional[float]:
  """Data-sheet peak FLOP/s of one device of `device_kind`, or None."""
  for kind in sorted(PEAK_FLOPS, key=len, reverse=True):
    if kind.lower() in device_kind.lower():
      return PEAK_FLOPS[kind][precision]
  return None


def model_flops_utilisation(train_flops_per_example: float,
                            examples_per_second: float, num_devices: int,
                            peak_per_device: Optional[float]
                            ) -> Optional[float]:
  """Achieved nominal FLOP/s over the devices' peak (None without a peak)."""
  if not peak_per_device:
    return None
  return (train_flops_per_example * examples_per_second /
          (num_devices * peak_per_device))


def load_average() -> Optional[float]:
  """The 1-minute load average (None where the platform has none)."""
  try:
    return round(os.getloadavg()[0], 2)
  except OSError:
    return None


def environment() -> dict[str, Any]:
  """Backend, device kind and count, cores, load and JAX version."""
  return dict(
      backend=jax.default_backend(),
      device_kind=jax.local_devices()[0].device_kind,
      num_devices=jax.local_device_count(),
      cpu_count=os.cpu_count(), load_average_1m=load_average(),
      machine=platform.machine(), jax_version=jax.__version__)


def xla_cost(program: Any) -> tuple[float, float]:
  """(FLOPs, bytes accessed) from XLA's cost analysis of a lowered or
  compiled program (compiled: of the optimised HLO, per device)."""
  cost = program.cost_analysis()
  if not cost or 'flops' not in cost:
    raise RuntimeError(f'XLA cost analysis gave no FLOP count: {cost!r}.')
  return float(cost['flops']), float(cost.get('bytes accessed', 0.0))


def matmul_rates(sizes: Optional[Sequence[int]] = None, *,
                 calls: int = 5) -> dict[str, float]:
  """{'float32': rate, 'bfloat16': rate}: the best dense-matmul FLOP/s of
  one device over square `sizes`; bf16 inputs give float32 outputs."""
  if sizes is None:  # Small on CPUs, large on accelerators.
    sizes = ((256, 512, 1024) if jax.default_backend() == 'cpu' else
             (2048, 4096, 8192))
  rates = {}
  for name, dtype in (('float32', jnp.float32), ('bfloat16', jnp.bfloat16)):
    best = 0.0
    for n in sizes:
      a = jnp.ones((n, n), dtype)
      product = jax.jit(lambda x, y: jnp.dot(
          x, y, preferred_element_type=jnp.float32)).lower(a, a).compile()
      times, _ = time_steps(product, (a, a), steps=calls, warmup=1,
                            carry_first=False)
      best = max(best, 2 * n**3 / times['min'])
    rates[name] = best
  return rates


def machine_fraction(executed_flops_per_sec: Optional[float],
                     rates: Optional[Mapping[str, float]], precision: str
                     ) -> Optional[float]:
  """Executed FLOP/s over the matmul rate in `precision` of every device
  (the CPU's devices share the cores the one-device probe used)."""
  if executed_flops_per_sec is None or not rates:
    return None
  devices = 1 if jax.default_backend() == 'cpu' else jax.local_device_count()
  return executed_flops_per_sec / (rates[precision] * devices)


def memory_stats() -> dict[str, Any]:
  """The first local device's memory statistics ({} where it has none)."""
  try:
    return jax.local_devices()[0].memory_stats() or {}
  except Exception:  # pylint: disable=broad-except
    return {}  # Not every backend reports memory (CPU).


def peak_memory_bytes() -> tuple[int, str]:
  """(peak bytes, what was measured): the first device's peak where it
  reports one, else this process's peak resident set size."""
  stats = memory_stats()
  if 'peak_bytes_in_use' in stats:
    return int(stats['peak_bytes_in_use']), 'device_peak'
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  # Linux reports kilobytes, macOS bytes.
  return int(rss if sys.platform == 'darwin' else rss * 1024), 'process_rss'


def xla_memory_bytes(compiled: Any) -> Optional[int]:
  """XLA's planned memory of a compiled program (arguments, outputs and
  temporaries), or None if not reported."""
  analysis = compiled.memory_analysis()
  if analysis is None:
    return None
  return int(analysis.argument_size_in_bytes + analysis.output_size_in_bytes +
             analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)


def time_steps(step: Callable[..., Any], args: Sequence[Any], *, steps: int,
               warmup: int, carry_first: bool
               ) -> tuple[Optional[dict[str, Any]], Any]:
  """({mean, min, median seconds, minor page_faults} per call, the last
  result) of `steps` calls after `warmup`; (None, None) for 0 steps.
  `carry_first`: each call's first output is the next one's first input."""
  if steps == 0:
    return None, None
  result = None
  for i in range(warmup + steps):
    if i == warmup:
      jax.block_until_ready(result)
      seconds = []
      faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    result = step(*args)
    if carry_first:
      args = (result[0], *args[1:])
    if i >= warmup:
      jax.block_until_ready(result)
      seconds.append(time.perf_counter() - start)
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
  return dict(mean=float(np.mean(seconds)), min=float(np.min(seconds)),
              median=float(np.median(seconds)),
              page_faults=faults // steps), result


def time_in_rounds(steps: Sequence[Optional[Callable[[], None]]], *,
                   rounds: int, calls: int, warmup: int) -> list[list[float]]:
  """Each function's mean seconds per call in each round (None: []); round
  r times `calls` calls of each in turn from function r, so that a change
  in the load touches all alike."""
  for step in steps:
    for _ in range(warmup if step else 0):
      step()
  seconds = [[] for _ in steps]
  for r in range(rounds):
    for i in range(len(steps)):
      index = (r + i) % len(steps)
      if steps[index] is None:
        continue
      start = time.perf_counter()
      for _ in range(calls):
        steps[index]()
      seconds[index].append((time.perf_counter() - start) / calls)
  return seconds


def paired_speedup(peer_rounds: Sequence[float],
                   our_rounds: Sequence[float]) -> float:
  """The median over rounds of the peer's time over ours in that round."""
  return float(np.median([peer / ours for peer, ours in
                          zip(peer_rounds, our_rounds, strict=True)]))


def log_spaced(low: int, high: int, num: int) -> list[int]:
  """`num` integers from `low` to `high`, evenly spaced in log, distinct."""
  if not 1 <= low <= high or num < 1:
    raise ValueError(f'Need 1 <= min_inputs <= max_inputs and num_points >= '
                     f'1, got {low}, {high}, {num}.')
  if num == 1:
    return [low]
  return sorted({int(round(v)) for v in np.geomspace(low, high, num)})
