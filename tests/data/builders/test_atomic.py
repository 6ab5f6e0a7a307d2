"""Dataset builders leave nothing half-made and name the file they fail on.

Each failure is provoked on real files (a garbage or damaged zip, tar or
CSV, an empty layout); the data dir must be byte-identical afterwards
(absent if it was absent), with no scratch folder left next to it.
"""

import glob
import io
import os
import re
import tarfile
import zipfile

import pytest

from tests.helpers import command_utils
from perceiver_jax.data import imagenet
from perceiver_jax.data.builders import atomic
from perceiver_jax.data.builders import audioset
from perceiver_jax.data.builders import audioset_fake as fake
from perceiver_jax.data.builders import modelnet40

TETRA_OFF = ('OFF\n4 4 0\n1 1 1\n1 -1 -1\n-1 1 -1\n-1 -1 1\n'
             '3 0 1 2\n3 0 3 1\n3 0 2 3\n3 1 3 2\n')


@pytest.fixture
def data_dir(tmp_path):
  """A data dir that already holds another dataset's file."""
  directory = tmp_path / 'tfds'
  (directory / 'other' / '1.0.0').mkdir(parents=True)
  (directory / 'other' / '1.0.0' / 'dataset_info.json').write_text('{}')
  return directory


def _no_scratch_left(tmp_path):
  assert not glob.glob(f'{tmp_path}/.*-building-*')


def _modelnet_zip(path, members):
  with zipfile.ZipFile(path, 'w', zipfile.ZIP_DEFLATED) as archive:
    for name, text in members.items():
      archive.writestr(f'ModelNet40/{name}', text)


def test_modelnet40_garbage_zip_is_named_and_nothing_written(tmp_path,
                                                             data_dir):
  manual = tmp_path / 'manual'
  manual.mkdir()
  (manual / 'ModelNet40.zip').write_bytes(b'not a zip at all')
  before = command_utils.file_digests(data_dir)
  with pytest.raises(ValueError, match=re.escape(
      f'{manual}/ModelNet40.zip is not a readable zip archive')):
    modelnet40.build(str(manual), data_dir=str(data_dir))
  assert command_utils.file_digests(data_dir) == before
  _no_scratch_left(tmp_path)


def test_modelnet40_damaged_zip_member_is_named(tmp_path):
  manual = tmp_path / 'manual'
  manual.mkdir()
  archive = manual / 'ModelNet40.zip'
  # Stored (not deflated), so that the mesh's bytes sit in the file as
  # written: flipping them breaks the member's CRC.
  with zipfile.ZipFile(archive, 'w', zipfile.ZIP_STORED) as z:
    z.writestr('ModelNet40/chair/train/chair_0001.off', TETRA_OFF)
    z.writestr('ModelNet40/chair/test/chair_0002.off', TETRA_OFF)
  raw = archive.read_bytes()
  at = raw.index(b'3 0 1 2')
  archive.write_bytes(raw[:at] + b'9 9 9 9' + raw[at + 7:])
  data_dir = tmp_path / 'absent' / 'tfds'
  with pytest.raises(ValueError, match=re.escape(
      f'{archive}: cannot read ModelNet40/chair/') + '.*damaged'):
    modelnet40.build(str(manual), data_dir=str(data_dir))
  assert not os.path.exists(tmp_path / 'absent')
  _no_scratch_left(tmp_path)


def test_modelnet40_without_a_mesh_is_refused(tmp_path, data_dir):
  manual = tmp_path / 'manual'
  manual.mkdir()
  _modelnet_zip(manual / 'ModelNet40.zip', {'README.txt': 'no meshes here'})
  before = command_utils.file_digests(data_dir)
  with pytest.raises(atomic.EmptyBuildError, match=re.escape(
      f'{manual}/ModelNet40.zip holds no ModelNet40 mesh')):
    modelnet40.build(str(manual), data_dir=str(data_dir))
  assert command_utils.file_digests(data_dir) == before


def test_modelnet40_all_meshes_malformed_is_refused(tmp_path, data_dir):
  # Each mesh is skipped and counted; none is left, so the build is refused
  # after the fact and its scratch folder removed.
  manual = tmp_path / 'manual'
  manual.mkdir()
  _modelnet_zip(manual / 'ModelNet40.zip',
                {'chair/train/chair_0001.off': 'OFF\n8 12 0\n0 0 0\n',
                 'chair/test/chair_0002.off': 'garbage'})
  before = command_utils.file_digests(data_dir)
  with pytest.raises(atomic.EmptyBuildError,
                     match='holds no readable example'):
    modelnet40.build(str(manual), data_dir=str(data_dir))
  assert command_utils.file_digests(data_dir) == before
  _no_scratch_left(tmp_path)


