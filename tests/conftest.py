"""Test set-up: 8 fake CPU devices, set before JAX starts; TF sees no GPU."""

import os
import tempfile

from perceiver_jax import host_memory

# As every entry point does (experiments/__init__.py), before any thread
# starts: XLA:CPU's buffers then reuse freed heap memory.
host_memory.keep_freed_memory()

# Multi-device (pmap) code is tested on 8 fake CPU devices. This must run
# before jax is imported anywhere, which conftest.py guarantees.
_flags = os.environ.get('XLA_FLAGS', '')
if '--xla_force_host_platform_device_count' not in _flags:
  os.environ['XLA_FLAGS'] = (
      _flags + ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# One persistent compilation cache for the whole session, subprocesses
# included: the same small programs are compiled by many tests.
os.environ.setdefault(
    'JAX_COMPILATION_CACHE_DIR',
    os.path.join(tempfile.gettempdir(), f'perceiver_jax_test_xla_{os.getuid()}'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')
