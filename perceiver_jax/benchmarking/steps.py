"""A config's train step and forward pass, timed.

Each `benchmark_*` returns one JSON-able dict. Times come after warm-up:
`compile_seconds` is lowering plus compiling; `step_seconds` the mean of
the timed steps (`_min`, `_median` of the same: on a shared machine the
minimum is the least disturbed). FLOPs, three ways: `nominal_*` the
paper's count (3x the forward for training, no K/V reuse credited) with
`mfu` against the data-sheet peak; `executed_*` what XLA's compiled program
counts; `machine_fraction` the executed rate over the machine's own matmul
rate (`machine.matmul_rates`) in the run's precision.
"""

import functools
import os
import time
from typing import Any, Mapping, NamedTuple, Optional, Sequence

import haiku as hk
import jax
import ml_collections
import numpy as np

from perceiver_jax.benchmarking import machine
from perceiver_jax.benchmarking import summary
from perceiver_jax.model import factory
from perceiver_jax.model import inputs as model_inputs
from perceiver_jax.train import loop
from perceiver_jax.train import optim
from perceiver_jax.train import parallel
from perceiver_jax.train import state as state_lib

Rates = Optional[Mapping[str, float]]


def synthetic_batch(config: ml_collections.ConfigDict,
                    batch_dims: Sequence[int], seed: int = 0
                    ) -> dict[str, np.ndarray]:
  """Uniform inputs shaped as `config`'s adapter reads them, labels, mask."""
  rng = np.random.default_rng(seed)
  shapes = factory.example_batch(config.model.input, 1)
  batch = {key: rng.uniform(size=(*batch_dims, *s.shape[1:])).astype(
      np.float32) for key, s in shapes.items()}
  batch['label'] = rng.integers(
      0, config.data.num_classes, size=tuple(batch_dims)).astype(np.int32)
  batch['mask'] = np.ones(tuple(batch_dims), np.float32)
  return batch


def num_inputs_of(config: ml_collections.ConfigDict) -> int:
  """M: positions of the byte array (the adapter's output shape)."""
  input_config = config.model.copy_and_resolve_references().input
  adapter = hk.transform(lambda b: model_inputs.make(input_config)(
      b, is_training=False)[0])
  batch = factory.example_batch(input_config, 1)
  params = jax.eval_shape(adapter.init, jax.random.PRNGKey(0), batch)
  return int(jax.eval_shape(adapter.apply, params, None, batch).shape[1])


def _compile(jitted: Any, args: Sequence[Any],
             options: Optional[Mapping[str, Any]]) -> tuple[Any, dict]:
  """(compiled program, its lower/compile seconds, options, memory plan)."""
  start = time.perf_counter()
  lowered = jitted.lower(*args)
  lower_seconds = time.perf_counter() - start
  compiled = lowered.compile(compiler_options=dict(options or {}))
  return compiled, dict(
      lower_seconds=lower_seconds,
      compile_seconds=time.perf_counter() - start,
      compiler_options=dict(options or {}),
      xla_memory_bytes=machine.xla_memory_bytes(compiled))


class PreparedTrainStep(NamedTuple):
  """A compiled pmapped train step, `(state, batch) -> (state, metrics)`,
  its first `args` (replicated state, sharded synthetic batch) and
  `fields` (batch_size, num_inputs, params, compile figures)."""
  compiled: Any
  args: tuple[Any, Any]
  fields: dict[str, Any]


def prepare_train_step(config: ml_collections.ConfigDict, *,
                       compiler_options: Optional[Mapping[str, Any]] = None
                       ) -> PreparedTrainStep:
  """Builds, lowers and compiles `config`'s real training step."""
  batch_size = config.train.batch_size
  batch_dims = parallel.local_batch_dims(batch_size)
  forward = factory.transform_classifier(config.model,
                                         config.data.num_classes)
  schedule = optim.learning_rate_schedule(
      config.optimizer, total_steps=1000, steps_per_epoch=100.0)
  optimizer = optim.make_optimizer(config.optimizer, schedule)
  batch = synthetic_batch(config, batch_dims)
  state = state_lib.initial_state(forward, optimizer,
                             {k: v[0] for k, v in batch.items()}, config.seed)
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  args = (parallel.replicate(state), parallel.shard(batch))
  train_step = loop.make_train_step(forward.apply, optimizer, schedule,
                                    config.loss)
  compiled, fields = _compile(train_step, args, compiler_options)
  return PreparedTrainStep(compiled, args, dict(
      batch_size=batch_size, num_inputs=num_inputs_of(config),
      params=int(num_params), **fields))


def executed_flops_per_example(compiled: Any, batch_size: int,
                               num_devices: int) -> float:
  """FLOPs XLA executes per example (its count is per device; a scanned
  body counts once)."""
  return machine.xla_cost(compiled)[0] * num_devices / batch_size


def _time(compiled: Any, args: Sequence[Any], fields: Mapping[str, Any], *,
          steps: int, warmup: int, carry_first: bool,
          num_devices: int) -> tuple[dict[str, Any], Any]:
  """(`fields` with the step times and executed FLOPs, the last outputs)."""
  times, outputs = machine.time_steps(compiled, args, steps=steps,
                                      warmup=warmup, carry_first=carry_first)
  batch_size = fields['batch_size']
  # Compiled only (no times): every timing field None.
  times = times or dict.fromkeys(('mean', 'min', 'median', 'page_faults'))
  mean = times['mean']
  return dict(fields, steps=steps, warmup=warmup,
              executed_flops_per_example=executed_flops_per_example(
                  compiled, batch_size, num_devices),
              step_seconds=mean, step_seconds_min=times['min'],
              step_seconds_median=times['median'],
              page_faults_per_step=times['page_faults'],
              steps_per_sec=mean and 1.0 / mean,
              examples_per_sec=mean and batch_size / mean), outputs