def test_modelnet40_success_moves_the_dataset_into_place(tmp_path, data_dir):
  manual = tmp_path / 'manual'
  manual.mkdir()
  _modelnet_zip(manual / 'ModelNet40.zip',
                {'chair/train/chair_0001.off': TETRA_OFF,
                 'chair/test/chair_0002.off': TETRA_OFF,
                 'chair/test/chair_0003.off': 'garbage'})
  before = command_utils.file_digests(data_dir)
  builder = modelnet40.build(str(manual), data_dir=str(data_dir))
  assert os.fspath(builder.data_dir) == str(
      data_dir / 'modelnet40' / 'official' / '1.0.0')
  assert builder.info.splits['train'].num_examples == 1
  assert builder.info.splits['test'].num_examples == 1
  assert builder.info.metadata['num_skipped'] == {'train': 0, 'test': 1}
  after = command_utils.file_digests(data_dir)
  assert {k: v for k, v in after.items() if k in before} == before
  _no_scratch_left(tmp_path)


def test_modelnet40_command_prints_one_line(tmp_path):
  manual = tmp_path / 'manual'
  manual.mkdir()
  (manual / 'ModelNet40.zip').write_bytes(b'garbage')
  result = command_utils.run_module(
      'perceiver_jax.data.modelnet40', f'--manual_dir={manual}',
      f'--data_dir={tmp_path}/tfds', '--num_workers=1')
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      f'error: ValueError: {manual}/ModelNet40.zip is not a readable zip '
      'archive (File is not a zip file).']
  assert not os.path.exists(tmp_path / 'tfds')


@pytest.fixture
def audioset_manual(tmp_path):
  return fake.write_fake_audioset(str(tmp_path / 'manual'),
                                  fake.default_clips()[:2])


@pytest.mark.parametrize('damage', ['not_utf8', 'bad_number', 'short_row'])
def test_audioset_malformed_csv_is_named(audioset_manual, data_dir, tmp_path,
                                        damage):
  if damage == 'not_utf8':
    path = os.path.join(audioset_manual, audioset.CLASS_INDEX_FILE)
    with open(path, 'ab') as f:
      f.write(b'527,/m/\xff\xfe,broken\n')
  else:
    path = os.path.join(audioset_manual,
                        audioset.SEGMENT_FILES['balanced_train'])
    with open(path, 'a') as f:
      f.write('abcdefghijk, ten, 20.0, "/m/0"\n' if damage == 'bad_number'
              else 'abcdefghijk\n')
  before = command_utils.file_digests(data_dir)
  with pytest.raises(ValueError, match=re.escape(f'{path}:')):
    audioset.build(audioset_manual, str(data_dir), 'audio')
  assert command_utils.file_digests(data_dir) == before
  _no_scratch_left(tmp_path)


def test_audioset_without_a_matching_clip_is_refused(audioset_manual,
                                                     tmp_path):
  for path in glob.glob(f'{audioset_manual}/{audioset.CLIPS_DIR}/**',
                        recursive=True):
    if os.path.isfile(path):
      os.rename(path, os.path.join(os.path.dirname(path), 'unrelated.wav'))
  data_dir = tmp_path / 'tfds'
  with pytest.raises(atomic.EmptyBuildError, match=re.escape(
      f'No file under {audioset_manual}/{audioset.CLIPS_DIR}')):
    audioset.build(audioset_manual, str(data_dir), 'audio')
  assert not os.path.exists(data_dir)
  _no_scratch_left(tmp_path)


def _tar(path, members):
  with tarfile.open(path, 'w') as archive:
    for name, data in members.items():
      info = tarfile.TarInfo(name)
      info.size = len(data)
      archive.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize('damage', ['garbage', 'truncated', 'empty'])
def test_imagenet_bad_tar_is_named_and_nothing_written(tmp_path, data_dir,
                                                       damage):
  manual = tmp_path / 'manual'
  manual.mkdir()
  tar = manual / 'ILSVRC2012_img_val.tar'
  if damage == 'garbage':
    tar.write_bytes(b'garbage' * 100)
  else:
    _tar(tar, {} if damage == 'empty' else
         {f'ILSVRC2012_val_{i:08d}.JPEG': bytes(3000) for i in range(1, 4)})
  if damage == 'truncated':
    # Cut inside the second member's data.
    tar.write_bytes(tar.read_bytes()[:512 * 8 + 100])
  before = command_utils.file_digests(data_dir)
  error = atomic.EmptyBuildError if damage == 'empty' else ValueError
  expected = (f'{tar} holds no file' if damage == 'empty' else
              f'{tar} is not a readable tar archive')
  with pytest.raises(error, match=re.escape(expected)):
    imagenet.prepare(str(manual), str(data_dir))
  assert command_utils.file_digests(data_dir) == before
  _no_scratch_left(tmp_path)
