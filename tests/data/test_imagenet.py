"""Tests of the ImageNet loader (perceiver_jax/data/imagenet.py).

A tiny "manual download" of real JPEGs (crops of scikit-learn's photos) in
the official archive layout is prepared by the real TFDS imagenet2012
builder, then read back through `imagenet.load`; TFDS mock data covers the
`mock` path.
"""

import os

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import imagenet as imagenet_config
from perceiver_jax.data import imagenet
from tests.helpers import jpeg_fixtures

NUM_TRAIN = 9  # 3 classes x 3 images.
NUM_VAL = 7


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  # TFDS's dataset preparation imports this package, which TFDS does not
  # declare as a dependency.
  pytest.importorskip('importlib_resources')
  root = tmp_path_factory.mktemp('imagenet')
  manual = os.path.join(root, 'manual')
  jpeg_fixtures.write_manual_download(manual, train_per_class=3,
                                      num_classes=3, num_val=NUM_VAL)
  data = os.path.join(root, 'tfds')
  path = imagenet.prepare(manual, data)
  assert path.startswith(data)
  return data


def _config(data_dir=None, **overrides):
  config = imagenet_config.get_config('runlocal').data
  config = ml_collections.ConfigDict(config.to_dict())
  config.data_dir = data_dir
  config.image_shape = (16, 16)
  config.update(overrides)
  return config


def _collect(iterator, n=None):
  batches = []
  for batch in iterator:
    batches.append(batch)
    if n is not None and len(batches) == n:
      break
  return batches


def test_num_examples(data_dir):
  config = _config(data_dir)
  assert imagenet.num_examples('train', config) == NUM_TRAIN
  assert imagenet.num_examples('validation', config) == NUM_VAL
  assert imagenet.num_examples('train', _config(mock=True)) == 20
  with pytest.raises(ValueError, match='Unknown ImageNet split'):
    imagenet.num_examples('test', config)


def test_training_batches(data_dir):
  config = _config(data_dir)
  iterator = imagenet.load('train', is_training=True, batch_dims=(2, 2),
                           config=config, process_index=0, process_count=1)
  batches = _collect(iterator, 3)
  for batch in batches:
    assert set(batch) == {'image', 'label', 'mask'}
    assert batch['image'].shape == (2, 2, 16, 16, 3)
    assert batch['image'].dtype == np.float32
    assert batch['label'].shape == (2, 2, 1000)
    assert batch['label'].dtype == np.float32
    np.testing.assert_allclose(batch['label'].sum(-1), 1.0, atol=1e-6)
    # The three classes are the first three of TFDS's label list.
    assert batch['label'][..., 3:].max() == 0.0
    np.testing.assert_array_equal(batch['mask'], np.ones((2, 2)))
    assert batch['image'].min() >= -2.12 and batch['image'].max() <= 2.65
  assert iterator.num_skipped == 0


def test_training_without_mixing_gives_int_labels(data_dir):
  config = _config(data_dir, mixup_alpha=0.0, cutmix_alpha=0.0)
  batch = next(imagenet.load('train', is_training=True, batch_dims=(4,),
                             config=config, process_index=0,
                             process_count=1))
  assert batch['label'].dtype == np.int32 and batch['label'].shape == (4,)
  assert set(batch['label'].tolist()) <= {0, 1, 2}


def test_training_is_seeded_and_resumable(data_dir):
  config = _config(data_dir)

  def run(seed, start_step=0, n=5):
    return _collect(imagenet.load(
        'train', is_training=True, batch_dims=(4,), config=config,
        seed=seed, start_step=start_step, process_index=0, process_count=1),
                    n)

  first = run(0)
  for a, b in zip(first, run(0)):
    np.testing.assert_array_equal(a['image'], b['image'])
  other = run(1)
  assert not np.array_equal(first[0]['image'], other[0]['image'])
  # Crops vary between steps (no two batches alike).
  assert not np.array_equal(first[0]['image'], first[1]['image'])
  # 9 examples, batches of 4: step 3 starts inside the second epoch.
  for a, b in zip(first[3:], run(0, start_step=3, n=2)):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])


def _eval_images(data_dir, process_index, process_count, batch_dims=(3,)):
  batches = _collect(imagenet.load(
      'validation', is_training=False, batch_dims=batch_dims,
      config=_config(data_dir), process_index=process_index,
      process_count=process_count))
  images = np.concatenate([b['image'].reshape(-1, 16, 16, 3)
                           for b in batches])
  labels = np.concatenate([b['label'].reshape(-1) for b in batches])
  mask = np.concatenate([b['mask'].reshape(-1) for b in batches])
  return batches, images[mask == 1], labels[mask == 1], mask


def test_evaluation_visits_every_example_once(data_dir):
  batches, images, labels, mask = _eval_images(data_dir, 0, 1)
  assert len(batches) == 3  # 7 examples in batches of 3.
  np.testing.assert_array_equal(mask, [1] * 7 + [0] * 2)
  assert batches[0]['label'].dtype == np.int32
  assert images.shape == (7, 16, 16, 3)
  assert len({image.tobytes() for image in images}) == 7
  # The labels TFDS gives the first 7 validation files (which it stores in
  # its own order).
  names = tfds.builder('imagenet2012').info.features['label'].names
  expected = ['n01751748', 'n09193705', 'n02105855', 'n04263257',
              'n03125729', 'n01735189', 'n02346627']
  assert sorted(names[i] for i in labels) == sorted(expected)
  _, again, _, _ = _eval_images(data_dir, 0, 1)
  np.testing.assert_array_equal(images, again)


