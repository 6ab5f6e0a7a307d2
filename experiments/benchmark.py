r"""Benchmarks a config's train step, forward pass, input pipeline or M scaling.

  python -m experiments.benchmark --config=configs/imagenet.py --mode=train \
      --batch_size=1 --steps=3
  python -m experiments.benchmark --config=configs/imagenet.py:runlocal \
      --mode=forward --precision=bfloat16 --attention_impl=dot_product
  python -m experiments.benchmark --config=configs/imagenet.py:mock \
      --mode=input --batch_size=32
  python -m experiments.benchmark --config=configs/imagenet.py --mode=scaling \
      --plot=docs/scaling.png

Every result is one JSON line on stdout. Modes:

- `train`: the real training step (`perceiver_jax.train.loop.make_train_step`:
  pmapped over the local devices, optimizer included) on a synthetic batch of
  `--batch_size` examples (global; split over the local devices).
- `forward`: the jitted inference forward pass on one device.
- `input`: the config's training loader (`config.task`'s data module) timed
  by `perceiver_jax.data.throughput.measure_input_throughput`: images per
  second and per CPU-second (per fully used core).
- `scaling`: the train step at batch 1 on a 1D grid of M inputs (M from
  `--min_inputs` to `--max_inputs`, log-spaced) at the config's latents;
  writes a PNG of step time and XLA's memory plan against M (`--plot`).

Times are measured after warm-up: `compile_seconds` is lowering plus XLA
compilation of the step; `step_seconds` the mean wall time of `--steps`
steps after `--warmup` steps (`step_seconds_min`, `step_seconds_median`:
of the steps timed one by one; on a shared machine the minimum is the
least disturbed); `page_faults_per_step` the process's minor page faults
per timed step (memory mapped afresh: `perceiver_jax.host_memory`).
Memory: on accelerators the device's peak (`device.memory_stats()`); on CPU the process's peak resident set (from
`resource.getrusage`, compilation included); and everywhere
`xla_memory_bytes`, XLA's plan for the compiled step (arguments, outputs
and temporaries), which is comparable between programs in one process.
Model FLOPs utilisation (`mfu`) counts the nominal training FLOPs, 3x the
paper-style forward count of `experiments.model_summary.summarize` (no K/V
reuse credited), against `PEAK_FLOPS` of the device kind; it is null where
the peak is unknown (CPUs).

`--num_inputs=M` replaces the config's input by a 1D grid of M positions
(same raw channels and Fourier bands), for any M. Overrides such as
`--config.model.encoder.scan_blocks=True` work as in `experiments.train`.
"""

import functools
import json
import os
import platform
import resource
import sys
import time
from typing import Any, Iterable, Mapping, NamedTuple, Optional, Sequence

import jax
import ml_collections
import numpy as np

from perceiver_jax import host_memory

MODES = ('train', 'forward', 'input', 'scaling')

# XLA options that cut CPU compile times about four times (backend
# optimisations and the newer fusion emitters off), for `--fast_compile`.
# They change run times too (see docs/performance.md).
FAST_COMPILE_OPTIONS = {
    'xla_backend_optimization_level': 0,
    'xla_llvm_disable_expensive_passes': True,
    'xla_cpu_use_fusion_emitters': False,
}

# Dense peak FLOP/s per device by device kind (substring of
# `device.device_kind`) and compute precision, from the vendors' data sheets
# (no sparsity). float32 on NVIDIA GPUs is counted at the TF32 tensor-core
# rate, which XLA uses for float32 matmuls by default. Hopper: NVIDIA's
# "H100 Tensor Core GPU" and "H200 Tensor Core GPU" data sheets list BF16
# and TF32 tensor-core rates with 2:4 sparsity (SXM: 1,979 and 989 TFLOPS;
# H100 PCIe: 1,513 and 756; H100 NVL and H200 NVL: 1,671 and 835); the
# dense rates are half of those. SXM parts are named plainly ('NVIDIA H200',
# 'NVIDIA H100 80GB HBM3'); the longest matching key wins.
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
  """Peak FLOP/s of one device of `device_kind`, or None if unknown."""
  for kind in sorted(PEAK_FLOPS, key=len, reverse=True):  # 'H100' < 'H100 X'
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