def benchmark_train(config: ml_collections.ConfigDict, *, steps: int = 5,
                    warmup: int = 2, count_flops: bool = True,
                    rates: Rates = None,
                    compiler_options: Optional[Mapping[str, Any]] = None
                    ) -> dict[str, Any]:
  """Times `config`'s training step on a synthetic batch (global
  `config.train.batch_size`, split over the local devices); `rates`: the
  machine's matmul rates, for `machine_fraction`."""
  prepared = prepare_train_step(config, compiler_options=compiler_options)
  result, outputs = _time(
      prepared.compiled, prepared.args, dict(mode='train', **prepared.fields),
      steps=steps, warmup=warmup, carry_first=True,
      num_devices=jax.local_device_count())
  result['loss'] = None if outputs is None else float(
      np.asarray(outputs[1]['loss'])[0])
  return _finish(result, config, count_flops, rates, training=True)


def benchmark_forward(config: ml_collections.ConfigDict, *, steps: int = 5,
                      warmup: int = 2, count_flops: bool = True,
                      rates: Rates = None,
                      compiler_options: Optional[Mapping[str, Any]] = None
                      ) -> dict[str, Any]:
  """Times the jitted inference forward pass on one device."""
  batch_size = config.train.batch_size
  forward = factory.transform_classifier(config.model,
                                         config.data.num_classes)
  batch = synthetic_batch(config, (batch_size,))
  del batch['label'], batch['mask']
  params = jax.jit(functools.partial(forward.init, is_training=False))(
      jax.random.PRNGKey(config.seed), batch)
  apply = jax.jit(functools.partial(forward.apply, is_training=False))
  args = (params, None, batch)
  compiled, fields = _compile(apply, args, compiler_options)
  result, logits = _time(compiled, args, dict(
      mode='forward', batch_size=batch_size, num_inputs=num_inputs_of(config),
      params=int(sum(x.size for x in jax.tree.leaves(params))), **fields),
                         steps=steps, warmup=warmup, carry_first=False,
                         num_devices=1)
  result['logits_finite'] = None if logits is None else bool(
      np.isfinite(np.asarray(logits)).all())
  return _finish(result, config, count_flops, rates, training=False,
                 num_devices=1)


def _finish(result: dict[str, Any], config: ml_collections.ConfigDict,
            count_flops: bool, rates: Rates, *, training: bool,
            num_devices: Optional[int] = None) -> dict[str, Any]:
  """Adds memory, the FLOP rates and efficiencies, the model's modes and
  the environment."""
  env = machine.environment()
  devices = num_devices or env['num_devices']
  memory, memory_kind = machine.peak_memory_bytes()
  encoder = config.model.encoder
  precision = encoder.get('precision', 'float32')
  rate = result['examples_per_sec']
  executed = None if rate is None else (
      result['executed_flops_per_example'] * rate)
  result.update(
      peak_memory_bytes=memory, peak_memory_kind=memory_kind,
      executed_flops_per_sec=executed,
      matmul_flops_per_sec=dict(rates) if rates else None,
      machine_fraction=machine.machine_fraction(executed, rates, precision),
      grid_parts=config.model.get('grid_parts'),
      **{k: encoder.get(k) for k in (
          'precision', 'attention_impl', 'scan_blocks', 'remat',
          'reuse_shared_keys_values', 'absorb_cross_attend_projections',
          'num_blocks', 'num_self_attends_per_block', 'num_latents',
          'num_latent_channels')})
  if count_flops:
    _, forward_flops = summary.nominal_flops_per_example(config)
    flops = (3 if training else 1) * forward_flops
    peak = machine.peak_flops(env['device_kind'], precision)
    result.update(
        nominal_flops_per_example=flops,
        nominal_flops_per_sec=None if rate is None else flops * rate,
        peak_flops_per_device=peak,
        mfu=None if rate is None else machine.model_flops_utilisation(
            flops, rate, devices, peak))
  result.update(env)
  return result


def benchmark_scaling(config: ml_collections.ConfigDict, *, steps: int = 2,
                      warmup: int = 1,
                      compiler_options: Optional[Mapping[str, Any]] = None
                      ) -> dict[str, Any]:
  """The train step at one example per device, for a point of M scaling."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.train.batch_size = jax.local_device_count()
  result = benchmark_train(config, steps=steps, warmup=warmup,
                           count_flops=False,
                           compiler_options=compiler_options)
  return dict(result, mode='scaling')


def write_scaling_plot(results: Sequence[Mapping[str, Any]],
                       path: str) -> None:
  """Step time and XLA memory plan against M (log-log), as a PNG."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  m = [r['num_inputs'] for r in results]
  times = [1e3 * r['step_seconds'] for r in results]
  memory = [r['xla_memory_bytes'] for r in results]
  memory = [x / 2**20 for x in memory] if all(memory) else None
  fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), dpi=80)
  for ax, ys, label, title in (
      (axes[0], times, 'train step (ms)', 'time per step (batch 1)'),
      (axes[1], memory, 'MiB', 'XLA memory plan of the step')):
    if ys:
      ax.plot(m, ys, 'o-')
      # Linear-growth guide through the last point.
      ax.plot(m, [ys[-1] * x / m[-1] for x in m], ':', color='grey',
              label='proportional to M')
      ax.legend(fontsize=7)
    ax.set(xscale='log', yscale='log', xlabel='inputs M', ylabel=label,
           title=title)
  first = results[0]
  fig.suptitle(f'{first["device_kind"]}, N={first["num_latents"]}, '
               f'D={first["num_latent_channels"]}', fontsize=9)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path)
  plt.close(fig)
