"""Tests of the any-dataset image loader (perceiver_jax/data/images.py) and
configs/images.py, on folders the tests write and on TFDS mock data."""

import json

import numpy as np
from PIL import Image
import pytest

from configs import digits as configs_digits
from configs import images as images_config
from perceiver_jax.data import digits
from perceiver_jax.data import images
from perceiver_jax.train import loop
from perceiver_jax.train import tasks
from tests.helpers.image_folders import CLASSES
from tests.helpers.image_folders import folder_config
from tests.helpers.image_folders import write_folder


def test_folder_complete_config_and_batches(tmp_path):
  config = folder_config(write_folder(tmp_path))
  config.data.image_shape = ()
  tasks.complete_config(config)
  assert config.data.label_names == CLASSES
  assert config.data.num_classes == 2
  assert config.data.num_train_examples == 9  # The corrupt file included.
  # The first training image (train/cat/0.jpg) is 12x20.
  assert config.data.image_shape == (12, 20)
  assert config.model.input.index_dims == (12, 20)
  # An undecodable file listed first is passed over when sizing.
  first_broken = write_folder(tmp_path / 'first_broken')
  (tmp_path / 'first_broken' / 'train' / 'cat' / '-broken.png').write_bytes(
      b'not an image')
  sized = folder_config(first_broken)
  sized.data.image_shape = ()
  tasks.complete_config(sized)
  assert sized.data.image_shape == (12, 20)
  assert sized.data.num_train_examples == 10

  config.data.image_shape = (16, 16)
  batches = images.load('train', is_training=True, batch_dims=(2, 4),
                        config=config.data, seed=0)
  labels = []
  for _ in range(3):  # 24 examples: more than two epochs of 8 readable.
    batch = next(batches)
    assert batch['image'].shape == (2, 4, 16, 16, 3)
    labels.append(batch['label'].reshape(-1))
  assert batches.num_skipped >= 2  # broken.png, once per epoch.
  assert set(np.concatenate(labels)) == {0, 1}

  evaluation = list(images.load('test', is_training=False, batch_dims=(1, 4),
                                config=config.data))
  assert len(evaluation) == 2
  # Dark images are class 0, bright ones class 1 (normalised pixels).
  for batch in evaluation:
    means = batch['image'].reshape(4, -1).mean(-1)
    np.testing.assert_array_equal(batch['label'][0], (means > 0).astype(int))


def test_an_unreadable_evaluation_file_is_skipped_and_counted(tmp_path):
  config = folder_config(write_folder(tmp_path, corrupt=False))
  (tmp_path / 'test' / 'red fox' / 'broken.jpg').write_bytes(b'no image')
  tasks.complete_config(config)
  batches = images.load('test', is_training=False, batch_dims=(1, 4),
                        config=config.data)
  evaluation = list(batches)
  assert batches.num_skipped == 1
  # 9 files: 3 batches of 4, the 8 readable images in them.
  assert len(evaluation) == 3
  labels = np.concatenate([b['label'].ravel() for b in evaluation])
  mask = np.concatenate([b['mask'].ravel() for b in evaluation])
  assert mask.sum() == 8
  np.testing.assert_array_equal(labels[mask > 0], [0] * 4 + [1] * 4)


def test_grey_unit_pixels_match_the_files(tmp_path):
  root = tmp_path / 'digits'
  for split in ('train', 'test'):
    (root / split / '3').mkdir(parents=True)
  pixels = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
  for split in ('train', 'test'):
    Image.fromarray(pixels).save(root / split / '3' / 'a.png')
  config = folder_config(str(root))
  config.data.update(image_shape=(8, 8), channels=1, normalization='unit',
                     random_crop=False, flip=False)
  tasks.complete_config(config)
  train = next(images.load('train', is_training=True, batch_dims=(1, 2),
                           config=config.data))
  test = next(images.load('test', is_training=False, batch_dims=(1, 1),
                          config=config.data))
  for image in (train['image'][0, 0], test['image'][0, 0]):
    np.testing.assert_allclose(image[..., 0], pixels / 255.0, atol=1e-6)