def peak_memory_bytes(device: Any) -> tuple[int, str]:
  """(peak bytes, what was measured): the device's peak where it reports
  one (GPU, TPU), else this process's peak resident set size."""
  stats = None
  try:
    stats = device.memory_stats()
  except Exception:  # pylint: disable=broad-except
    stats = None
  if stats and 'peak_bytes_in_use' in stats:
    return int(stats['peak_bytes_in_use']), 'device_peak'
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  # Linux reports kilobytes, macOS bytes.
  return int(rss if sys.platform == 'darwin' else rss * 1024), 'process_rss'


def xla_memory_bytes(compiled: Any) -> Optional[int]:
  """XLA's planned memory of a compiled program, or None if not reported."""
  try:
    analysis = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if analysis is None:
    return None
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  return int(analysis.argument_size_in_bytes + analysis.output_size_in_bytes +
             analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)


def with_num_inputs(config: ml_collections.ConfigDict,
                    num_inputs: int) -> ml_collections.ConfigDict:
  """A copy of `config` whose input is a 1D grid of `num_inputs` positions.

  Raw channels and Fourier bands are the config's (3 and 64 for ImageNet);
  the Fourier features' maximum resolution is M itself.
  """
  if (isinstance(num_inputs, bool) or not isinstance(num_inputs, int) or
      num_inputs < 1):
    raise ValueError(f'num_inputs must be a positive integer, got '
                     f'{num_inputs!r}.')
  from configs import common  # pylint: disable=g-import-not-at-top
  config = config.copy_and_resolve_references()
  old = config.model.input
  raw_channels = int(old.get('raw_channels', 3))
  num_bands = int(old.get('num_bands', 64))
  with config.unlocked():
    config.model.input = common.grid_input(
        key='inputs', index_dims=(num_inputs,), raw_channels=raw_channels,
        num_bands=num_bands, max_resolution=None,
        position_encoding=old.get('position_encoding', 'fourier'))
  return config


def synthetic_batch(config: ml_collections.ConfigDict,
                    batch_dims: Sequence[int], seed: int = 0
                    ) -> dict[str, np.ndarray]:
  """Random inputs shaped as `config`'s adapter reads them, labels, mask."""
  from perceiver_jax.model import factory  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  shapes = factory.example_batch(config.model.input, 1)
  batch = {key: rng.uniform(size=(*batch_dims, *s.shape[1:])).astype(
      np.float32) for key, s in shapes.items()}
  batch['label'] = rng.integers(
      0, config.data.num_classes, size=tuple(batch_dims)).astype(np.int32)
  batch['mask'] = np.ones(tuple(batch_dims), np.float32)
  return batch


def _num_inputs_of(config: ml_collections.ConfigDict) -> int:
  """M: positions of the byte array (from the adapter's output shape)."""
  # pylint: disable=g-import-not-at-top
  import haiku as hk
  from perceiver_jax.model import factory
  # pylint: enable=g-import-not-at-top
  input_config = config.model.copy_and_resolve_references().input
  adapter = hk.transform(lambda b: factory.make_adapter(input_config)(
      b, is_training=False)[0])
  batch = factory.example_batch(input_config, 1)
  shape = jax.eval_shape(
      lambda b: adapter.apply(adapter.init(jax.random.PRNGKey(0), b), None,
                              b), batch).shape
  return int(shape[1])


