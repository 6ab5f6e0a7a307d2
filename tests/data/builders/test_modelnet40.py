"""Tests of the modelnet40 TFDS builder and loader on files the tests write.

Both builds run once per module (TFDS preparation is the slow part).
"""

import hashlib
import os

import ml_collections
import numpy as np
import pytest
import trimesh

from perceiver_jax.data import modelnet40
from perceiver_jax.data.builders import modelnet40 as builder_lib

NUM_POINTS = builder_lib.DEFAULT_NUM_POINTS
AIRPLANE, CHAIR, XBOX = 0, 8, 39  # Alphabetical indices of the 40 classes.


def _box_off(extents, *, fused: bool) -> str:
  box = trimesh.creation.box(extents=extents)
  counts = f'{len(box.vertices)} {len(box.faces)} 0'
  lines = [f'OFF{counts}'] if fused else ['OFF', counts]
  lines += [' '.join(f'{c:.6f}' for c in v) for v in box.vertices]
  lines += ['3 ' + ' '.join(str(i) for i in f) for f in box.faces]
  return '\n'.join(lines) + '\n'


def _tetra_off() -> str:
  return ('OFF\n4 4 0\n1 1 1\n1 -1 -1\n-1 1 -1\n-1 -1 1\n'
          '3 0 1 2\n3 0 3 1\n3 0 2 3\n3 1 3 2\n')


# Relative path -> contents of the official layout the test writes.
OFFICIAL_FILES = {
    'airplane/train/airplane_0001.off': _box_off((1, 2, 3), fused=False),
    'airplane/train/airplane_0002.off': _box_off((4, 1, 1), fused=True),
    'chair/train/chair_0001.off': _tetra_off(),
    # Truncated: declares 8 vertices, has 2.
    'chair/train/chair_0002.off': 'OFF\n8 12 0\n0 0 0\n1 1 1\n',
    'chair/test/chair_0003.off': _box_off((1, 1, 1), fused=True),
    'xbox/test/xbox_0001.off': _box_off((3, 1, 2), fused=False),
    # Not part of the layout: ignored.
    'README.txt': 'not a mesh',
    'chair/train/._chair_0001.off': 'macOS metadata',
}
EXPECTED_LABELS = {
    'airplane/train/airplane_0001.off': AIRPLANE,
    'airplane/train/airplane_0002.off': AIRPLANE,
    'chair/train/chair_0001.off': CHAIR,
    'chair/test/chair_0003.off': CHAIR,
    'xbox/test/xbox_0001.off': XBOX,
}
BOX_FILES = [p for p in EXPECTED_LABELS if 'chair_0001' not in p]


def _write(root, files):
  for path, text in files.items():
    full = os.path.join(root, *path.split('/'))
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, 'w') as f:
      f.write(text)


def _read_all(builder, split):
  return {ex['id'].decode(): ex
          for ex in builder.as_dataset(split=split).as_numpy_iterator()}


@pytest.fixture(scope='module')
def official(tmp_path_factory):
  root = tmp_path_factory.mktemp('official')
  _write(os.path.join(root, 'manual', 'ModelNet40'), OFFICIAL_FILES)
  builder = builder_lib.build(os.path.join(root, 'manual'),
                              config='official',
                              data_dir=os.path.join(root, 'tfds'))
  return builder, str(root / 'tfds')


def test_official_labels_counts_and_skipped_report(official):
  builder, _ = official
  examples = {**_read_all(builder, 'train'), **_read_all(builder, 'test')}
  assert {p: int(e['label']) for p, e in examples.items()} == EXPECTED_LABELS
  assert builder.info.splits['train'].num_examples == 3
  assert builder.info.splits['test'].num_examples == 2
  report = builder_lib.report(builder)
  assert report['num_skipped'] == {'train': 1, 'test': 0}
  [skipped] = report['skipped']['train']
  assert skipped['path'] == 'chair/train/chair_0002.off'
  assert 'only' in skipped['error']
  # The report survives in the prepared dataset (metadata.json).
  reloaded = builder_lib.Modelnet40(config='official',
                                    data_dir=official[1])
  assert builder_lib.report(reloaded)['num_skipped']['train'] == 1


