"""tf.data plumbing shared by the TFDS-based loaders.

A loader supplies its records and per-example functions; this module adds
host sharding, endless seeded training streams, padded evaluation passes,
reshaping to `batch_dims` and numpy conversion with prefetch.

A training stream is a pure function of (seed, host, start_step): epoch
`e`'s order comes from `seed_key(seed, host, SHUFFLE)` and `e`, example `i`
of the host's stream is augmented with seed `[seed_key(.., AUGMENT), i]`,
batch `s` with `[seed_key(.., BATCH), s]`, and `start_step` skips the
records before it undecoded. Undecodable records are dropped and counted;
a resumed stream counts them as consumed.
"""

import contextlib
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
  """Keeps TensorFlow off the GPUs, which belong to JAX."""
  # Refused once TF's devices are initialised; nothing can change them then.
  with contextlib.suppress(RuntimeError):
    tf.config.set_visible_devices([], 'GPU')


def process_info(process_index: Optional[int] = None,
                 process_count: Optional[int] = None) -> tuple[int, int]:
  """(index, count) of this host, from JAX unless both are given."""
  import jax  # pylint: disable=g-import-not-at-top
  if process_index is None:
    process_index = jax.process_index()
  if process_count is None:
    process_count = jax.process_count()
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index must be in [0, {process_count}), got '
                     f'{process_index} (process_count {process_count}).')
  return int(process_index), int(process_count)


def host_split(split: str, process_index: int, process_count: int) -> Any:
  """This host's even slice of a TFDS split, as `tfds.split_for_jax_process`
  cuts it, but with the host given (tests play several hosts)."""
  if process_count == 1:
    return split
  return tfds.even_splits(split, n=process_count,
                          drop_remainder=False)[process_index]


def seed_key(seed: int, *purpose: int) -> int:
  """An int63 key from `seed` and a purpose; purposes give independent keys."""
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
  """Numpy batches from tf.data; `num_skipped` counts undecodable examples."""

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
    threadpool_size: int = 0,
) -> BatchIterator:
  """An endless, shuffled, augmented stream of `[*batch_dims, ...]` batches.

  `make_epoch(epoch_seed)` is one pass over this host's `num_examples`
  records. `decode_fn` errors drop the record, `augment_fn` errors never
  do. `batch_fn` acts on the flat host batch
  (MixUp). A `'mask'` of ones is added.
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

  def example_seeds(index: tf.Tensor) -> tf.Tensor:
    """[2, 2]: the decoding and augmentation seeds of example `index`."""
    return tf.random.experimental.stateless_split(
        _seed_pair(augment_key, index), 2)

  def decode(index: tf.Tensor, record: Any) -> Features:
    return {**decode_fn(record, example_seeds(index)[0]), _INDEX: index}

  def augment(features: Features) -> Features:
    features = dict(features)
    index = features.pop(_INDEX)
    return {**augment_fn(features, example_seeds(index)[1]), _INDEX: index}

  # Each record is decoded in a one-element dataset whose errors are ignored,
  # so only decoding errors are swallowed: a failure to read the records
  # themselves still stops the stream (rather than spinning forever on an
  # endless stream of errors).
  def decode_or_drop(index: tf.Tensor, record: Any) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensors((index, record)).map(
        decode).ignore_errors()

  ds = ds.interleave(decode_or_drop, cycle_length=_DECODE_CYCLE_LENGTH,
                     block_length=1, num_parallel_calls=tf.data.AUTOTUNE,
                     deterministic=True)
  if augment_fn is not None:
    ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(batch_size, drop_remainder=True)

  def finish(step: tf.Tensor, batch: Features) -> Features:
    batch = dict(batch)
    index = batch.pop(_INDEX)
    if batch_fn is not None:
      batch = batch_fn(batch, _seed_pair(batch_key, step))
    return {**batch, _INDEX: index, 'mask': tf.ones([batch_size], tf.float32)}

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


def evaluation_batches(
    records: tf.data.Dataset, *, batch_dims: Sequence[int],
    preprocess_fn: Callable[[Any], Features],
    num_batches: Optional[int] = None, skip_errors: bool = False,
    threadpool_size: int = 0,
) -> BatchIterator:
  """One ordered pass over finite `records` in zero-padded numpy batches.

  `'mask'` is 1 for real examples, 0 for padding; with `num_batches`, whole
  padding batches follow up to that count. `skip_errors` drops the records
  `preprocess_fn` fails on.
  """
  batch_size = batch_size_of(batch_dims)
  ds = records.map(preprocess_fn, num_parallel_calls=tf.data.AUTOTUNE)
  if skip_errors:
    ds = ds.ignore_errors()
  ds = ds.batch(batch_size).map(_pad_batch_fn(batch_size))
  if num_batches is not None:
    cardinality = int(ds.cardinality())  # Negative when unknown.
    if cardinality > num_batches:
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
