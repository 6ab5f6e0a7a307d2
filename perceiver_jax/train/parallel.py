"""Data parallelism: `jax.pmap` over this host's devices on axis `AXIS`;
batches arrive as `[local_devices, B / hosts / local_devices, ...]`.
"""

import hashlib
from typing import Any

import jax
from jax.experimental import multihost_utils
import numpy as np

from perceiver_jax import checks

AXIS = 'batch'

PyTree = Any


def use_cpu_devices(count: int) -> None:
  """Splits this host's CPU into `count` JAX devices, before JAX starts.

  Each device's program runs on its own thread, keeping more cores busy
  (docs/performance.md). ValueError for a bad `count` or a started JAX.
  """
  checks.positive_int(count, 'cpu_devices')
  try:
    jax.config.update('jax_num_cpu_devices', count)
  except RuntimeError as error:  # JAX's backends are up already.
    raise ValueError(f'cpu_devices={count} must be set before JAX starts '
                     f'(it has {len(jax.devices("cpu"))} CPU devices '
                     f'already).') from error


def local_batch_dims(global_batch_size: int) -> tuple[int, int]:
  """`(local_devices, per_device)` for a global batch, or a clear error."""
  num_devices = jax.device_count()
  checks.positive_int(global_batch_size, 'batch_size')
  if global_batch_size % num_devices:
    raise ValueError(
        f'batch_size={global_batch_size} does not divide across the '
        f'{num_devices} devices ({jax.process_count()} host(s) x '
        f'{jax.local_device_count()} local devices); use a multiple of '
        f'{num_devices}.')
  return jax.local_device_count(), global_batch_size // num_devices


def replicate(tree: PyTree) -> PyTree:
  """Copies a host pytree onto every local device: leaves `[devices, ...]`."""
  sharding = _leading_axis_sharding()
  num_devices = jax.local_device_count()
  return jax.tree.map(
      lambda x: jax.device_put(
          np.broadcast_to(np.asarray(x), (num_devices, *np.shape(x))),
          sharding), tree)


def _leading_axis_sharding() -> jax.sharding.NamedSharding:
  # pmap runs on jit + shard_map: arrays split over the local devices along
  # their leading axis are consumed without another transfer.
  mesh = jax.sharding.Mesh(np.array(jax.local_devices()), (AXIS,))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(AXIS))


def unreplicate(tree: PyTree) -> PyTree:
  """The first device's copy of a replicated pytree, as numpy arrays."""

  def first(x):
    if isinstance(x, jax.Array):
      # Copies one device's buffer; `x[0]` would dispatch a gather per leaf
      # (seconds for a model's state).
      return np.asarray(x.addressable_shards[0].data).reshape(x.shape[1:])
    return np.asarray(x)[0]

  return jax.tree.map(first, tree)


def shard(batch: PyTree) -> PyTree:
  """Puts a host batch whose leaves are `[local_devices, ...]` on devices."""
  sharding = _leading_axis_sharding()
  num_devices = jax.local_device_count()

  def put(x):
    x = np.asarray(x)
    if x.shape[:1] != (num_devices,):
      raise ValueError(
          f'Batch leaf of shape {x.shape} must lead with the '
          f'{num_devices} local devices.')
    return jax.device_put(x, sharding)

  return jax.tree.map(put, batch)


def device_rng(base_key: jax.Array, step: jax.Array) -> jax.Array:
  """This device's key for a step, from the step alone (resumable);
  call inside the pmapped function.
  """
  step_key = jax.random.fold_in(base_key, step)
  return jax.random.fold_in(step_key, jax.lax.axis_index(AXIS))


def gather_from_hosts(value: int) -> np.ndarray:
  """Every process's `value`, int64 `[process_count]`; a collective."""
  if jax.process_count() == 1:
    return np.array([value], np.int64)
  return np.asarray(multihost_utils.process_allgather(np.int64(value))
                    ).reshape(-1)


def assert_same_on_all_hosts(tree: PyTree, what: str) -> None:
  """RuntimeError unless every process holds the same host arrays
  `tree` (compared by SHA-256 digests, cheap enough for every checkpoint).
  """
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(tree):
    leaf = np.ascontiguousarray(leaf)
    digest.update(f'{leaf.dtype}{leaf.shape}'.encode())
    digest.update(leaf.tobytes())
  mine = np.frombuffer(digest.digest(), np.uint8)
  everyone = np.asarray(multihost_utils.process_allgather(mine))
  differ = [i for i, row in enumerate(everyone) if not np.array_equal(
      row, everyone[0])]
  if differ:
    raise RuntimeError(f'The {what} of process(es) {differ} differ from '
                       'process 0\'s: the processes have diverged.')
