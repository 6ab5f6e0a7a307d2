"""tf.data plumbing shared by the TFDS-based loaders.

A loader supplies its records and its per-example functions; this module
does the rest the data API (`load` / `num_examples`) asks for:
host sharding, endless seeded training streams that can start at any step,
evaluation passes that see every example once with padded final batches,
reshaping to `batch_dims` and conversion to numpy with prefetch.

Determinism. A training stream is a pure function of (seed, host,
start_step):

- Epoch `e` of this host's shard is read in an order fixed by
  `seed_key(seed, process_index, SHUFFLE, e)`: the loader's `make_epoch`
  may use it to shuffle files, and a shuffle buffer seeded from it mixes
  the examples.
- Examples are numbered by their position in this host's stream
  (`epoch * num_examples + offset`), and every random augmentation of
  example `i` uses the stateless seed `[seed_key(seed, host, AUGMENT), i]`.
- Batch `s` (for a batch-level step such as MixUp) uses
  `[seed_key(seed, host, BATCH), s]`.
- Starting at `start_step = s` jumps straight to the epoch that holds
  example `s * batch_size` and skips the records before it in that epoch
  (they are read but not decoded), so the batches equal those of a stream
  started at 0 after `s` batches.

One exception is documented rather than hidden: examples whose decoding
fails are dropped and counted (`BatchIterator.num_skipped`); a resumed
stream counts skipped records as consumed, so if any were dropped before
the resume point the two streams drift apart by that many examples.
"""

import math
from typing import Any, Callable, Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from perceiver_jax import checks

# Purposes of derived seeds (the third entry of `seed_key`).
SHUFFLE = 0
AUGMENT = 1
BATCH = 2

# Key of the per-example stream position carried through the pipeline (and
# removed before batches reach the caller).
_INDEX = '_index'
# Records decoded concurrently when decoding errors are skipped.
_DECODE_CYCLE_LENGTH = 32

Features = dict[str, tf.Tensor]
# `make_epoch(epoch_seed)`: one pass over this host's records, in an order
# that may depend on the scalar int64 `epoch_seed`.
MakeEpoch = Callable[[tf.Tensor], tf.data.Dataset]
# `fn(example, seed)`: a per-example step; `seed` is a stateless seed [2].
ExampleFn = Callable[[Any, tf.Tensor], Features]
# `fn(batch, seed)`: a step on a whole (flat, [batch_size, ...]) host batch.
BatchFn = Callable[[Features, tf.Tensor], Features]


def hide_gpus_from_tf() -> None:
  """Keeps TensorFlow off the GPUs, which belong to JAX.

  Harmless when TF sees no GPU (tensorflow-cpu) or has already started;
  call it before building any tf.data pipeline.
  """
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:
    # TF's devices are already initialised; nothing can change them now.
    pass


def process_info(process_index: Optional[int] = None,
                 process_count: Optional[int] = None) -> tuple[int, int]:
  """(index, count) of this host, from JAX unless both are given.

  Raises:
    ValueError: when the pair is inconsistent.
  """
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = (jax.process_index() if process_index is None
                     else process_index)
    process_count = (jax.process_count() if process_count is None
                     else process_count)
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index must be in [0, {process_count}), got '
                     f'{process_index} (process_count {process_count}).')
  return int(process_index), int(process_count)


def host_split(split: str, process_index: int, process_count: int) -> Any:
  """This host's part of a TFDS split: one of `process_count` even slices.

  The same slicing as `tfds.split_for_jax_process`, with the host given
  explicitly (so that tests can play several hosts in one process).
  """
  if process_count == 1:
    return split
  return tfds.even_splits(split, n=process_count,
                          drop_remainder=False)[process_index]


def shard_size(num_examples: int, process_index: int,
               process_count: int) -> int:
  """Examples in host `process_index`'s shard under `host_split`'s rule.

  `tfds.even_splits` gives the first `num_examples % process_count` hosts
  one example more than the others.
  """
  base, extra = divmod(num_examples, process_count)
  return base + (1 if process_index < extra else 0)


def seed_key(seed: int, *purpose: int) -> int:
  """A non-negative int63 derived from `seed` and a purpose tuple.

  Different purposes (host, `SHUFFLE` / `AUGMENT` / `BATCH`, epoch...) give
  statistically independent keys.
  """
  state = np.random.SeedSequence([int(seed) % 2**63, *map(int, purpose)])
  return int(state.generate_state(1, np.uint64)[0] >> np.uint64(1))


def batch_size_of(batch_dims: Sequence[int]) -> int:
  """The product of `batch_dims`, after checking them."""
  return math.prod(checks.batch_dims(batch_dims))


