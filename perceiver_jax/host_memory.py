"""glibc malloc settings that keep XLA:CPU's large buffers in the heap.

XLA:CPU mallocs its buffers on every call, from worker threads; glibc's
defaults serve large ones with fresh `mmap`s and unmap them on `free`, so
each call page-faults anew (measurements in docs/performance.md).
`keep_freed_memory()` keeps freed memory for reuse: one arena, no `mmap`,
no trimming, 64 MiB of headroom; the resident set stays at its high-water
mark. Arenas bind to a thread at its first allocation, so this runs before
JAX, TensorFlow or PyTorch start threads (first in each command's
`main`). `PERCEIVER_JAX_KEEP_FREED_MEMORY=0` keeps glibc's defaults.
"""

import ctypes
import os
import platform
import warnings

OPT_OUT_VARIABLE = 'PERCEIVER_JAX_KEEP_FREED_MEMORY'

# `mallopt` parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

_SETTINGS = (
    (_M_ARENA_MAX, 1),  # Every thread allocates from the main arena.
    (_M_MMAP_MAX, 0),  # Large requests come from the heap, not mmap.
    (_M_TRIM_THRESHOLD, -1),  # Never give the heap's top back.
    (_M_TOP_PAD, 64 << 20),  # Grow the heap 64 MiB more than asked.
)


def keep_freed_memory() -> bool:
  """Applies `_SETTINGS`; False if opted out, not glibc, or one is refused."""
  if os.environ.get(OPT_OUT_VARIABLE, '1') == '0':
    return False
  if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
    return False
  libc = ctypes.CDLL('libc.so.6')  # glibc's soname on every Linux ABI.
  for parameter, value in _SETTINGS:
    if libc.mallopt(ctypes.c_int(parameter), ctypes.c_int(value)) != 1:
      warnings.warn(f'glibc mallopt({parameter}, {value}) failed; keeping '
                    f'the remaining malloc defaults.', RuntimeWarning)
      return False
  return True