def test_hosts_read_disjoint_shards(data_dir):
  _, all_images, _, _ = _eval_images(data_dir, 0, 1)
  everything = {image.tobytes() for image in all_images}
  shards, counts = [], []
  for host in range(3):
    batches, images, _, _ = _eval_images(data_dir, host, 3, batch_dims=(2,))
    shards.append({image.tobytes() for image in images})
    counts.append(len(batches))
  assert counts == [2, 2, 2]  # Same number of batches on every host.
  assert sum(len(s) for s in shards) == 7
  assert set.union(*shards) == everything
  # Training shards: each host's epoch holds its own records.
  builder = tfds.builder('imagenet2012', data_dir=data_dir)
  train_shards = []
  for host in range(2):
    source = imagenet.tfds_source(builder, 'train', host, 2)
    ordered = [r['image'] for r in source.ordered.as_numpy_iterator()]
    epoch = [r['image'] for r in source.make_epoch(
        tf.constant(5, tf.int64)).as_numpy_iterator()]
    assert sorted(ordered) == sorted(epoch)
    assert len(ordered) == source.num_examples == (5, 4)[host]
    train_shards.append(set(ordered))
  assert not train_shards[0] & train_shards[1]
  assert len(train_shards[0] | train_shards[1]) == NUM_TRAIN


def test_real_jpeg_records_and_corrupt_ones():
  jpegs = jpeg_fixtures.sample_jpegs(6, seed=3)
  jpegs[2] = b'\x89PNG not a JPEG'
  records = tf.data.Dataset.from_tensor_slices(
      {'image': jpegs, 'label': np.arange(6)})
  config = _config(mixup_alpha=0.0, cutmix_alpha=0.0, shuffle_buffer=1)
  source = imagenet.Source.from_records(records, 6)
  iterator = imagenet.training_batches(source, config, batch_dims=(5,),
                                       seed=0, start_step=0, process_index=0)
  batch = next(iterator)
  np.testing.assert_array_equal(batch['label'], [0, 1, 3, 4, 5])
  assert iterator.num_skipped == 1
  # Host 1 of 2 keeps every other record.
  host1 = imagenet.Source.from_records(records, 6, process_index=1,
                                       process_count=2)
  assert host1.num_examples == 3
  labels = [r['label'] for r in host1.ordered.as_numpy_iterator()]
  assert labels == [1, 3, 5]


def test_mock_data(tmp_path):
  config = imagenet_config.get_config('runlocal,mock').data
  train = imagenet.load('train', is_training=True, batch_dims=(2, 4),
                        config=config, process_index=0, process_count=1)
  evaluate = imagenet.load('validation', is_training=False, batch_dims=(8,),
                           config=config, process_index=0, process_count=1)
  # No mock patch outlives `load`: an empty data dir is still unprepared.
  assert not tfds.builder('imagenet2012',
                          data_dir=str(tmp_path)).is_prepared()
  batch = next(train)
  assert batch['image'].shape == (2, 4, 32, 32, 3)
  assert batch['label'].shape == (2, 4, 1000)
  eval_batches = _collect(evaluate)
  assert len(eval_batches) == 3
  assert sum(b['mask'].sum() for b in eval_batches) == 20
  # Host shards of the mock data are disjoint too.
  labels = []
  for host in range(2):
    for b in imagenet.load('validation', is_training=False, batch_dims=(8,),
                           config=config, process_index=host,
                           process_count=2):
      labels.append(b['label'][b['mask'] == 1])
  all_labels = np.concatenate([b['label'][b['mask'] == 1]
                               for b in eval_batches])
  np.testing.assert_array_equal(np.sort(np.concatenate(labels)),
                                np.sort(all_labels))


def test_missing_dataset_error(tmp_path):
  config = _config(str(tmp_path / 'nothing'))
  with pytest.raises(imagenet.DatasetNotPreparedError) as info:
    imagenet.load('train', is_training=True, batch_dims=(2,), config=config,
                  process_index=0, process_count=1)
  assert isinstance(info.value, FileNotFoundError)
  message = str(info.value)
  for text in ('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar',
               '--manual_dir', str(tmp_path / 'nothing'),
               'imagenet2012', 'mock'):
    assert text in message, text
  with pytest.raises(imagenet.DatasetNotPreparedError):
    imagenet.num_examples('validation', config)
  with pytest.raises(FileNotFoundError, match='ILSVRC2012_img_train.tar'):
    imagenet.prepare(str(tmp_path))


def test_data_dir_from_environment(monkeypatch, tmp_path):
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'env'))
  assert imagenet.data_dir_of(_config()) == str(tmp_path / 'env')
  assert imagenet.data_dir_of(_config('/x')) == '/x'
  with pytest.raises(imagenet.DatasetNotPreparedError,
                     match=str(tmp_path / 'env')):
    imagenet.num_examples('train', _config())


def test_bad_config_values(data_dir):
  with pytest.raises(ValueError, match='eval_crop_fraction'):
    imagenet.load('validation', is_training=False, batch_dims=(2,),
                  config=_config(data_dir, eval_crop_fraction=0.0),
                  process_index=0, process_count=1)
  with pytest.raises(ValueError, match='randaugment'):
    imagenet.load('train', is_training=True, batch_dims=(2,),
                  config=_config(data_dir, randaugment_magnitude=12),
                  process_index=0, process_count=1)
  with pytest.raises(ValueError, match='image_shape'):
    imagenet.load('train', is_training=True, batch_dims=(2,),
                  config=_config(data_dir, image_shape=(16,)),
                  process_index=0, process_count=1)