def dataset_options(threadpool_size: int = 0) -> tf.data.Options:
  """Deterministic options; `threadpool_size > 0` caps tf.data's threads."""
  if threadpool_size < 0:
    raise ValueError(
        f'threadpool_size must be >= 0 (0: default), got {threadpool_size}.')
  options = tf.data.Options()
  options.deterministic = True
  # Ops inside map functions run single-threaded: tf.data parallelises
  # across elements, which is cheaper than splitting each op.
  options.threading.max_intra_op_parallelism = 1
  if threadpool_size:
    options.threading.private_threadpool_size = threadpool_size
  return options


class BatchIterator:
  """Numpy batches from a tf.data pipeline, counting dropped examples.

  Attributes:
    num_skipped: examples dropped so far because their decoding failed
      (training streams only; evaluation never drops examples).
  """

  def __init__(self, dataset: tf.data.Dataset, *, first_index: int = 0):
    self._dataset = dataset
    self._iterator = dataset.as_numpy_iterator()
    self._next_index = first_index
    self.num_skipped = 0

  def __iter__(self) -> 'BatchIterator':
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    batch = next(self._iterator)
    indices = batch.pop(_INDEX, None)
    if indices is not None:
      # Positions are consecutive unless examples were dropped in between.
      indices = indices.reshape(-1)
      skipped = int(indices[-1]) + 1 - self._next_index - indices.size
      if skipped:
        self.num_skipped += skipped
        logging.warning('Skipped %d undecodable examples (%d in all).',
                        skipped, self.num_skipped)
      self._next_index = int(indices[-1]) + 1
    return batch


def _reshape_fn(batch_dims: Sequence[int]) -> Callable[[Features], Features]:
  dims = [int(d) for d in batch_dims]

  def reshape(batch: Features) -> Features:
    return {k: tf.reshape(v, dims + v.shape[1:].as_list())
            for k, v in batch.items()}

  return reshape


def _seed_pair(key: int, index: tf.Tensor) -> tf.Tensor:
  return tf.stack([tf.constant(key, tf.int64), tf.cast(index, tf.int64)])


