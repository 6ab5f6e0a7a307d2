"""Test set-up: 8 fake CPU devices, set before JAX starts; TF sees no GPU."""

import os

# Multi-device (pmap) code is tested on 8 fake CPU devices. This must run
# before jax is imported anywhere, which conftest.py guarantees.
_flags = os.environ.get('XLA_FLAGS', '')
if '--xla_force_host_platform_device_count' not in _flags:
  os.environ['XLA_FLAGS'] = (
      _flags + ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')
