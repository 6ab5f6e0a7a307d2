"""Batches from datasets held in memory as numpy arrays (the data API).

For datasets small enough to hold in host memory (scikit-learn's digits,
the generated shapes, ModelNet40's point clouds: 9,843 x 2,048 x 3 float32
is 240 MB), plain numpy gives exactly reproducible order and augmentation
with no tf.data state. Training streams are endless and a pure function of
(seed, step), so starting at `start_step` equals skipping that many batches:

- `train_batches`: each host holds its own shard (`host_shard`) and walks
  its own epoch permutations of it. For datasets too large to copy to
  every host.
- `replicated_train_batches`: every host holds the whole split; one global
  stream of epoch permutations is cut into global batches, each augmented
  whole, and host `h` takes slice `h` of each. The global batches are then
  the same however many hosts share them (a run on 2 hosts of 2 devices
  sees exactly the batches of a run on 1 host of 4).
- `eval_batches`: finite, every example of a host's shard once in stored
  order, the last batch padded with zeros and masked out. Every host yields
  the same number of batches (`num_eval_batches`: that of the largest
  shard), so collective evaluation steps stay in lockstep across hosts.

Augmentation (`augment(batch, rng)` on flat `[b, ...]` arrays) draws from a
generator seeded by the seed and the step (and the host, for sharded
streams), never shared with the shuffle.
"""

import math
from typing import Callable, Iterator, Mapping, Optional, Sequence

import numpy as np

from perceiver_jax import checks

Arrays = Mapping[str, np.ndarray]
Augment = Callable[[dict[str, np.ndarray], np.random.Generator],
                   dict[str, np.ndarray]]

# Distinct stream tags, so that shuffling and augmentation never share
# random numbers.
_SHUFFLE_STREAM = 0
_AUGMENT_STREAM = 1


def host_shard(num_examples: int, process_index: int,
               process_count: int) -> slice:
  """The contiguous slice of `num_examples` that a process reads.

  Shards differ in size by at most one (the first `num_examples %
  process_count` processes get one more), as with `tfds.even_splits`.
  """
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} is not in '
                     f'[0, {process_count}).')
  base, extra = divmod(num_examples, process_count)
  start = process_index * base + min(process_index, extra)
  return slice(start, start + base + (process_index < extra))


def _check_start_step(start_step: int) -> None:
  if start_step < 0:
    raise ValueError(f'start_step must be >= 0, got {start_step}.')


def _num_examples(arrays: Arrays) -> int:
  sizes = {k: len(v) for k, v in arrays.items()}
  if not sizes or len(set(sizes.values())) != 1:
    raise ValueError(f'arrays must be a non-empty dict of equal-length '
                     f'arrays, got lengths {sizes}.')
  return next(iter(sizes.values()))


def _shape(batch: dict[str, np.ndarray], batch_dims: tuple[int, ...]
           ) -> dict[str, np.ndarray]:
  return {k: v.reshape(batch_dims + v.shape[1:]) for k, v in batch.items()}


class _EpochOrders:
  """An endless stream of example indices: one permutation per epoch.

  Position `p` of the stream is example `permutation(key, p // n)[p % n]`;
  the permutations are a pure function of `key` and the epoch.
  """

  def __init__(self, num_examples: int, key: Sequence[int]):
    self._num_examples = num_examples
    self._key = list(key)
    self._cache: dict[int, np.ndarray] = {}

  def _order(self, epoch: int) -> np.ndarray:
    if epoch not in self._cache:
      # Batches move forward, so older epochs are never asked for again.
      self._cache = {e: o for e, o in self._cache.items() if e >= epoch - 1}
      self._cache[epoch] = np.random.default_rng(
          self._key + [epoch]).permutation(self._num_examples)
    return self._cache[epoch]

  def take(self, first: int, count: int) -> np.ndarray:
    """The examples at stream positions `first .. first + count - 1`."""
    positions = np.arange(first, first + count)
    epochs, offsets = np.divmod(positions, self._num_examples)
    return np.array([self._order(int(e))[o] for e, o in zip(epochs, offsets)],
                    dtype=np.int64)


def _stream(arrays: Arrays, orders: _EpochOrders, *,
            batch_dims: tuple[int, ...], num_hosts: int, host: int,
            augment_key: Sequence[int], start_step: int,
            augment: Optional[Augment]) -> Iterator[dict[str, np.ndarray]]:
  """Training batches of `orders`: global batches, this host's slice.

  Step `s` reads the `num_hosts * b` stream positions from `s * num_hosts *
  b` (b: the host batch), augments them with a generator seeded by
  `augment_key + [s]` and keeps slice `host` of `num_hosts`.
  """
  host_batch = math.prod(batch_dims)
  keep = slice(host * host_batch, (host + 1) * host_batch)
  step = start_step
  while True:
    rows = orders.take(step * num_hosts * host_batch, num_hosts * host_batch)
    batch = {k: v[rows] for k, v in arrays.items()}
    if augment is not None:
      batch = augment(batch, np.random.default_rng(list(augment_key) + [step]))
    batch = {k: v[keep] for k, v in batch.items()}
    batch['mask'] = np.ones((host_batch,), np.float32)
    yield _shape(batch, batch_dims)
    step += 1