def training_batches(
    make_epoch: MakeEpoch, *, num_examples: int, batch_dims: Sequence[int],
    decode_fn: ExampleFn, augment_fn: Optional[ExampleFn] = None,
    batch_fn: Optional[BatchFn] = None, seed: int = 0, start_step: int = 0,
    process_index: int = 0, shuffle_buffer: int = 10_000,
    skip_decode_errors: bool = True, threadpool_size: int = 0,
) -> BatchIterator:
  """An endless, shuffled, augmented stream of numpy batches.

  Args:
    make_epoch: one pass over this host's `num_examples` records; called
      once per epoch inside tf.data with that epoch's scalar int64 seed.
    num_examples: records per epoch on this host (must match `make_epoch`).
    batch_dims: leading dims of every output array; their product is the
      host batch size.
    decode_fn: `(record, seed) -> features`; errors it raises on a record
      (a corrupt JPEG) drop that record when `skip_decode_errors`.
    augment_fn: `(features, seed) -> features`, after decoding; its errors
      are never swallowed.
    batch_fn: `(batch, seed) -> batch` on the flat host batch (e.g. MixUp).
    seed: the run's data seed.
    start_step: the first batch to produce (batches before it are skipped
      without decoding them).
    process_index: this host's index, folded into every seed.
    shuffle_buffer: examples in the shuffle buffer (1: no buffer shuffle).
    skip_decode_errors: drop and count records whose decoding fails
      instead of raising.
    threadpool_size: tf.data threads (0: tf.data's default, all cores).

  Returns:
    An iterator of dicts of `[*batch_dims, ...]` arrays with a float32
    `'mask'` of ones.
  """
  batch_size = batch_size_of(batch_dims)
  if num_examples < 1:
    raise ValueError(f'num_examples must be positive, got {num_examples}.')
  if start_step < 0:
    raise ValueError(f'start_step must be >= 0, got {start_step}.')
  if shuffle_buffer < 1:
    raise ValueError(f'shuffle_buffer must be >= 1, got {shuffle_buffer}.')
  first_index = start_step * batch_size
  first_epoch, offset = divmod(first_index, num_examples)
  shuffle_key = seed_key(seed, process_index, SHUFFLE)
  augment_key = seed_key(seed, process_index, AUGMENT)
  batch_key = seed_key(seed, process_index, BATCH)

  def epoch_dataset(epoch: tf.Tensor) -> tf.data.Dataset:
    epoch_seed = tf.random.stateless_uniform(
        [2], seed=_seed_pair(shuffle_key, epoch), minval=None, maxval=None,
        dtype=tf.int64)
    records = make_epoch(epoch_seed[0])
    if shuffle_buffer > 1:
      records = records.shuffle(shuffle_buffer, seed=epoch_seed[1],
                                reshuffle_each_iteration=False)
    return records

  ds = tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch_dataset)
  ds = ds.enumerate(start=first_epoch * num_examples).skip(offset)

  def decode(index: tf.Tensor, record: Any) -> Features:
    seed_pair = _seed_pair(augment_key, index)
    decode_seed = tf.random.experimental.stateless_split(seed_pair, 2)[0]
    features = dict(decode_fn(record, decode_seed))
    features[_INDEX] = index
    return features

  def augment(features: Features) -> Features:
    features = dict(features)
    seed_pair = _seed_pair(augment_key, features[_INDEX])
    augment_seed = tf.random.experimental.stateless_split(seed_pair, 2)[1]
    index = features.pop(_INDEX)
    features = dict(augment_fn(features, augment_seed))
    features[_INDEX] = index
    return features

  if skip_decode_errors:
    # Each record is decoded in a one-element dataset whose errors are
    # ignored, so only decoding errors are swallowed: a failure to read the
    # records themselves still stops the stream (rather than spinning
    # forever on an endless stream of errors).
    def decode_or_drop(index: tf.Tensor, record: Any) -> tf.data.Dataset:
      one = tf.data.Dataset.from_tensors((index, record))
      return one.map(decode).ignore_errors()

    ds = ds.interleave(decode_or_drop, cycle_length=_DECODE_CYCLE_LENGTH,
                       block_length=1, num_parallel_calls=tf.data.AUTOTUNE,
                       deterministic=True)
  else:
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
  if augment_fn is not None:
    ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(batch_size, drop_remainder=True)

  def finish(step: tf.Tensor, batch: Features) -> Features:
    batch = dict(batch)
    if batch_fn is not None:
      index = batch.pop(_INDEX)
      batch = dict(batch_fn(batch, _seed_pair(batch_key, step)))
      batch[_INDEX] = index
    batch['mask'] = tf.ones([batch_size], tf.float32)
    return batch

  ds = ds.enumerate(start=start_step).map(
      finish, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.map(_reshape_fn(batch_dims)).prefetch(tf.data.AUTOTUNE)
  ds = ds.with_options(dataset_options(threadpool_size))
  return BatchIterator(ds, first_index=first_index)


def _pad_batch_fn(batch_size: int) -> Callable[[Features], Features]:
  """Pads a possibly short batch to `batch_size` with zeros, adds 'mask'."""

  def pad(batch: Features) -> Features:
    real = tf.shape(next(iter(batch.values())))[0]
    out = {}
    for key, value in batch.items():
      paddings = [[0, batch_size - real]] + [[0, 0]] * (value.shape.rank - 1)
      value = tf.pad(value, paddings)
      out[key] = tf.ensure_shape(value, [batch_size] + value.shape[1:])
    out['mask'] = tf.cast(tf.range(batch_size) < real, tf.float32)
    return out

  return pad


def evaluation_num_batches(num_examples: int, process_count: int,
                           batch_size: int) -> int:
  """Batches every host yields so that all hosts yield the same number.

  The largest host shard (`ceil(num_examples / process_count)` examples
  under `host_split`) sets it; smaller shards get whole padding batches.
  """
  return math.ceil(math.ceil(num_examples / process_count) / batch_size)


def evaluation_batches(
    records: tf.data.Dataset, *, batch_dims: Sequence[int],
    preprocess_fn: Callable[[Any], Features],
    num_batches: Optional[int] = None, threadpool_size: int = 0,
) -> BatchIterator:
  """One pass over `records` in order, in padded numpy batches.

  Args:
    records: this host's shard, finite.
    batch_dims: leading dims of every output array.
    preprocess_fn: `record -> features`, deterministic; every feature must
      have a static shape.
    num_batches: when given, whole batches of padding follow the data up to
      this many batches (so every host yields the same count; see
      `evaluation_num_batches`).
    threadpool_size: tf.data threads (0: default).

  Returns:
    An iterator over `ceil(n / batch_size)` batches (or `num_batches`),
    where `'mask'` is 1.0 for real examples and 0.0 for padding (zeros).

  Raises:
    ValueError: when the records need more than `num_batches` batches.
  """
  batch_size = batch_size_of(batch_dims)
  ds = records.map(preprocess_fn, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(batch_size).map(_pad_batch_fn(batch_size))
  if num_batches is not None:
    cardinality = int(ds.cardinality())
    if cardinality >= 0 and cardinality > num_batches:
      raise ValueError(
          f'The records fill {cardinality} batches of {batch_size}, more than '
          f'num_batches={num_batches}.')
    spec = ds.element_spec
    padding = tf.data.Dataset.from_tensors(
        {k: tf.zeros(s.shape, s.dtype) for k, s in spec.items()})
    # Padding batches go after the data; `take` stops at num_batches.
    ds = ds.concatenate(padding.repeat()).take(num_batches)
  ds = ds.map(_reshape_fn(batch_dims)).prefetch(tf.data.AUTOTUNE)
  ds = ds.with_options(dataset_options(threadpool_size))
  return BatchIterator(ds)
