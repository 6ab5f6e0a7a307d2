"""glibc malloc settings that keep XLA:CPU's large buffers in the heap.

XLA:CPU allocates the buffers of a compiled program (its outputs and one
temporary block for the intermediates) with `malloc` on every call, from
its worker threads. With glibc's defaults those requests are served by
fresh `mmap`s, either because they exceed the mmap threshold (128 KiB,
rising to at most 32 MiB) or because a worker thread's arena grows in
heaps of at most 64 MiB, so that no larger block can come from it; and
they go back to the kernel on `free`. So every call touches new pages, and
each page costs a page fault: about 150-185k faults (600-750 MB) per train
step of the configuration of `experiments/compare_peers` on a 2-core VM.
A softmax over a `[4, 512, 50176]` array ran 2.6 times faster without
them (docs/performance.md).

`keep_freed_memory()` makes freed memory stay with the process for reuse:
one arena for all threads (the main one, which grows with `brk` without a
size limit), no `mmap` for large requests, no trimming of the heap's top
(-1 disables it, `man mallopt`), and 64 MiB of headroom each time the heap
grows. The cost: the resident set stays at its high-water mark instead of
shrinking between calls.

Arenas are bound to a thread at its first allocation, so this must run
before JAX, TensorFlow or PyTorch start their threads: `experiments/`
calls it on import, ahead of every entry point. Set
`PERCEIVER_JAX_KEEP_FREED_MEMORY=0` to keep glibc's defaults (e.g. where
many input-pipeline threads would contend for the single arena; on 2 cores
the ImageNet input pipeline ran faster with it).
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
  """Applies the settings above to this process's glibc malloc.

  Returns:
    True if they were applied; False on a C library other than glibc
    (macOS, musl), when `PERCEIVER_JAX_KEEP_FREED_MEMORY=0`, or when glibc
    rejects a setting (with a warning; the settings before it stay
    applied, the rest keep glibc's defaults).
  """
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
