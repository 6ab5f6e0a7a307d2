"""Batching for datasets that fit in host memory as numpy arrays.

Training streams are a pure function of (seed, step): epoch `e` visits the
examples in the order `permutation(seed, e)`, global batch `s` takes the
`G = hosts * host_batch` examples that follow those of batches `0..s-1`, and
host `h` keeps slice `h` of it. So a run resumed at step `s` reads the same
batches as one that never stopped, and hosts never read the same example of
a batch.
"""

from typing import Iterator, Mapping, Sequence

import numpy as np

Examples = Mapping[str, np.ndarray]


def _batch_size(batch_dims: Sequence[int]) -> int:
  batch_dims = tuple(batch_dims)
  if not batch_dims or any(int(d) < 1 for d in batch_dims):
    raise ValueError(f'batch_dims must be positive sizes, got {batch_dims}.')
  return int(np.prod(batch_dims))


def _num_examples(examples: Examples) -> int:
  sizes = {len(v) for v in examples.values()}
  if len(sizes) != 1:
    raise ValueError(f'Arrays of different lengths: '
                     f'{ {k: len(v) for k, v in examples.items()} }.')
  return sizes.pop()


def _epoch_order(num: int, seed: int, epoch: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(num)


def training_batches(examples: Examples, *, batch_dims: Sequence[int],
                     seed: int, start_step: int = 0, process_index: int = 0,
                     process_count: int = 1
                     ) -> Iterator[dict[str, np.ndarray]]:
  """An endless stream of shuffled batches `[*batch_dims, ...]`, mask 1."""
  host_batch = _batch_size(batch_dims)
  num = _num_examples(examples)
  global_batch = host_batch * process_count
  step = start_step
  orders = {}
  while True:
    first = step * global_batch + process_index * host_batch
    indices = np.arange(first, first + host_batch)
    epochs = indices // num
    for epoch in np.unique(epochs):
      if epoch not in orders:
        orders = {e: o for e, o in orders.items() if e >= epoch - 1}
        orders[epoch] = _epoch_order(num, seed, int(epoch))
    rows = np.array([orders[e][i % num] for e, i in zip(epochs, indices)])
    batch = {k: v[rows].reshape(*batch_dims, *v.shape[1:])
             for k, v in examples.items()}
    batch['mask'] = np.ones(tuple(batch_dims), np.float32)
    yield batch
    step += 1


def evaluation_batches(examples: Examples, *, batch_dims: Sequence[int],
                       process_index: int = 0, process_count: int = 1
                       ) -> Iterator[dict[str, np.ndarray]]:
  """One ordered pass over this host's shard; the last batch padded.

  Host `h` reads the `h`-th of `process_count` contiguous, near-equal parts
  of the split. Padding rows are zeros with mask 0.
  """
  host_batch = _batch_size(batch_dims)
  num = _num_examples(examples)
  bounds = np.linspace(0, num, process_count + 1).astype(int)
  start, stop = bounds[process_index], bounds[process_index + 1]
  for first in range(start, stop, host_batch):
    last = min(first + host_batch, stop)
    real = last - first
    batch = {}
    for key, values in examples.items():
      chunk = values[first:last]
      padded = np.zeros((host_batch, *values.shape[1:]), values.dtype)
      padded[:real] = chunk
      batch[key] = padded.reshape(*batch_dims, *values.shape[1:])
    mask = np.zeros(host_batch, np.float32)
    mask[:real] = 1.0
    batch['mask'] = mask.reshape(tuple(batch_dims))
    yield batch
