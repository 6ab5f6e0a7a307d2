"""Tests of experiments.benchmark and perceiver_jax.benchmarking's steps,
machine and inputs: results well formed, efficiency fields sane.

Correctness only: no timing is asserted. Programs compile with
`FAST_COMPILE_OPTIONS` to keep this file quick on a loaded CPU.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from configs import common
from configs import imagenet
from experiments import benchmark
from perceiver_jax.benchmarking import inputs
from perceiver_jax.benchmarking import machine
from perceiver_jax.benchmarking import steps
from perceiver_jax.benchmarking import summary
from tests.helpers.command_utils import REPO

FAST = machine.FAST_COMPILE_OPTIONS
TRAIN_KEYS = {
    'mode', 'batch_size', 'num_inputs', 'params', 'compile_seconds',
    'step_seconds', 'step_seconds_min', 'step_seconds_median',
    'page_faults_per_step', 'steps_per_sec', 'examples_per_sec',
    'peak_memory_bytes',
    'peak_memory_kind', 'xla_memory_bytes', 'nominal_flops_per_example',
    'nominal_flops_per_sec', 'mfu', 'device_kind', 'num_devices',
    'load_average_1m', 'precision', 'attention_impl', 'scan_blocks', 'remat',
    'executed_flops_per_example', 'executed_flops_per_sec',
    'matmul_flops_per_sec', 'machine_fraction'}


def test_peak_flops_table_and_mfu():
  assert machine.peak_flops('NVIDIA H100 80GB HBM3', 'bfloat16') == 989e12
  assert machine.peak_flops('NVIDIA H200', 'float32') == 494e12
  assert machine.peak_flops('NVIDIA A100-SXM4-40GB', 'bfloat16') == 312e12
  assert machine.peak_flops('cpu', 'float32') is None
  # 3e9 FLOPs per example at 1e5 examples/s on 2 devices of 1e15 peak.
  assert machine.model_flops_utilisation(3e9, 1e5, 2, 1e15) == 0.15
  assert machine.model_flops_utilisation(3e9, 1e5, 2, None) is None


def test_log_spaced_and_num_inputs_override():
  assert machine.log_spaced(1000, 100_000, 3) == [1000, 10_000, 100_000]
  assert machine.log_spaced(8, 8, 1) == [8]
  with pytest.raises(ValueError, match='min_inputs'):
    machine.log_spaced(10, 5, 3)
  config = common.with_num_inputs(imagenet.get_config(), 5000)
  assert config.model.input.index_dims == (5000,)
  assert steps.num_inputs_of(config) == 5000
  # 3 raw channels + 1 axis * (2 * 64 bands + 1).
  batch = steps.synthetic_batch(config, (2, 3))
  assert batch['inputs'].shape == (2, 3, 5000, 3)
  assert batch['label'].shape == (2, 3) and batch['label'].max() < 1000
  assert (batch['mask'] == 1).all()
  with pytest.raises(ValueError, match='num_inputs'):
    common.with_num_inputs(config, 0)


def test_matmul_probe_and_machine_fraction():
  rates = machine.matmul_rates((32, 64), calls=1)
  assert set(rates) == {'float32', 'bfloat16'}
  assert all(rate > 0 for rate in rates.values())
  # On a CPU its devices share the probed cores: the rate counts once.
  assert machine.machine_fraction(rates['float32'] / 4, rates,
                                  'float32') == 0.25
  assert machine.machine_fraction(None, rates, 'float32') is None


def tiny_config():
  """runlocal ImageNet cut to one block of one layer: quick to compile."""
  config = imagenet.get_config('runlocal')
  config.model.encoder.update(num_blocks=1, num_cross_attends=1,
                              num_self_attends_per_block=1)
  return config


def test_train_and_forward_results():
  # 8 examples a device and M = 1024: the model's FLOPs outweigh the
  # optimizer's, which every device runs in full, as in real runs.
  config = benchmark.apply_overrides(tiny_config(), batch_size=64,
                                     num_inputs=1024)
  rates = dict(float32=1e9, bfloat16=2e9)  # Stand-ins: no probe needed.
  train = steps.benchmark_train(config, steps=1, warmup=1, rates=rates,
                                compiler_options=FAST)
  assert TRAIN_KEYS <= set(train)
  assert train['mode'] == 'train' and train['batch_size'] == 64
  assert train['num_inputs'] == 1024
  assert train['steps_per_sec'] > 0 and train['compile_seconds'] > 0
  assert isinstance(train['page_faults_per_step'], int)
  assert train['page_faults_per_step'] >= 0
  assert 0 < train['step_seconds_min'] <= train['step_seconds_median']
  assert train['step_seconds_min'] <= train['step_seconds'] * (1 + 1e-9)
  assert np.isclose(train['examples_per_sec'], 64 * train['steps_per_sec'])
  assert np.isfinite(train['loss'])
  assert train['peak_memory_bytes'] > 0 and train['xla_memory_bytes'] > 0
  assert train['mfu'] is None  # No peak for CPUs.
  assert train['nominal_flops_per_example'] > 0
  # Executed: positive, at most the nominal count (K/V reuse, absorbed
  # projections), and its rate over the machine's in the run's precision.
  executed = train['executed_flops_per_example']
  assert 0 < executed <= train['nominal_flops_per_example']
  assert np.isclose(train['executed_flops_per_sec'],
                    executed * train['examples_per_sec'])
  assert np.isclose(train['machine_fraction'],
                    train['executed_flops_per_sec'] / 1e9)
  assert train['matmul_flops_per_sec'] == rates
  json.loads(json.dumps(train))  # Serialisable as one JSON line.

  forward = steps.benchmark_forward(config, steps=1, warmup=1,
                                    count_flops=False, compiler_options=FAST)
  assert forward['mode'] == 'forward' and forward['logits_finite']
  assert forward['params'] == train['params']
  assert 'mfu' not in forward  # FLOPs not counted when not asked.
  assert forward['machine_fraction'] is None  # No rates given.
  assert 0 < forward['executed_flops_per_example'] < executed
  # Training counts 3x the forward's nominal FLOPs.
  _, forward_flops = summary.nominal_flops_per_example(config)
  assert train['nominal_flops_per_example'] == 3 * forward_flops


def test_scaling_writes_a_png(tmp_path):
  config = tiny_config()
  plot = tmp_path / 'scaling.png'
  results = [steps.benchmark_scaling(common.with_num_inputs(config, m),
                                     steps=1, warmup=1, compiler_options=FAST)
             for m in (32, 128)]
  steps.write_scaling_plot(results, str(plot))
  assert [r['num_inputs'] for r in results] == [32, 128]
  assert all(r['mode'] == 'scaling' and r['batch_size'] == r['num_devices']
             for r in results)
  # More inputs, more memory in XLA's plan.
  assert results[1]['xla_memory_bytes'] > results[0]['xla_memory_bytes']
  data = plot.read_bytes()
  assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 1000


def test_measure_input_throughput_counts_images():
  def load(num):
    return iter([{'image': np.zeros((2, 3, 4, 4, 3), np.float32)}] * num)

  result = inputs.measure_input_throughput(load, num_batches=3,
                                           warmup_batches=1, num=4)
  assert result['images'] == 18
  assert result['images_per_second'] > 0
  assert result['images_per_cpu_second'] > 0
  with pytest.raises(StopIteration):
    inputs.measure_input_throughput(load, num_batches=4, warmup_batches=1,
                                    num=4)
  with pytest.raises(ValueError, match='num_batches'):
    inputs.measure_input_throughput(load, num_batches=0, num=4)


def test_photo_jpegs_are_real_jpegs():
  for jpeg in inputs.photo_jpegs(3):
    assert tf.image.is_jpeg(jpeg)
    np.testing.assert_array_equal(tf.image.extract_jpeg_shape(jpeg),
                                  [427, 640, 3])


def test_input_mode_on_photographs():
  """ImageNet's augmentation (`--mode=input --photos`) without a dataset."""
  config = imagenet.get_config()
  config.train.batch_size = 4
  config.data.update(image_shape=(32, 32), threadpool_size=1)
  result = inputs.benchmark_input(config, num_batches=1, warmup=0,
                                  photos=True)
  assert (result['task'], result['images'], result['image_size']) == (
      'photos', 4, 32)
  assert result['threads'] == 1 and result['mixing']
  assert result['images_per_cpu_second'] > 0
  assert result['mean_jpeg_bytes'] > 10_000


def test_command_line_prints_json_lines():
  """The real command: runlocal digits forward with overrides; one CPU
  device."""
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)

  def run(*args):
    proc = subprocess.run([sys.executable, '-m', 'experiments.benchmark',
                           *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    lines = [l for l in proc.stdout.splitlines() if l.startswith('{')]
    return proc, lines

  proc, lines = run(
      '--config=configs/digits.py:runlocal', '--mode=forward',
      '--batch_size=4', '--steps=1', '--warmup=1', '--fast_compile',
      '--precision=bfloat16', '--config.model.encoder.scan_blocks=True')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert len(lines) == 1
  result = json.loads(lines[0])
  assert result['mode'] == 'forward' and result['batch_size'] == 4
  assert result['precision'] == 'bfloat16' and result['scan_blocks'] is True
  assert result['num_devices'] == 1 and result['logits_finite']
  assert result['compiler_options'] == FAST
  assert result['matmul_flops_per_sec']['bfloat16'] > 0
  assert result['machine_fraction'] > 0