def _time_steps(step, args, *, steps: int, warmup: int, carry_first: bool):
  """Times `steps` calls after `warmup`; returns (times, result).

  `times` holds `mean`, `min` and `median` seconds per call, each call
  waited for on its own: on a shared machine the minimum is the least
  disturbed figure; and `page_faults`, the process's minor page faults per
  call (memory the kernel had to map afresh, see
  `perceiver_jax.host_memory`). With `steps=0` nothing runs (compile-time
  measurements): (None, None).
  """
  if steps == 0:
    return None, None
  result = None
  for _ in range(warmup):
    result = step(*args)
    if carry_first:
      args = (result[0], *args[1:])
  jax.block_until_ready(result)
  seconds = []
  faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(steps):
    start = time.perf_counter()
    result = step(*args)
    if carry_first:
      args = (result[0], *args[1:])
    jax.block_until_ready(result)
    seconds.append(time.perf_counter() - start)
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
  return dict(mean=float(np.mean(seconds)), min=float(np.min(seconds)),
              median=float(np.median(seconds)),
              page_faults=faults // steps), result


def _step_fields(times: Optional[Mapping[str, float]]) -> dict[str, Any]:
  if times is None:
    return dict(step_seconds=None, step_seconds_min=None,
                step_seconds_median=None, page_faults_per_step=None)
  return dict(step_seconds=times['mean'], step_seconds_min=times['min'],
              step_seconds_median=times['median'],
              page_faults_per_step=times['page_faults'])


def _rates(step_seconds: Optional[float], batch_size: int
           ) -> dict[str, Optional[float]]:
  if step_seconds is None:
    return dict(steps_per_sec=None, examples_per_sec=None)
  return dict(steps_per_sec=1.0 / step_seconds,
              examples_per_sec=batch_size / step_seconds)


def _environment() -> dict[str, Any]:
  device = jax.local_devices()[0]
  try:
    load = os.getloadavg()
  except OSError:
    load = (float('nan'),) * 3
  return dict(
      backend=jax.default_backend(),
      device_kind=device.device_kind,
      num_devices=jax.local_device_count(),
      cpu_count=os.cpu_count(),
      load_average_1m=round(load[0], 2),
      machine=platform.machine(),
      jax_version=jax.__version__,
  )


def _model_fields(config: ml_collections.ConfigDict) -> dict[str, Any]:
  encoder = config.model.encoder
  return dict({k: encoder.get(k) for k in (
      'precision', 'attention_impl', 'scan_blocks', 'remat',
      'reuse_shared_keys_values', 'absorb_cross_attend_projections',
      'num_blocks', 'num_self_attends_per_block', 'num_latents',
      'num_latent_channels')}, grid_parts=config.model.get('grid_parts'))


def nominal_flops_per_example(config: ml_collections.ConfigDict
                              ) -> tuple[int, int]:
  """(parameters, nominal forward FLOPs of one example) from model_summary.

  Counted in float32 without scan or remat: the FLOP count is a property of
  the model, not of how a run executes it.
  """
  from experiments import model_summary  # pylint: disable=g-import-not-at-top
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.model.encoder.update(scan_blocks=False, remat='none',
                                precision='float32')
  summary = model_summary.summarize(config)
  return summary['params'], summary['flops_per_example']


class PreparedTrainStep(NamedTuple):
  """A config's compiled train step and its first arguments.

  Attributes:
    compiled: the compiled pmapped step, `(state, batch) -> (state,
      metrics)`.
    args: `(state, batch)`: the replicated initial state and a sharded
      synthetic batch.
    fields: `batch_size`, `num_inputs`, `params`, `lower_seconds`,
      `compile_seconds`, `compiler_options`, `xla_memory_bytes`.
  """
  compiled: Any
  args: tuple[Any, Any]
  fields: dict[str, Any]


def prepare_train_step(config: ml_collections.ConfigDict, *,
                       compiler_options: Optional[Mapping[str, Any]] = None
                       ) -> PreparedTrainStep:
  """Builds, lowers and compiles `config`'s training step (see module doc)."""
  # pylint: disable=g-import-not-at-top
  from perceiver_jax.model import factory
  from perceiver_jax.train import loop
  from perceiver_jax.train import optim
  from perceiver_jax.train import parallel
  # pylint: enable=g-import-not-at-top
  batch_size = config.train.batch_size
  batch_dims = parallel.local_batch_dims(batch_size)
  forward = factory.transform_classifier(config.model,
                                         config.data.num_classes)
  schedule = optim.learning_rate_schedule(
      config.optimizer, total_steps=1000, steps_per_epoch=100.0)
  optimizer = optim.make_optimizer(config.optimizer, schedule)
  batch = synthetic_batch(config, batch_dims)
  state = loop.initial_state(forward, optimizer,
                             {k: v[0] for k, v in batch.items()}, config.seed)
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  state = parallel.replicate(state)
  sharded = parallel.shard(batch)
  train_step = loop.make_train_step(forward.apply, optimizer, schedule,
                                    config.loss)
  start = time.perf_counter()
  lowered = train_step.lower(state, sharded)
  lower_seconds = time.perf_counter() - start
  compiled = lowered.compile(compiler_options=dict(compiler_options or {}))
  compile_seconds = time.perf_counter() - start
  return PreparedTrainStep(compiled, (state, sharded), dict(
      batch_size=batch_size, num_inputs=_num_inputs_of(config),
      params=int(num_params), lower_seconds=lower_seconds,
      compile_seconds=compile_seconds,
      compiler_options=dict(compiler_options or {}),
      xla_memory_bytes=xla_memory_bytes(compiled)))


def benchmark_train(config: ml_collections.ConfigDict, *, steps: int = 5,
                    warmup: int = 2, count_flops: bool = True,
                    compiler_options: Optional[Mapping[str, Any]] = None
                    ) -> dict[str, Any]:
  """Times `config`'s training step on a synthetic batch; see module doc."""
  prepared = prepare_train_step(config, compiler_options=compiler_options)
  times, outputs = _time_steps(prepared.compiled, prepared.args,
                               steps=steps, warmup=warmup, carry_first=True)
  step_seconds = None if times is None else times['mean']
  loss = None if outputs is None else float(
      np.asarray(outputs[1]['loss'])[0])  # outputs: (state, metrics).
  batch_size = prepared.fields['batch_size']
  result = dict(mode='train', **prepared.fields, **_step_fields(times),
                **_rates(step_seconds, batch_size), loss=loss, steps=steps,
                warmup=warmup)
  return _finish(result, config, batch_size, count_flops, training=True)


def benchmark_forward(config: ml_collections.ConfigDict, *, steps: int = 5,
                      warmup: int = 2, count_flops: bool = True,
                      compiler_options: Optional[Mapping[str, Any]] = None
                      ) -> dict[str, Any]:
  """Times the jitted inference forward pass on one device."""
  from perceiver_jax.model import factory  # pylint: disable=g-import-not-at-top
  batch_size = config.train.batch_size
  forward = factory.transform_classifier(config.model,
                                         config.data.num_classes)
  batch = synthetic_batch(config, (batch_size,))
  del batch['label'], batch['mask']
  params = jax.jit(functools.partial(forward.init, is_training=False))(
      jax.random.PRNGKey(config.seed), batch)
  num_params = sum(x.size for x in jax.tree.leaves(params))
  apply = jax.jit(functools.partial(forward.apply, is_training=False))
  start = time.perf_counter()
  lowered = apply.lower(params, None, batch)
  lower_seconds = time.perf_counter() - start
  compiled = lowered.compile(compiler_options=dict(compiler_options or {}))
  compile_seconds = time.perf_counter() - start
  times, logits = _time_steps(compiled, (params, None, batch),
                              steps=steps, warmup=warmup, carry_first=False)
  step_seconds = None if times is None else times['mean']
  result = dict(mode='forward', batch_size=batch_size,
                num_inputs=_num_inputs_of(config), params=int(num_params),
                lower_seconds=lower_seconds, compile_seconds=compile_seconds,
                **_step_fields(times), **_rates(step_seconds, batch_size),
                logits_finite=None if logits is None else bool(
                    np.isfinite(np.asarray(logits)).all()),
                steps=steps, warmup=warmup,
                compiler_options=dict(compiler_options or {}),
                xla_memory_bytes=xla_memory_bytes(compiled))
  return _finish(result, config, batch_size, count_flops, training=False,
                 num_devices=1)


def _finish(result: dict[str, Any], config: ml_collections.ConfigDict,
            batch_size: int, count_flops: bool, *, training: bool,
            num_devices: Optional[int] = None) -> dict[str, Any]:
  """Adds memory, FLOPs, MFU, the model's modes and the environment."""
  env = _environment()
  memory, memory_kind = peak_memory_bytes(jax.local_devices()[0])
  result.update(peak_memory_bytes=memory, peak_memory_kind=memory_kind)
  result.update(_model_fields(config))
  if count_flops:
    _, forward_flops = nominal_flops_per_example(config)
    flops = (3 if training else 1) * forward_flops
    peak = peak_flops(env['device_kind'], config.model.encoder.get(
        'precision', 'float32'))
    rate = result['examples_per_sec']
    result.update(
        nominal_flops_per_example=flops,
        nominal_flops_per_sec=None if rate is None else flops * rate,
        peak_flops_per_device=peak,
        mfu=None if rate is None else model_flops_utilisation(
            flops, rate, num_devices or env['num_devices'], peak))
  result.update(env)
  return result


def benchmark_input(config: ml_collections.ConfigDict, *,
                    num_batches: int = 5, warmup: int = 2) -> dict[str, Any]:
  """Images per second (and per CPU-second) of the config's train loader."""
  # pylint: disable=g-import-not-at-top
  from perceiver_jax.data import throughput
  from perceiver_jax.train import tasks
  # pylint: enable=g-import-not-at-top
  task = tasks.get_task(config.task)
  batch_size = config.train.batch_size
  result = throughput.measure_input_throughput(
      task.data.load, num_batches=num_batches, warmup_batches=warmup,
      split=task.train_split, is_training=True, batch_dims=(batch_size,),
      config=config.data, seed=config.seed)
  result.update(mode='input', task=config.task, batch_size=batch_size)
  result.update(_environment())
  return result


def log_spaced(low: int, high: int, num: int) -> list[int]:
  """`num` integers from `low` to `high`, evenly spaced in log, distinct."""
  if not 1 <= low <= high or num < 1:
    raise ValueError(f'Need 1 <= min_inputs <= max_inputs and num_points >= '
                     f'1, got {low}, {high}, {num}.')
  if num == 1:
    return [low]
  values = np.geomspace(low, high, num)
  return sorted({int(round(v)) for v in values})


def benchmark_scaling(config: ml_collections.ConfigDict,
                      num_inputs: Iterable[int], *, steps: int = 2,
                      warmup: int = 1, plot: Optional[str] = None,
                      compiler_options: Optional[Mapping[str, Any]] = None
                      ) -> list[dict[str, Any]]:
  """The train step at batch 1 for each M; optionally plots to `plot`."""
  results = []
  for m in num_inputs:
    point = with_num_inputs(config, m)
    with point.unlocked():
      point.train.batch_size = jax.local_device_count()  # 1 per device.
    result = benchmark_train(point, steps=steps, warmup=warmup,
                             count_flops=False,
                             compiler_options=compiler_options)
    result['mode'] = 'scaling'
    results.append(result)
    print(json.dumps(result), flush=True)
  if plot:
    write_scaling_plot(results, plot)
  return results


def write_scaling_plot(results: Sequence[Mapping[str, Any]],
                       path: str) -> None:
  """Step time and XLA memory plan against M (log-log), as a PNG."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  m = [r['num_inputs'] for r in results]
  fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(8, 3.2), dpi=80)
  ax_time.plot(m, [1e3 * r['step_seconds'] for r in results], 'o-')
  ax_time.set(xscale='log', yscale='log', xlabel='inputs M',
              ylabel='train step (ms)', title='time per step (batch 1)')
  memory = [r['xla_memory_bytes'] for r in results]
  if all(x is not None for x in memory):
    ax_mem.plot(m, [x / 2**20 for x in memory], 'o-', color='C1')
  ax_mem.set(xscale='log', yscale='log', xlabel='inputs M',
             ylabel='MiB', title='XLA memory plan of the step')
  # Linear-growth guide through the last point: y proportional to M.
  for ax, ys in ((ax_time, [1e3 * r['step_seconds'] for r in results]),
                 (ax_mem, [x / 2**20 if x else None for x in memory])):
    if ys[-1]:
      ax.plot(m, [ys[-1] * x / m[-1] for x in m], ':', color='grey',
              label='proportional to M')
      ax.legend(fontsize=7)
  first = results[0]
  fig.suptitle(f'{first["device_kind"]}, N={first["num_latents"]}, '
               f'D={first["num_latent_channels"]}', fontsize=9)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path)
  plt.close(fig)


def apply_overrides(config: ml_collections.ConfigDict, *,
                    batch_size: Optional[int] = None,
                    num_inputs: Optional[int] = None,
                    attention_impl: Optional[str] = None,
                    precision: Optional[str] = None
                    ) -> ml_collections.ConfigDict:
  """The command line's shortcuts applied to a copy of `config`."""
  if num_inputs is not None:
    config = with_num_inputs(config, num_inputs)
  else:
    config = config.copy_and_resolve_references()
  with config.unlocked():
    if batch_size is not None:
      config.train.batch_size = batch_size
    if attention_impl is not None:
      config.model.encoder.attention_impl = attention_impl
    if precision is not None:
      config.model.encoder.precision = precision
  return config


def main(argv: Sequence[str]) -> None:
  host_memory.keep_freed_memory()  # Process-wide, before JAX allocates.
  from absl import flags  # pylint: disable=g-import-not-at-top
  from perceiver_jax import cli  # pylint: disable=g-import-not-at-top
  cli.no_arguments(argv)
  f = flags.FLAGS
  if f.cpu_devices is not None:
    from perceiver_jax.train import parallel  # pylint: disable=g-import-not-at-top
    parallel.use_cpu_devices(f.cpu_devices)
  config = apply_overrides(
      f.config, batch_size=f.batch_size, num_inputs=f.num_inputs,
      attention_impl=f.attention_impl, precision=f.precision)
  options = FAST_COMPILE_OPTIONS if f.fast_compile else None
  if f.mode == 'train':
    results = [benchmark_train(config, steps=f.steps, warmup=f.warmup,
                               count_flops=f.flops, compiler_options=options)]
  elif f.mode == 'forward':
    results = [benchmark_forward(config, steps=f.steps, warmup=f.warmup,
                                 count_flops=f.flops,
                                 compiler_options=options)]
  elif f.mode == 'input':
    results = [benchmark_input(config, num_batches=f.steps,
                               warmup=f.warmup)]
  else:
    benchmark_scaling(
        config, log_spaced(f.min_inputs, f.max_inputs, f.num_points),
        steps=f.steps, warmup=f.warmup, plot=f.plot,
        compiler_options=options)
    return
  for result in results:
    print(json.dumps(result), flush=True)


def _define_flags() -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from perceiver_jax import cli  # pylint: disable=g-import-not-at-top
  cli.define_config_flag('configs/digits.py', 'The experiment config file.')
  flags.DEFINE_enum('mode', 'train', MODES, 'What to measure.')
  flags.DEFINE_integer('batch_size', None,
                       'Global batch size (default: config.train.batch_size).')
  flags.DEFINE_integer('num_inputs', None,
                       'Replace the input by a 1D grid of this many positions.')
  flags.DEFINE_enum('attention_impl', None, ('einsum', 'dot_product'),
                    'Overrides config.model.encoder.attention_impl.')
  flags.DEFINE_enum('precision', None, ('float32', 'bfloat16'),
                    'Overrides config.model.encoder.precision.')
  flags.DEFINE_integer('cpu_devices', None,
                       'CPU backend: split the CPU into this many JAX devices '
                       '(the train step then runs data-parallel over them).',
                       lower_bound=1)
  flags.DEFINE_integer('steps', 5, 'Timed steps (input mode: batches); 0 '
                       'compiles only (train, forward).')
  flags.DEFINE_integer('warmup', 2, 'Untimed steps first.')
  flags.DEFINE_bool('fast_compile', False,
                    'Compile with FAST_COMPILE_OPTIONS (CPU: faster compile).')
  flags.DEFINE_bool('flops', True, 'Count nominal FLOPs (and MFU).')
  flags.DEFINE_integer('min_inputs', 1024, 'Scaling: smallest M.')
  flags.DEFINE_integer('max_inputs', 200_000, 'Scaling: largest M.')
  flags.DEFINE_integer('num_points', 8, 'Scaling: number of M values.')
  flags.DEFINE_string('plot', 'scaling.png', 'Scaling: the PNG to write.')


if __name__ == '__main__':
  # Flags are defined here, not on import, so that other programs and tests
  # can import this module next to their own flags.
  from perceiver_jax import cli as _cli  # pylint: disable=g-import-not-at-top
  _define_flags()
  _cli.run(main)