@pytest.mark.parametrize('layout, message', [
    ('no_split', "has no 'test' split folder"),
    ('empty_class', 'holds no image'),
    ('no_classes', 'holds no class folder'),
])
def test_folder_mistakes_are_one_clear_error(tmp_path, layout, message):
  root = tmp_path / 'data'
  (root / 'train' / 'a').mkdir(parents=True)
  Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(
      root / 'train' / 'a' / 'x.png')
  if layout == 'empty_class':
    (root / 'test' / 'a').mkdir(parents=True)
  elif layout == 'no_classes':
    (root / 'test').mkdir()
  config = folder_config(str(root))
  tasks.complete_config(config)
  with pytest.raises(images.DatasetNotPreparedError, match=message):
    images.num_examples('test', config.data)


def test_tfds_name_errors():
  config = images_config.get_config('dataset=no_such_dataset')
  with pytest.raises(ValueError, match='nor a TFDS dataset name'):
    tasks.complete_config(config)
  config = images_config.get_config('dataset=mnist')
  config.data.data_dir = '/nonexistent/tfds'
  with pytest.raises(images.DatasetNotPreparedError,
                     match='run `tfds build mnist --data_dir=/nonexistent/'):
    tasks.complete_config(config)
  with pytest.raises(ValueError, match='needs --config.data.folder'):
    tasks.complete_config(images_config.get_config(''))


def test_folder_trains_and_evaluates(tmp_path):
  config = folder_config(write_folder(tmp_path / 'data'))
  result = loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert result['step'] == 6 and result['num_examples'] == 8
  with open(tmp_path / 'run' / 'metrics.jsonl') as f:
    train = [m for m in map(json.loads, f) if 'train/loss' in m][-1]
  # broken.png, once per 9 files read: 6 steps x 16 examples need 11.
  assert train['train/skipped_inputs'] == 11
  assert 0.0 <= result['top1'] <= 1.0


def test_tfds_mock_cifar10_trains_and_evaluates(tmp_path):
  config = images_config.get_config('dataset=cifar10,runlocal,mock')
  result = loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert config.data.image_shape == (32, 32)
  assert config.data.num_classes == 10
  assert result['step'] == 6 and result['num_examples'] == 16
  assert np.isfinite(result['loss'])


def test_digits_as_png_files_train_as_configs_digits(tmp_path):
  """sklearn's digits as a PNG folder (`in_memory`: the same batches) reach
  configs/digits.py's accuracy within one test digit, with its model and
  recipe shortened to 100 steps at 5x the rate on both sides (the full one
  takes minutes).
  """
  digits_config = configs_digits.get_config()
  digits_config.train.update(num_steps=100, log_every_steps=100,
                             eval_every_steps=100, checkpoint_every_steps=100)
  digits_config.optimizer.learning_rate *= 5
  for split in ('train', 'test'):
    size = digits.num_examples(split, digits_config.data)
    batch = next(digits.load(split, is_training=False, batch_dims=(size,),
                             config=digits_config.data))
    for i, (image, label) in enumerate(zip(batch['image'], batch['label'])):
      folder = tmp_path / 'data' / split / str(label)
      folder.mkdir(parents=True, exist_ok=True)
      # Counts 0..16 over 16 as grey levels: within 0.5 / 255 of them.
      Image.fromarray(np.round(image[..., 0] * 255).astype(np.uint8)).save(
          folder / f'{i:04d}.png')
  config = images_config.get_config('dataset=folder')
  config.data.update(folder=str(tmp_path / 'data'), image_shape=(8, 8),
                     channels=1, normalization='unit', random_crop=False,
                     flip=False, in_memory=True)
  for field in ('model', 'train', 'optimizer', 'loss', 'evaluator', 'seed'):
    config[field] = digits_config[field]
  tasks.complete_config(config)

  ours = next(images.load('train', is_training=True, batch_dims=(2, 8),
                          config=config.data, seed=0))
  theirs = next(digits.load('train', is_training=True, batch_dims=(2, 8),
                            config=digits_config.data, seed=0))
  np.testing.assert_array_equal(ours['label'], theirs['label'])
  np.testing.assert_allclose(ours['image'], theirs['image'], atol=0.5 / 255)

  from_folder = loop.train_and_evaluate(config, str(tmp_path / 'folder'))
  from_arrays = loop.train_and_evaluate(digits_config, str(tmp_path / 'digits'))
  assert from_folder['num_examples'] == from_arrays['num_examples'] == 360
  assert round(abs(from_folder['top1'] - from_arrays['top1']) * 360) <= 1
  assert from_arrays['top1'] > 0.5  # Both learned.
