"""Test set-up: 8 fake CPU devices, set before JAX starts; TF sees no GPU."""

import os
import pathlib
import tempfile
from typing import Any

import pytest

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


@pytest.fixture(scope='session')
def digits_run(tmp_path_factory) -> tuple[pathlib.Path, Any]:
  """The digits `runlocal` run (6 steps, checkpoints at 3 and 6) on the 8
  fake devices, trained once per test process: (workdir, final state).

  Shared by every test that needs a finished run; read only: a test that
  writes to it works on a `shutil.copytree` of it.
  """
  # pylint: disable=g-import-not-at-top
  from configs import digits
  from perceiver_jax.train import loop
  # pylint: enable=g-import-not-at-top
  workdir = tmp_path_factory.mktemp('digits_run') / 'run'
  result = loop.train_and_evaluate(digits.get_config('runlocal'),
                                   str(workdir), return_state=True)
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['3', '6']
  return workdir, result['state']
