"""Batches from datasets held in memory as numpy arrays (the data API).

For datasets small enough to hold whole on each host (point clouds of
ModelNet40: 9,843 x 2,048 x 3 float32 is 240 MB; the generated shapes),
plain numpy gives exactly reproducible order and augmentation with no
tf.data state:

- `train_batches`: infinite; batch `s` is a pure function of (seed,
  process index, s), so starting at `start_step` equals skipping that many
  batches. Examples are drawn epoch by epoch, each epoch a fresh
  permutation of this host's shard; `augment` gets a generator seeded by
  (seed, process, step).
- `eval_batches`: finite, every example once in stored order, the last
  batch padded with zeros and masked out. Every host yields the same number
  of batches (that of the largest shard), so collective evaluation steps
  stay in lockstep across hosts.
- `host_shard`: the contiguous part of a split that a process reads.

TODO(unify): keep in step with the generic helpers of `pipeline.py`.
"""

import math
from typing import Callable, Iterator, Mapping, Optional, Sequence

import numpy as np

Arrays = Mapping[str, np.ndarray]
Augment = Callable[[dict[str, np.ndarray], np.random.Generator],
                   dict[str, np.ndarray]]

# Distinct stream tags, so that shuffling and augmentation never share
# random numbers.
_SHUFFLE_STREAM = 0
_AUGMENT_STREAM = 1


def check_batch_dims(batch_dims: Sequence[int]) -> tuple[int, ...]:
  """Validates `batch_dims` (non-empty positive ints); returns a tuple."""
  dims = tuple(batch_dims)
  if not dims or any(isinstance(d, bool) or not isinstance(d, (int, np.integer))
                     or d < 1 for d in dims):
    raise ValueError(f'batch_dims must be a non-empty sequence of positive '
                     f'integers, got {batch_dims!r}.')
  return tuple(int(d) for d in dims)


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


def _num_examples(arrays: Arrays) -> int:
  sizes = {k: len(v) for k, v in arrays.items()}
  if not sizes or len(set(sizes.values())) != 1:
    raise ValueError(f'arrays must be a non-empty dict of equal-length '
                     f'arrays, got lengths {sizes}.')
  return next(iter(sizes.values()))


def _shape(batch: dict[str, np.ndarray], batch_dims: tuple[int, ...]
           ) -> dict[str, np.ndarray]:
  return {k: v.reshape(batch_dims + v.shape[1:]) for k, v in batch.items()}


def _epoch_order(num_examples: int, seed: int, process_index: int,
                 epoch: int) -> np.ndarray:
  rng = np.random.default_rng([seed, process_index, _SHUFFLE_STREAM, epoch])
  return rng.permutation(num_examples)


def train_batches(arrays: Arrays, *, batch_dims: Sequence[int], seed: int,
                  start_step: int = 0, process_index: int = 0,
                  augment: Optional[Augment] = None
                  ) -> Iterator[dict[str, np.ndarray]]:
  """Infinite shuffled (and augmented) batches of this host's examples.

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
  batch_dims = check_batch_dims(batch_dims)
  num_examples = _num_examples(arrays)
  if start_step < 0:
    raise ValueError(f'start_step must be >= 0, got {start_step}.')
  batch_size = math.prod(batch_dims)
  step = start_step
  cached_epoch, order = -1, None
  while True:
    indices = []
    position = step * batch_size
    while len(indices) < batch_size:
      epoch, offset = divmod(position, num_examples)
      if epoch != cached_epoch:
        cached_epoch = epoch
        order = _epoch_order(num_examples, seed, process_index, epoch)
      take = min(batch_size - len(indices), num_examples - offset)
      indices.extend(order[offset:offset + take])
      position += take
    batch = {k: v[np.asarray(indices)] for k, v in arrays.items()}
    if augment is not None:
      rng = np.random.default_rng(
          [seed, process_index, _AUGMENT_STREAM, step])
      batch = augment(batch, rng)
    batch['mask'] = np.ones((batch_size,), np.float32)
    yield _shape(batch, batch_dims)
    step += 1


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
  batch_dims = check_batch_dims(batch_dims)
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
