"""Tests of the generic tf.data helpers (perceiver_jax/data/pipeline.py)."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from perceiver_jax.data import augment
from perceiver_jax.data import pipeline
from tests.helpers import jpeg_fixtures

pipeline.hide_gpus_from_tf()


def _records(num):
  """Records {'id': i}; each epoch yields them in this order."""
  return tf.data.Dataset.range(num).map(lambda i: {'id': i})


def _decode(record, seed):
  # A random value from the per-example seed stands in for augmentation.
  return {'id': record['id'],
          'noise': tf.random.stateless_uniform([2], seed=seed)}


def _add_batch_noise(batch, seed):
  batch = dict(batch)
  batch['batch_noise'] = tf.random.stateless_uniform([], seed=seed) + (
      tf.zeros_like(batch['noise'][:, 0]))
  return batch


def _train(num=10, batch_dims=(3,), **kwargs):
  kwargs.setdefault('seed', 0)
  kwargs.setdefault('shuffle_buffer', 100)
  return pipeline.training_batches(
      lambda epoch_seed: _records(num), num_examples=num,
      batch_dims=batch_dims, decode_fn=_decode, batch_fn=_add_batch_noise,
      **kwargs)


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def test_training_shapes_dtypes_and_mask():
  batch = next(_train(batch_dims=(2, 3)))
  assert set(batch) == {'id', 'noise', 'batch_noise', 'mask'}
  assert batch['id'].shape == (2, 3) and batch['id'].dtype == np.int64
  assert batch['noise'].shape == (2, 3, 2)
  assert batch['noise'].dtype == np.float32
  np.testing.assert_array_equal(batch['mask'], np.ones((2, 3), np.float32))


def test_each_epoch_is_a_new_permutation():
  # 10 examples, batches of 5: batches 2k, 2k+1 make up epoch k.
  ids = np.stack([b['id'] for b in _take(_train(batch_dims=(5,)), 6)])
  epochs = ids.reshape(3, 10)
  for epoch in epochs:
    np.testing.assert_array_equal(np.sort(epoch), np.arange(10))
  assert not np.array_equal(epochs[0], epochs[1])
  assert not np.array_equal(epochs[1], epochs[2])


def test_start_step_equals_skipping_batches():
  # Batches of 3 over 10 examples cross epoch boundaries at odd places.
  full = _take(_train(), 9)
  for start in (1, 3, 4, 7):
    resumed = _take(_train(start_step=start), 9 - start)
    for expected, got in zip(full[start:], resumed):
      for key in expected:
        np.testing.assert_array_equal(expected[key], got[key], err_msg=key)


def test_seed_and_host_change_order_and_augmentation():
  base = _take(_train(), 3)
  again = _take(_train(), 3)
  for a, b in zip(base, again):
    np.testing.assert_array_equal(a['noise'], b['noise'])
  for other in (_take(_train(seed=1), 3),
                _take(_train(process_index=1), 3)):
    ids = np.concatenate([b['id'] for b in base])
    other_ids = np.concatenate([b['id'] for b in other])
    assert not np.array_equal(ids, other_ids)
    assert not np.allclose(base[0]['noise'], other[0]['noise'])
  # Each example's noise differs from every other's in a batch.
  noise = base[0]['noise'].reshape(-1, 2)
  assert len(np.unique(noise[:, 0])) == noise.shape[0]


def test_training_with_real_jpegs_skips_and_counts_corrupt_ones():
  jpegs = jpeg_fixtures.sample_jpegs(5)
  images = [jpegs[0], b'not a jpeg', jpegs[1], jpegs[2][:200], jpegs[3],
            jpegs[4]]
  records = tf.data.Dataset.from_tensor_slices(
      {'image': images, 'label': np.arange(6)})

  def decode(record, seed):
    return {'image': augment.train_crop(record['image'], seed,
                                        image_shape=(16, 16)),
            'label': record['label']}

  iterator = pipeline.training_batches(
      lambda s: records, num_examples=6, batch_dims=(4,), decode_fn=decode,
      shuffle_buffer=1)
  labels = np.concatenate([b['label'] for b in _take(iterator, 3)])
  # Three epochs of the four good records, in order (no shuffling).
  np.testing.assert_array_equal(labels, [0, 2, 4, 5] * 3)
  # By the last batch the stream passed records 0..17: 3 epochs x 2 bad.
  assert iterator.num_skipped == 6


def test_read_errors_are_not_swallowed(tmp_path):
  # A TFRecord file cut short: reading it fails with DataLossError, which
  # must stop the stream, not be skipped like a corrupt JPEG.
  path = str(tmp_path / 'cut.tfrecord')
  with tf.io.TFRecordWriter(path) as writer:
    for i in range(4):
      writer.write(b'record %d' % i)
  with open(path, 'rb') as f:
    data = f.read()
  with open(path, 'wb') as f:
    f.write(data[:-7])

  iterator = pipeline.training_batches(
      lambda epoch_seed: tf.data.TFRecordDataset([path]), num_examples=4,
      batch_dims=(4,), decode_fn=lambda r, s: {'x': r}, shuffle_buffer=1)
  with pytest.raises(tf.errors.DataLossError):
    next(iterator)


def _evaluate(num, batch_dims, **kwargs):
  records = tf.data.Dataset.range(num).map(
      lambda i: {'id': i + 1, 'value': tf.fill([2], tf.cast(i, tf.float32))})
  return list(pipeline.evaluation_batches(
      records, batch_dims=batch_dims, preprocess_fn=lambda r: r, **kwargs))


def test_evaluation_covers_every_example_once_and_pads():
  batches = _evaluate(10, (2, 2))
  assert len(batches) == 3
  for batch in batches:
    assert batch['id'].shape == (2, 2) and batch['value'].shape == (2, 2, 2)
  ids = np.concatenate([b['id'].reshape(-1) for b in batches])
  mask = np.concatenate([b['mask'].reshape(-1) for b in batches])
  np.testing.assert_array_equal(ids[mask == 1], np.arange(1, 11))
  np.testing.assert_array_equal(mask, [1] * 10 + [0] * 2)
  # Padding is zeros.
  np.testing.assert_array_equal(ids[mask == 0], [0, 0])
  last_values = batches[-1]['value'].reshape(4, 2)
  np.testing.assert_array_equal(last_values[2:], np.zeros((2, 2)))
  # Same order and values on a second pass.
  for a, b in zip(batches, _evaluate(10, (2, 2))):
    np.testing.assert_array_equal(a['value'], b['value'])


def test_evaluation_pads_to_num_batches():
  batches = _evaluate(5, (4,), num_batches=3)
  assert len(batches) == 3
  np.testing.assert_array_equal(batches[1]['mask'], [1, 0, 0, 0])
  np.testing.assert_array_equal(batches[2]['mask'], np.zeros(4))
  np.testing.assert_array_equal(batches[2]['id'], np.zeros(4))
  with pytest.raises(ValueError, match='num_batches=1'):
    _evaluate(5, (4,), num_batches=1)


def test_host_split_matches_tfds_even_splits():
  for total, count in ((10, 3), (7, 2), (8, 4)):
    # The same split TFDS's even_splits (and split_for_jax_process) make.
    for i in range(count):
      assert pipeline.host_split('train', i, count) == tfds.even_splits(
          'train', n=count, drop_remainder=False)[i]
  assert pipeline.host_split('validation', 0, 1) == 'validation'


def test_process_info_and_seed_key():
  assert pipeline.process_info(1, 4) == (1, 4)
  assert pipeline.process_info() == (0, 1)
  with pytest.raises(ValueError, match='process_index'):
    pipeline.process_info(4, 4)
  keys = {pipeline.seed_key(s, h, p) for s in range(3) for h in range(2)
          for p in range(3)}
  assert len(keys) == 18 and all(0 <= k < 2**63 for k in keys)
  assert pipeline.seed_key(5, 1) == pipeline.seed_key(5, 1)


@pytest.mark.parametrize('batch_dims', [(), (0,), (2, -1), (2.0,), (True,)])
def test_bad_batch_dims(batch_dims):
  with pytest.raises(ValueError, match='batch_dims'):
    _train(batch_dims=batch_dims)


def test_bad_arguments():
  with pytest.raises(ValueError, match='start_step'):
    _train(start_step=-1)
  with pytest.raises(ValueError, match='shuffle_buffer'):
    _train(shuffle_buffer=0)
  with pytest.raises(ValueError, match='threadpool_size'):
    pipeline.dataset_options(-2)