def test_official_points_normalised_and_on_the_box(official):
  builder, _ = official
  examples = {**_read_all(builder, 'train'), **_read_all(builder, 'test')}
  for path in BOX_FILES:
    points = examples[path]['points']
    assert points.shape == (NUM_POINTS, 3) and points.dtype == np.float32
    np.testing.assert_allclose(points.mean(axis=0), 0, atol=1e-5)
    assert np.abs(points).max() == pytest.approx(1.0, abs=1e-6)
    # Every point lies on a face of the (scaled, shifted) box: one of its
    # coordinates equals that axis's extreme value over the cloud.
    low, high = points.min(axis=0), points.max(axis=0)
    on_face = (np.abs(points - low) < 1e-5) | (np.abs(points - high) < 1e-5)
    assert on_face.any(axis=1).all(), path
  # Isotropic scaling keeps the (4, 1, 1) box's proportions.
  extent = np.ptp(examples['airplane/train/airplane_0002.off']['points'],
                  axis=0)
  np.testing.assert_allclose(extent / extent[0], [1, 0.25, 0.25], atol=1e-3)


def test_official_sampling_is_seeded_by_the_path(official):
  builder, _ = official
  examples = _read_all(builder, 'train')
  path = 'chair/train/chair_0001.off'
  # Independently: trimesh's sampler with the path's SHA-256 seed.
  mesh = trimesh.Trimesh(
      [[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]],
      [[0, 1, 2], [0, 3, 1], [0, 2, 3], [1, 3, 2]], process=False)
  seed = int.from_bytes(hashlib.sha256(path.encode()).digest()[:4], 'little')
  raw, _ = trimesh.sample.sample_surface(mesh, NUM_POINTS, seed=seed)
  centred = raw - raw.mean(axis=0)
  expected = centred / np.abs(centred).max()
  np.testing.assert_allclose(examples[path]['points'], expected, atol=1e-5)


def test_loader_batches_mask_and_resume(official):
  _, data_dir = official
  config = ml_collections.ConfigDict(dict(
      data_dir=data_dir, builder_config='official', num_points=128,
      mock=False))
  assert modelnet40.num_examples('train', config) == 3
  batches = list(modelnet40.load('test', is_training=False, batch_dims=[3],
                                 config=config))
  assert len(batches) == 1
  batch = batches[0]
  assert batch['points'].shape == (3, 128, 3)
  np.testing.assert_array_equal(batch['mask'], [1, 1, 0])
  assert sorted(batch['label'][:2].tolist()) == [CHAIR, XBOX]
  np.testing.assert_array_equal(batch['points'][2], 0)
  # The prefix of 128 stored points, re-normalised.
  np.testing.assert_allclose(batch['points'][:2].mean(axis=1), 0, atol=1e-5)
  np.testing.assert_allclose(np.abs(batch['points'][:2]).max(axis=(1, 2)), 1,
                             atol=1e-6)
  train = modelnet40.load('train', is_training=True, batch_dims=[2, 2],
                          config=config, seed=3)
  first = [next(train) for _ in range(4)]
  assert first[0]['points'].shape == (2, 2, 128, 3)
  assert first[0]['label'].dtype == np.int32
  np.testing.assert_array_equal(first[0]['mask'], np.ones((2, 2)))
  resumed = next(modelnet40.load('train', is_training=True, batch_dims=[2, 2],
                                 config=config, seed=3, start_step=3))
  for key in ('points', 'label'):
    np.testing.assert_array_equal(resumed[key], first[3][key])
  with pytest.raises(ValueError, match='num_points'):
    next(modelnet40.load('test', is_training=False, batch_dims=[2],
                         config=ml_collections.ConfigDict(dict(
                             data_dir=data_dir, num_points=NUM_POINTS + 1))))


def test_missing_dataset_says_how_to_prepare_it(tmp_path):
  config = ml_collections.ConfigDict(dict(data_dir=str(tmp_path),
                                          builder_config='resampled'))
  with pytest.raises(modelnet40.DatasetNotPreparedError,
                     match='--config=resampled'):
    modelnet40.num_examples('train', config)
  with pytest.raises(FileNotFoundError, match='modelnet40_normal_resampled'):
    builder_lib.build(str(tmp_path), config='resampled',
                      data_dir=str(tmp_path))


