"""Entry points: `python -m experiments.<name>`.

Importing this package tunes glibc's malloc for XLA:CPU before any entry
point imports JAX, TensorFlow or PyTorch (`perceiver_jax.host_memory`).
"""

from perceiver_jax import host_memory

host_memory.keep_freed_memory()
