"""Batches of datasets held in memory as numpy arrays (the data API).

Plain numpy gives exactly reproducible order and augmentation for small
datasets (digits, shapes, ModelNet40). Training streams are endless and a
pure function of (seed, step): `train_batches` walks this host's shard,
`replicated_train_batches` cuts every host's slice from the same global
batches (so the batches do not depend on the host count). `eval_batches`
pads with masked zeros, and every host yields as many batches.
`augment(batch, rng)` acts on flat `[b, ...]` arrays, its generator seeded
apart from the shuffle's.
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
  """A process's contiguous slice, sized as `tfds.even_splits` sizes them."""
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
  """Endless example indices: position p is `perm(key, p // n)[p % n]`."""

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
  """Global batch `s` of `orders`, augmented (seed `augment_key + [s]`),
  then this host's slice."""
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
  """Endless shuffled, augmented `[*batch_dims, ...]` batches of the shard
  `arrays` (`[n, ...]` each), plus a `'mask'` of ones."""
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
  """This host's slices of global batches of the whole split `arrays`, as
  `train_batches` makes them; `augment` sees the whole global batch."""
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
  """`train_batches`, or `eval_batches` with as many batches on every host,
  of this host's shard `arrays` of a split of `total_examples`."""
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
  """Every example once, in order, in `num_batches` (default just enough)
  batches padded with zeros; `'mask'` is 1 for real examples."""
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