def test_unknown_class_folder_is_an_error():
  with pytest.raises(ValueError, match='spaceship'):
    builder_lib.official_examples(['spaceship/train/spaceship_0001.off'])


# The pre-sampled variant. Row k of a file is (k, k % 7, k % 11) plus a
# normal, so the stored subset can be checked row by row.
RESAMPLED_ROWS = 2100


def _point_file() -> str:
  k = np.arange(RESAMPLED_ROWS)
  rows = np.stack([k, k % 7, k % 11, np.zeros_like(k), np.zeros_like(k),
                   np.ones_like(k)], axis=1)
  return '\n'.join(','.join(f'{v:.6f}' for v in row) for row in rows) + '\n'


@pytest.fixture(scope='module')
def resampled(tmp_path_factory):
  root = tmp_path_factory.mktemp('resampled')
  files = {
      'modelnet40_shape_names.txt': '\n'.join(builder_lib.CLASS_NAMES) + '\n',
      'modelnet40_train.txt': 'bed_0001\nnight_stand_0002\nbed_0003\n',
      'modelnet40_test.txt': 'xbox_0001\n',
      'bed/bed_0001.txt': _point_file(),
      'night_stand/night_stand_0002.txt': _point_file(),
      'bed/bed_0003.txt': '1,2,3\n4,5,6\n',  # Too few points: skipped.
      'xbox/xbox_0001.txt': _point_file(),
  }
  _write(os.path.join(root, 'manual', 'modelnet40_normal_resampled'), files)
  return builder_lib.build(os.path.join(root, 'manual'), config='resampled',
                           data_dir=os.path.join(root, 'tfds'))


def test_resampled_labels_points_and_report(resampled):
  train = _read_all(resampled, 'train')
  test = _read_all(resampled, 'test')
  assert {p: int(e['label']) for p, e in {**train, **test}.items()} == {
      'bed/bed_0001.txt': 2, 'night_stand/night_stand_0002.txt': 23,
      'xbox/xbox_0001.txt': XBOX}
  assert builder_lib.report(resampled)['num_skipped'] == {'train': 1,
                                                          'test': 0}
  points = train['bed/bed_0001.txt']['points']
  assert points.shape == (NUM_POINTS, 3)
  np.testing.assert_allclose(points.mean(axis=0), 0, atol=1e-5)
  assert np.abs(points).max() == pytest.approx(1.0, abs=1e-6)
  # Independently: a seeded subset of rows without replacement (numpy's
  # generator seeded with the path's SHA-256), then centred and scaled.
  seed = int.from_bytes(
      hashlib.sha256(b'bed/bed_0001.txt').digest()[:4], 'little')
  rows = np.random.default_rng(seed).choice(RESAMPLED_ROWS, NUM_POINTS,
                                            replace=False)
  k = rows.astype(np.float64)
  table = np.stack([k, k % 7, k % 11], axis=1)
  centred = table - table.mean(axis=0)
  np.testing.assert_allclose(points, centred / np.abs(centred).max(),
                             atol=1e-5)


def test_resampled_shape_names_must_match():
  class FakeSource:

    def read(self, path):
      del path
      return b'chair\nairplane\n'

  with pytest.raises(ValueError, match='shape_names'):
    builder_lib.resampled_examples(FakeSource())


def test_mock_builds_and_reads_generated_meshes():
  config = ml_collections.ConfigDict(dict(
      mock=True, num_points=64, mock_train_per_class=2,
      mock_test_per_class=1))
  assert modelnet40.num_examples('train', config) == 8
  assert modelnet40.num_examples('test', config) == 4
  batch = next(modelnet40.load('train', is_training=True, batch_dims=[8],
                               config=config))
  assert batch['points'].shape == (8, 64, 3)
  expected = sorted(builder_lib.CLASS_NAMES.index(c)
                    for c, _ in modelnet40.MOCK_CLASSES for _ in range(2))
  labels = [b['label'] for b in modelnet40.load(
      'train', is_training=False, batch_dims=[8], config=config)]
  assert sorted(np.concatenate(labels).tolist()) == expected
