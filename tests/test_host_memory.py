"""host_memory.keep_freed_memory: large blocks come from the heap and are
reused without page faults; the opt-out leaves glibc's defaults."""

import json
import platform
import subprocess
import sys

import pytest

from tests.helpers import command_utils

# Runs in a fresh process (the settings are process-wide and must precede
# any thread): on a new thread, as XLA:CPU's workers allocate, mallocs a
# 256 MiB block, touches it, frees it, mallocs and touches one again, and
# reports where the second lies and how many page faults touching it cost.
_PROBE = r'''
import ctypes, json, resource, threading
SETUP
libc = ctypes.CDLL('libc.so.6')
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
size = 256 << 20
found = {}

def allocate():
  first = libc.malloc(size)
  libc.memset(first, 1, size)
  libc.free(first)
  second = libc.malloc(size)
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  libc.memset(second, 2, size)
  found.update(second=second, faults=resource.getrusage(
      resource.RUSAGE_SELF).ru_minflt - before)

worker = threading.Thread(target=allocate)
worker.start()
worker.join()
second, faults = found['second'], found['faults']
heap = [line.split()[0] for line in open('/proc/self/maps')
        if line.rstrip().endswith('[heap]')]
low, high = (int(x, 16) for x in heap[0].split('-'))
print(json.dumps(dict(applied=applied, faults=faults, pages=size // 4096,
                      in_heap=low <= second and second + size <= high)))
'''

pytestmark = pytest.mark.skipif(
    platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc',
    reason='mallopt tuning applies to glibc only')


_APPLY = ('from perceiver_jax import host_memory; '
          'applied = host_memory.keep_freed_memory()')


def _probe(setup: str = _APPLY, **env) -> dict:
  # Not inherited from the caller's environment: the default is on.
  env = {'PERCEIVER_JAX_KEEP_FREED_MEMORY': '1', **env}
  result = subprocess.run(
      [sys.executable, '-c', _PROBE.replace('SETUP', setup)],
      cwd=command_utils.REPO,
      env=dict(command_utils.one_device_env(), **env), capture_output=True,
      text=True, timeout=60, check=True)
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_freed_block_is_reused_from_the_heap_without_page_faults():
  report = _probe()
  assert report['applied'] is True
  assert report['in_heap'] is True
  # The pages were faulted in by the first block; reusing them costs
  # (almost) none. A fresh mapping would cost one fault per page.
  assert report['faults'] < report['pages'] // 100, report


def test_opt_out_keeps_glibc_defaults():
  report = _probe(**{'PERCEIVER_JAX_KEEP_FREED_MEMORY': '0'})
  assert report['applied'] is False
  # glibc's default serves a 256 MiB block with mmap, outside the heap.
  assert report['in_heap'] is False


def test_importing_the_entry_points_changes_nothing():
  report = _probe('import experiments, experiments.train; applied = None')
  assert report['in_heap'] is False