def train_batches(arrays: Arrays, *, batch_dims: Sequence[int], seed: int,
                  start_step: int = 0, process_index: int = 0,
                  augment: Optional[Augment] = None
                  ) -> Iterator[dict[str, np.ndarray]]:
  """Infinite shuffled (and augmented) batches of this host's shard.

  Args:
    arrays: name -> `[n, ...]` arrays of this host's shard.
    batch_dims: leading dims of every batch array; their product is the
      host batch size.
    seed: the data seed.
    start_step: the first batch's index (resumption).
    process_index: this host's index, mixed into the seeds so hosts differ.
    augment: optional `augment(batch, rng) -> batch` on flat `[b, ...]`
      arrays.

  Yields:
    The arrays as `[*batch_dims, ...]`, plus `'mask'` float32 ones.
  """
  batch_dims = checks.batch_dims(batch_dims)
  _check_start_step(start_step)
  orders = _EpochOrders(_num_examples(arrays),
                        (seed, process_index, _SHUFFLE_STREAM))
  return _stream(arrays, orders, batch_dims=batch_dims, num_hosts=1, host=0,
                 augment_key=(seed, process_index, _AUGMENT_STREAM),
                 start_step=start_step, augment=augment)


def replicated_train_batches(arrays: Arrays, *, batch_dims: Sequence[int],
                             seed: int, start_step: int = 0,
                             process_index: int = 0, process_count: int = 1,
                             augment: Optional[Augment] = None
                             ) -> Iterator[dict[str, np.ndarray]]:
  """This host's slice of global batches drawn from the whole split.

  Args:
    arrays: name -> `[n, ...]` arrays of the whole split (on every host).
    batch_dims: leading dims of every batch array; their product is the
      host batch size, the same on every host.
    seed: the data seed.
    start_step: the first batch's index (resumption).
    process_index: this host's index.
    process_count: the number of hosts.
    augment: optional `augment(batch, rng) -> batch` on flat `[b, ...]`
      arrays; it sees the whole global batch.

  Yields:
    The arrays as `[*batch_dims, ...]`, plus `'mask'` float32 ones.
  """
  batch_dims = checks.batch_dims(batch_dims)
  _check_start_step(start_step)
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} is not in '
                     f'[0, {process_count}).')
  orders = _EpochOrders(_num_examples(arrays), (seed, _SHUFFLE_STREAM))
  # Every host reads and augments the whole global batch (the data are
  # small), so that augmentation too is independent of the host count.
  return _stream(arrays, orders, batch_dims=batch_dims,
                 num_hosts=process_count, host=process_index,
                 augment_key=(seed, _AUGMENT_STREAM), start_step=start_step,
                 augment=augment)


def shard_batches(arrays: Arrays, *, total_examples: int, is_training: bool,
                  batch_dims: Sequence[int], seed: int, start_step: int,
                  process_index: int, process_count: int,
                  augment: Optional[Augment] = None
                  ) -> Iterator[dict[str, np.ndarray]]:
  """The data API's batches of this host's shard of a split.

  Args:
    arrays: name -> `[n, ...]` arrays of this host's shard.
    total_examples: the whole split's size (all hosts).
    is_training: `train_batches` if True, else `eval_batches` with as many
      batches on every host.
    batch_dims: leading dims of every batch array.
    seed: the data seed (training).
    start_step: the first batch's index (training).
    process_index: this host's index.
    process_count: the number of hosts.
    augment: optional training augmentation (see `train_batches`).
  """
  if is_training:
    return train_batches(arrays, batch_dims=batch_dims, seed=seed,
                         start_step=start_step, process_index=process_index,
                         augment=augment)
  batch_size = math.prod(checks.batch_dims(batch_dims))
  return eval_batches(arrays, batch_dims=batch_dims,
                      num_batches=num_eval_batches(total_examples, batch_size,
                                                   process_count))


def num_eval_batches(total_examples: int, batch_size: int,
                     process_count: int) -> int:
  """Batches each host yields: enough for the largest host shard."""
  return max(1, math.ceil(math.ceil(total_examples / process_count)
                          / batch_size))


def eval_batches(arrays: Arrays, *, batch_dims: Sequence[int],
                 num_batches: Optional[int] = None
                 ) -> Iterator[dict[str, np.ndarray]]:
  """Every example once, in order; padding (zeros) masked out.

  Args:
    arrays: name -> `[n, ...]` arrays of this host's shard.
    batch_dims: leading dims of every batch array.
    num_batches: batches to yield (at least enough for n; extra ones are
      all padding). Default: just enough for n.

  Yields:
    The arrays as `[*batch_dims, ...]` plus `'mask'` float32 (1 real, 0
    padding).
  """
  batch_dims = checks.batch_dims(batch_dims)
  num_examples = _num_examples(arrays)
  batch_size = math.prod(batch_dims)
  needed = math.ceil(num_examples / batch_size)
  if num_batches is None:
    num_batches = needed
  if num_batches < needed:
    raise ValueError(f'num_batches={num_batches} cannot hold {num_examples} '
                     f'examples in batches of {batch_size}.')
  for b in range(num_batches):
    start = min(b * batch_size, num_examples)
    stop = min(start + batch_size, num_examples)
    real = stop - start
    batch = {}
    for k, v in arrays.items():
      padded = np.zeros((batch_size,) + v.shape[1:], v.dtype)
      padded[:real] = v[start:stop]
      batch[k] = padded
    mask = np.zeros((batch_size,), np.float32)
    mask[:real] = 1.0
    batch['mask'] = mask
    yield _shape(batch, batch_dims)
