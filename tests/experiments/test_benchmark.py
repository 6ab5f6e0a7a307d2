"""Tests of experiments.benchmark: it runs, and its results are well formed.

Correctness only: no timing is asserted. Programs compile with the harness's
`FAST_COMPILE_OPTIONS` (in-process) to keep this file quick on a loaded CPU.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import imagenet
from experiments import benchmark
from tests.helpers.command_utils import REPO


TRAIN_KEYS = {
    'mode', 'batch_size', 'num_inputs', 'params', 'compile_seconds',
    'step_seconds', 'step_seconds_min', 'step_seconds_median',
    'page_faults_per_step', 'steps_per_sec', 'examples_per_sec',
    'peak_memory_bytes',
    'peak_memory_kind', 'xla_memory_bytes', 'nominal_flops_per_example',
    'nominal_flops_per_sec', 'mfu', 'device_kind', 'num_devices',
    'load_average_1m', 'precision', 'attention_impl', 'scan_blocks', 'remat'}


def test_peak_flops_table_and_mfu():
  assert benchmark.peak_flops('NVIDIA H100 80GB HBM3', 'bfloat16') == 989e12
  assert benchmark.peak_flops('NVIDIA H200', 'float32') == 494e12
  assert benchmark.peak_flops('NVIDIA A100-SXM4-40GB', 'bfloat16') == 312e12
  assert benchmark.peak_flops('cpu', 'float32') is None
  # 3e9 FLOPs per example at 1e5 examples/s on 2 devices of 1e15 peak.
  assert benchmark.model_flops_utilisation(3e9, 1e5, 2, 1e15) == 0.15
  assert benchmark.model_flops_utilisation(3e9, 1e5, 2, None) is None


def test_log_spaced_and_num_inputs_override():
  assert benchmark.log_spaced(1000, 100_000, 3) == [1000, 10_000, 100_000]
  assert benchmark.log_spaced(8, 8, 1) == [8]
  with pytest.raises(ValueError, match='min_inputs'):
    benchmark.log_spaced(10, 5, 3)
  config = benchmark.with_num_inputs(imagenet.get_config(), 5000)
  assert config.model.input.index_dims == (5000,)
  assert benchmark._num_inputs_of(config) == 5000
  # 3 raw channels + 1 axis * (2 * 64 bands + 1).
  batch = benchmark.synthetic_batch(config, (2, 3))
  assert batch['inputs'].shape == (2, 3, 5000, 3)
  assert batch['label'].shape == (2, 3) and batch['label'].max() < 1000
  assert (batch['mask'] == 1).all()
  with pytest.raises(ValueError, match='num_inputs'):
    benchmark.with_num_inputs(config, 0)


def tiny_config():
  """runlocal ImageNet cut to one block of one layer: quick to compile."""
  config = imagenet.get_config('runlocal')
  config.model.encoder.update(num_blocks=1, num_cross_attends=1,
                              num_self_attends_per_block=1)
  return config


def test_train_and_forward_results():
  config = benchmark.apply_overrides(tiny_config(), batch_size=8,
                                     num_inputs=64)
  train = benchmark.benchmark_train(
      config, steps=1, warmup=1,
      compiler_options=benchmark.FAST_COMPILE_OPTIONS)
  assert TRAIN_KEYS <= set(train)
  assert train['mode'] == 'train' and train['batch_size'] == 8
  assert train['num_inputs'] == 64
  assert train['steps_per_sec'] > 0 and train['compile_seconds'] > 0
  assert isinstance(train['page_faults_per_step'], int)
  assert train['page_faults_per_step'] >= 0
  assert 0 < train['step_seconds_min'] <= train['step_seconds_median']
  assert train['step_seconds_min'] <= train['step_seconds'] * (1 + 1e-9)
  assert np.isclose(train['examples_per_sec'], 8 * train['steps_per_sec'])
  assert np.isfinite(train['loss'])
  assert train['peak_memory_bytes'] > 0 and train['xla_memory_bytes'] > 0
  assert train['mfu'] is None  # No peak for CPUs.
  assert train['nominal_flops_per_example'] > 0
  json.loads(json.dumps(train))  # Serialisable as one JSON line.

  forward = benchmark.benchmark_forward(
      config, steps=1, warmup=1, count_flops=False,
      compiler_options=benchmark.FAST_COMPILE_OPTIONS)
  assert forward['mode'] == 'forward' and forward['logits_finite']
  assert forward['params'] == train['params']
  assert 'mfu' not in forward  # FLOPs not counted when not asked.
  # Training counts 3x the forward's nominal FLOPs.
  _, forward_flops = benchmark.nominal_flops_per_example(config)
  assert train['nominal_flops_per_example'] == 3 * forward_flops


def test_scaling_writes_a_png(tmp_path):
  config = tiny_config()
  plot = tmp_path / 'scaling.png'
  results = benchmark.benchmark_scaling(
      config, [32, 128], steps=1, warmup=1, plot=str(plot),
      compiler_options=benchmark.FAST_COMPILE_OPTIONS)
  assert [r['num_inputs'] for r in results] == [32, 128]
  assert all(r['mode'] == 'scaling' and r['batch_size'] == r['num_devices']
             for r in results)
  # More inputs, more memory in XLA's plan.
  assert results[1]['xla_memory_bytes'] > results[0]['xla_memory_bytes']
  data = plot.read_bytes()
  assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 1000


def test_command_line_prints_json_lines():
  """The real command, runlocal digits with overrides; one CPU device."""
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.benchmark',
       '--config=configs/digits.py:runlocal', '--mode=forward',
       '--batch_size=4', '--steps=1', '--warmup=1', '--fast_compile',
       '--precision=bfloat16', '--config.model.encoder.scan_blocks=True'],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = [l for l in proc.stdout.splitlines() if l.startswith('{')]
  assert len(lines) == 1
  result = json.loads(lines[0])
  assert result['mode'] == 'forward' and result['batch_size'] == 4
  assert result['precision'] == 'bfloat16' and result['scan_blocks'] is True
  assert result['num_devices'] == 1 and result['logits_finite']
  assert result['compiler_options'] == benchmark.FAST_COMPILE_OPTIONS
  # A bad mode is refused by the flag parser.
  bad = subprocess.run(
      [sys.executable, '-m', 'experiments.benchmark', '--mode=fast'],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert bad.returncode != 0 and 'mode' in bad.stderr

