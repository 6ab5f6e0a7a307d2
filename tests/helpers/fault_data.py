"""A digits task that misbehaves on request, for tests of fault handling.

`register()` adds the task 'digits_faults' to the task registry. Its data
are scikit-learn's digits (see perceiver_jax/data/digits.py) with faults
chosen by fields of `config.data`:

- `nan_at_step`: the training batch of that step has NaN pixels.
- `signal_at_step`: the process sends itself SIGINT when that step's
  training batch is read.
- `jpeg_with_corrupt`: training images are read as JPEG files through the
  tf.data pipeline (perceiver_jax/data/pipeline.py), in a fixed order, from
  `NUM_JPEGS` records of which those at `CORRUPT_JPEGS` are not decodable.

Evaluation batches are the digits' own.
"""

import io
import os
import signal
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from PIL import Image

from perceiver_jax.data import digits
from perceiver_jax.train import tasks

NAME = 'digits_faults'
NUM_JPEGS = 40
CORRUPT_JPEGS = (5, 20)


def register() -> None:
  tasks.TASKS[NAME] = tasks.Task(NAME, __name__)


def config(**data_fields: Any):
  """The digits runlocal config on this task, with fault fields."""
  from configs import digits as digits_config  # pylint: disable=g-import-not-at-top
  result = digits_config.get_config('runlocal')
  result.task = NAME
  result.data.nan_at_step = data_fields.pop('nan_at_step', -1)
  result.data.signal_at_step = data_fields.pop('signal_at_step', -1)
  result.data.jpeg_with_corrupt = data_fields.pop('jpeg_with_corrupt', False)
  if data_fields:
    raise ValueError(f'Unknown fault fields {sorted(data_fields)}.')
  return result


def num_examples(split: str, config: Mapping[str, Any]) -> int:
  return digits.num_examples(split, config)


def _jpeg_records(config: Mapping[str, Any]) -> tuple[list[bytes],
                                                      np.ndarray]:
  images, labels = digits._arrays('train', config)  # pylint: disable=protected-access
  jpegs = []
  for i in range(NUM_JPEGS):
    buffer = io.BytesIO()
    Image.fromarray((images[i, ..., 0] * 255).astype(np.uint8)).save(
        buffer, format='JPEG', quality=95)
    data = buffer.getvalue()
    if i == CORRUPT_JPEGS[0]:
      data = b'\x00' * len(data)  # Not a JPEG at all.
    elif i in CORRUPT_JPEGS:
      data = data[:4] + b'\xff' * (len(data) - 4)  # A broken JPEG body.
    jpegs.append(data)
  return jpegs, labels[:NUM_JPEGS]


def _jpeg_batches(config, batch_dims, seed, start_step):
  # pylint: disable=g-import-not-at-top
  import tensorflow as tf
  from perceiver_jax.data import pipeline
  # pylint: enable=g-import-not-at-top
  pipeline.hide_gpus_from_tf()
  jpegs, labels = _jpeg_records(config)

  def make_epoch(epoch_seed):
    del epoch_seed  # A fixed order, so that the skipped counts are known.
    return tf.data.Dataset.from_tensor_slices({'jpeg': jpegs,
                                               'label': labels})

  def decode(record, seed):
    del seed
    image = tf.io.decode_jpeg(record['jpeg'], channels=1)
    image = tf.cast(tf.reshape(image, [8, 8, 1]), tf.float32) / 255.0
    return {'image': image, 'label': record['label']}

  return pipeline.training_batches(
      make_epoch, num_examples=NUM_JPEGS, batch_dims=batch_dims,
      decode_fn=decode, seed=seed, start_step=start_step, shuffle_buffer=1)


class _Faulty:
  """Digits batches with NaN pixels or a signal at chosen steps."""

  def __init__(self, batches, config, start_step):
    self._batches = batches
    self._config = config
    self._step = start_step

  def __iter__(self):
    return self

  @property
  def num_skipped(self) -> int:
    return getattr(self._batches, 'num_skipped', 0)

  def __next__(self):
    batch = dict(next(self._batches))
    if self._step == self._config['nan_at_step']:
      batch['image'] = np.full_like(batch['image'], np.nan)
    if self._step == self._config['signal_at_step']:
      os.kill(os.getpid(), signal.SIGINT)
    self._step += 1
    return batch


def load(split: str, *, is_training: bool, batch_dims: Sequence[int],
         config: Mapping[str, Any], seed: int = 0,
         start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
  if not is_training:
    return digits.load(split, is_training=False, batch_dims=batch_dims,
                       config=config)
  if config['jpeg_with_corrupt']:
    batches = _jpeg_batches(config, batch_dims, seed, start_step)
  else:
    batches = digits.load(split, is_training=True, batch_dims=batch_dims,
                          config=config, seed=seed, start_step=start_step)
  return _Faulty(batches, config, start_step)
