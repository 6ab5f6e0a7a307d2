r"""Benchmarks a config's train step, forward pass, input pipeline or M scaling.

  python -m experiments.benchmark --config=configs/imagenet.py --mode=train \
      --batch_size=1 --steps=3

Prints one JSON line per result (fields: docs/performance.md) of the mode:
the pmapped train step or the forward on a synthetic batch, the training
loader (`input`), or the batch-1 train step against M (`scaling`).
"""

import json
from typing import Optional, Sequence

from absl import flags
import ml_collections

from configs import common
from perceiver_jax import cli
from perceiver_jax import host_memory

MODES = ('train', 'forward', 'input', 'scaling')


def apply_overrides(config: ml_collections.ConfigDict, *,
                    batch_size: Optional[int] = None,
                    num_inputs: Optional[int] = None,
                    attention_impl: Optional[str] = None,
                    precision: Optional[str] = None
                    ) -> ml_collections.ConfigDict:
  """The command line's shortcuts applied to a copy of `config`."""
  config = (config.copy_and_resolve_references() if num_inputs is None
            else common.with_num_inputs(config, num_inputs))
  encoder = dict(attention_impl=attention_impl, precision=precision)
  with config.unlocked():
    if batch_size is not None:
      config.train.batch_size = batch_size
    config.model.encoder.update(
        {k: v for k, v in encoder.items() if v is not None})
  return config


def main(argv: Sequence[str]) -> None:
  host_memory.keep_freed_memory()  # Process-wide, before JAX allocates.
  cli.no_arguments(argv)
  f = flags.FLAGS
  if f.cpu_devices is not None:
    from perceiver_jax.train import parallel  # pylint: disable=g-import-not-at-top
    parallel.use_cpu_devices(f.cpu_devices)
  # pylint: disable=g-import-not-at-top
  from perceiver_jax.benchmarking import inputs
  from perceiver_jax.benchmarking import machine
  from perceiver_jax.benchmarking import steps
  # pylint: enable=g-import-not-at-top
  config = apply_overrides(
      f.config, batch_size=f.batch_size, num_inputs=f.num_inputs,
      attention_impl=f.attention_impl, precision=f.precision)
  options = machine.FAST_COMPILE_OPTIONS if f.fast_compile else None
  if f.mode == 'scaling':
    results = []
    for m in machine.log_spaced(f.min_inputs, f.max_inputs, f.num_points):
      results.append(steps.benchmark_scaling(
          common.with_num_inputs(config, m), steps=f.steps, warmup=f.warmup,
          compiler_options=options))
      print(json.dumps(results[-1]), flush=True)
    if f.plot:
      steps.write_scaling_plot(results, f.plot)
    return
  if f.mode == 'input':
    result = dict(inputs.benchmark_input(
        config, num_batches=f.steps, warmup=f.warmup, photos=f.photos),
                  mode='input', batch_size=config.train.batch_size,
                  **machine.environment())
  else:
    benchmark = (steps.benchmark_train if f.mode == 'train' else
                 steps.benchmark_forward)
    result = benchmark(
        config, steps=f.steps, warmup=f.warmup, count_flops=f.flops,
        rates=machine.matmul_rates() if f.matmul_probe else None,
        compiler_options=options)
  print(json.dumps(result), flush=True)


if __name__ == '__main__':
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
                    'Compile with reduced XLA:CPU optimisations (quicker '
                    'compile, slower steps).')
  flags.DEFINE_bool('flops', True, 'Count nominal FLOPs (and MFU).')
  flags.DEFINE_bool('matmul_probe', True, 'Measure the machine\'s dense '
                    'matmul rate (for machine_fraction).')
  flags.DEFINE_bool('photos', False, 'Input mode: ImageNet\'s training '
                    'augmentation (config.data) on scikit-learn\'s sample '
                    'photographs instead of the task\'s records.')
  flags.DEFINE_integer('min_inputs', 1024, 'Scaling: smallest M.')
  flags.DEFINE_integer('max_inputs', 200_000, 'Scaling: largest M.')
  flags.DEFINE_integer('num_points', 8, 'Scaling: number of M values.')
  flags.DEFINE_string('plot', 'scaling.png', 'Scaling: the PNG to write.')
  cli.run(main)
