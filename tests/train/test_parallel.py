"""Tests of perceiver_jax/train/parallel.py on 8 fake CPU devices."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from perceiver_jax.train import parallel


def test_eight_fake_devices():
  assert jax.local_device_count() == 8


def test_local_batch_dims_splits_over_devices():
  assert parallel.local_batch_dims(64) == (8, 8)


@pytest.mark.parametrize('bad', [12, 0, -8, 2.5, True])
def test_local_batch_dims_rejects_batches_that_do_not_divide(bad):
  with pytest.raises(ValueError, match=f'batch_size={bad!r}|{bad!r}'):
    parallel.local_batch_dims(bad)


def test_replicate_then_unreplicate_round_trips():
  tree = {'w': np.arange(6.0).reshape(2, 3), 'step': np.int32(5)}
  replicated = parallel.replicate(tree)
  assert replicated['w'].shape == (8, 2, 3)
  back = parallel.unreplicate(replicated)
  np.testing.assert_array_equal(back['w'], tree['w'])
  assert back['step'] == 5


def test_shard_rejects_a_batch_not_led_by_the_devices():
  with pytest.raises(ValueError, match='8 local devices'):
    parallel.shard({'x': np.zeros((4, 2))})


def test_device_rngs_differ_per_device_and_step_but_repeat():
  base = jax.random.PRNGKey(0)

  def keys(step):
    return jax.pmap(lambda s: parallel.device_rng(base, s),
                    axis_name=parallel.AXIS)(np.full(8, step))

  first, again, later = keys(3), keys(3), keys(4)
  np.testing.assert_array_equal(first, again)
  assert len({tuple(k) for k in np.asarray(first)}) == 8
  assert not np.array_equal(first, later)


def test_use_cpu_devices_splits_the_cpu_before_jax_starts():
  # A fresh process without conftest's 8 devices: 3 devices, then a
  # second call is refused since JAX has started.
  program = (
      'import jax\n'
      'from perceiver_jax.train import parallel\n'
      'parallel.use_cpu_devices(3)\n'
      'print(jax.local_device_count(), parallel.local_batch_dims(6))\n'
      'try:\n'
      '  parallel.use_cpu_devices(2)\n'
      'except ValueError as error:\n'
      '  print(error)\n')
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env['JAX_PLATFORMS'] = 'cpu'
  out = subprocess.run([sys.executable, '-c', program], env=env,
                       capture_output=True, text=True, check=True).stdout
  assert out.splitlines() == [
      '3 (3, 2)',
      'cpu_devices=2 must be set before JAX starts (it has 3 CPU devices '
      'already).']


def test_use_cpu_devices_rejects_a_bad_count():
  with pytest.raises(ValueError, match='cpu_devices must be a positive'):
    parallel.use_cpu_devices(0)
