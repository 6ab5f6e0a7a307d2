r"""TFDS builder `modelnet40`: point clouds of the ModelNet40 meshes.

Built from a manual download (layouts in docs/pointclouds.md): config
`official` samples `DEFAULT_NUM_POINTS` points from each mesh of the
Princeton `ModelNet40.zip`, seeded by the file's path so every build gives
the same points; `resampled` keeps a seeded subset of the points of
`modelnet40_normal_resampled` (normals dropped). Points are normalised into
[-1, 1]^3, labels index `CLASS_NAMES`. Unreadable files are skipped and
listed in `metadata.json` under 'skipped'. Build with

  python -m perceiver_jax.data.modelnet40 \
      --manual_dir=~/datasets/modelnet --config=official [--data_dir=...]
"""

import contextlib
import dataclasses
import multiprocessing
import os
import zipfile
import zlib
from typing import Any, Iterator, Optional

from absl import logging
import numpy as np
from perceiver_jax import checks
from perceiver_jax import progress
from perceiver_jax.data import pointcloud
from perceiver_jax.data.builders import atomic
import tensorflow_datasets as tfds

DEFAULT_NUM_POINTS = pointcloud.DEFAULT_NUM_POINTS
CLASS_NAMES = (
    'airplane', 'bathtub', 'bed', 'bench', 'bookshelf', 'bottle', 'bowl',
    'car', 'chair', 'cone', 'cup', 'curtain', 'desk', 'door', 'dresser',
    'flower_pot', 'glass_box', 'guitar', 'keyboard', 'lamp', 'laptop',
    'mantel', 'monitor', 'night_stand', 'person', 'piano', 'plant', 'radio',
    'range_hood', 'sink', 'sofa', 'stairs', 'stool', 'table', 'tent',
    'toilet', 'tv_stand', 'vase', 'wardrobe', 'xbox')
SPLITS = ('train', 'test')
# Where each layout lives inside the manual dir (a folder or '<name>.zip').
ROOT_NAMES = {'official': 'ModelNet40',
              'resampled': 'modelnet40_normal_resampled'}


class _Source:
  """Files under a root folder or under a top folder of a zip archive."""

  def __init__(self, manual_dir: str, name: str):
    folder = os.path.join(manual_dir, name)
    archive = folder + '.zip'
    self._zip = None
    if os.path.isdir(folder):
      self._root = folder
    elif os.path.isfile(archive):
      try:
        self._zip = zipfile.ZipFile(archive)
      except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(f'{archive} is not a readable zip archive ({e}).'
                         ) from None
      self._root = name + '/'
    else:
      raise FileNotFoundError(
          f'Neither {folder}/ nor {archive} exists; see the manual dir '
          'layout in docs/pointclouds.md.')
    self.description = folder if self._zip is None else archive

  def relative_paths(self) -> list[str]:
    """All files, as sorted '/'-separated paths relative to the root."""
    if self._zip is not None:
      return sorted(n[len(self._root):] for n in self._zip.namelist()
                    if n.startswith(self._root) and not n.endswith('/'))
    return sorted(
        os.path.relpath(os.path.join(folder, f), self._root).replace(
            os.sep, '/')
        for folder, _, files in os.walk(self._root) for f in files)

  def read(self, relative_path: str) -> bytes:
    """The bytes of one file (an error names a damaged archive or file)."""
    if self._zip is not None:
      member = self._root + relative_path
      try:
        return self._zip.read(member)
      except KeyError:
        raise FileNotFoundError(f'{self.description} has no {member}.'
                                ) from None
      except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
        raise ValueError(f'{self.description}: cannot read {member} '
                         f'({e}); the archive is damaged.') from None
    with open(os.path.join(self._root, *relative_path.split('/')), 'rb') as f:
      return f.read()


def official_examples(paths: list[str]) -> dict[str, list[tuple[str, int]]]:
  """Split -> [(relative path, label)] of '<class>/<split>/<x>.off' files."""
  examples = {split: [] for split in SPLITS}
  for path in paths:
    parts = path.split('/')
    if (len(parts) != 3 or parts[1] not in SPLITS or
        not parts[2].lower().endswith('.off') or parts[2].startswith('.')):
      continue  # Not a mesh of the layout (e.g. macOS '._x.off' files).
    if parts[0] not in CLASS_NAMES:
      raise ValueError(f'Unknown ModelNet40 class folder {parts[0]!r} '
                       f'(in {path!r}); expected one of {CLASS_NAMES}.')
    examples[parts[1]].append((path, CLASS_NAMES.index(parts[0])))
  return examples


def resampled_examples(source: _Source) -> dict[str, list[tuple[str, int]]]:
  """Split -> [(relative path, label)] from the resampled variant's lists."""
  names = source.read('modelnet40_shape_names.txt').decode().split()
  if tuple(names) != CLASS_NAMES:
    raise ValueError(f'modelnet40_shape_names.txt lists {names}; expected '
                     f'the 40 ModelNet40 classes {CLASS_NAMES} in order.')
  examples = {}
  for split in SPLITS:
    ids = source.read(f'modelnet40_{split}.txt').decode().split()
    examples[split] = []
    for shape_id in ids:
      class_name = shape_id.rsplit('_', 1)[0]
      if class_name not in CLASS_NAMES:
        raise ValueError(f'Shape id {shape_id!r} in modelnet40_{split}.txt '
                         f'names no ModelNet40 class.')
      examples[split].append(
          (f'{class_name}/{shape_id}.txt', CLASS_NAMES.index(class_name)))
  return examples


def read_point_file(data: bytes, num_points: int, seed: int) -> np.ndarray:
  """A seeded subset `[num_points, 3]`, normalised, of an 'x,y,z[,...]' file."""
  rows = [l for l in data.splitlines() if l.strip()]
  try:
    table = np.array([l.replace(b',', b' ').split() for l in rows],
                     dtype=np.float64)
  except ValueError as e:
    raise pointcloud.MeshReadError(f'Bad point file: {e}') from e
  if table.ndim != 2 or table.shape[1] < 3 or not np.all(
      np.isfinite(table[:, :3])):
    raise pointcloud.MeshReadError(
        f'A point file needs >= 3 finite numbers per row, got a table of '
        f'shape {table.shape}.')
  if len(table) < num_points:
    raise pointcloud.MeshReadError(
        f'Point file has {len(table)} points; {num_points} are needed.')
  rows = np.random.default_rng(seed).choice(len(table), num_points,
                                            replace=False)
  return pointcloud.normalize(table[rows, :3])


def _process_job(job: tuple[str, str, bytes, int]
                 ) -> tuple[Optional[np.ndarray], Optional[str]]:
  """(points `[num_points, 3]`, None) or (None, error) of one file."""
  layout, relative_path, data, num_points = job
  seed = pointcloud.path_seed(relative_path)
  try:
    if layout == 'official':
      return pointcloud.mesh_to_points(pointcloud.read_off(data), num_points,
                                       seed), None
    return read_point_file(data, num_points, seed), None
  except pointcloud.MeshReadError as e:
    return None, str(e)


@dataclasses.dataclass(eq=False)
class Modelnet40Config(tfds.core.BuilderConfig):
  """A ModelNet40 distribution (`layout`) and the points kept per shape."""
  layout: str = 'official'
  num_points: int = DEFAULT_NUM_POINTS


class Modelnet40(tfds.core.GeneratorBasedBuilder):
  """ModelNet40 as point clouds (see the module docstring)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [
      Modelnet40Config(
          name='official', layout='official',
          description='Surface samples of the official ModelNet40 meshes.'),
      Modelnet40Config(
          name='resampled', layout='resampled',
          description='Subsets of modelnet40_normal_resampled points.'),
  ]
  DEFAULT_CONFIG_NAME = 'official'
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Place ModelNet40.zip (https://modelnet.cs.princeton.edu/) or its '
      'extracted ModelNet40/ folder in the manual dir for the "official" '
      'config; modelnet40_normal_resampled.zip or its folder for '
      '"resampled".')

  def __init__(self, *, num_workers: int = 1, **kwargs: Any):
    """`num_workers` > 1 reads and samples files in that many processes."""
    self._num_workers = checks.positive_int(num_workers, 'num_workers')
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    num_points = self.builder_config.num_points
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'points': tfds.features.Tensor(shape=(num_points, 3),
                                           dtype=np.float32),
            'label': tfds.features.ClassLabel(names=CLASS_NAMES),
            'id': tfds.features.Text(),
        }),
        supervised_keys=('points', 'label'),
        homepage='https://modelnet.cs.princeton.edu/',
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    layout = self.builder_config.layout
    source = _Source(os.fspath(dl_manager.manual_dir), ROOT_NAMES[layout])
    logging.info('Reading ModelNet40 (%s) from %s', layout,
                 source.description)
    if layout == 'official':
      examples = official_examples(source.relative_paths())
    else:
      examples = resampled_examples(source)
    if not any(examples.values()):
      # Refused before TFDS writes a split.
      raise atomic.EmptyBuildError(
          f'{source.description} holds no ModelNet40 '
          + ('mesh (<class>/<split>/<name>.off)' if layout == 'official'
             else 'shape listed in modelnet40_{train,test}.txt')
          + '; nothing was written.')
    metadata = self.info.metadata
    metadata['skipped'] = {split: [] for split in SPLITS}
    metadata['num_skipped'] = {split: 0 for split in SPLITS}
    metadata['num_points'] = self.builder_config.num_points
    return {split: self._generate_examples(source, split, examples[split])
            for split in SPLITS}

  def _generate_examples(self, source: _Source, split: str,
                         examples: list[tuple[str, int]]
                         ) -> Iterator[tuple[str, dict[str, Any]]]:
    layout = self.builder_config.layout
    num_points = self.builder_config.num_points
    skipped = self.info.metadata['skipped'][split]
    jobs = ((layout, path, source.read(path), num_points)
            for path, _ in examples)
    with contextlib.ExitStack() as stack:  # Its exit ends the pool.
      results = map(_process_job, jobs)
      if self._num_workers > 1:
        pool = stack.enter_context(
            multiprocessing.get_context('spawn').Pool(self._num_workers))
        results = pool.imap(_process_job, jobs, chunksize=8)
      for (path, label), (points, error) in zip(examples, progress.track(
          results, f'ModelNet40 {self.builder_config.name}/{split}',
          total=len(examples), unit='meshes')):
        if error is not None:
          logging.warning('Skipping unreadable %s: %s', path, error)
          skipped.append({'path': path, 'error': error})
          self.info.metadata['num_skipped'][split] = len(skipped)
          continue
        yield path, {'points': points, 'label': label, 'id': path}
    logging.info('ModelNet40 %s: %d examples, %d skipped.', split,
                 len(examples) - len(skipped), len(skipped))


def build(manual_dir: str, *, config: str = 'official',
          data_dir: Optional[str] = None, num_workers: int = 1
          ) -> tfds.core.DatasetBuilder:
  """Prepares `modelnet40/<config>` from `manual_dir`, all or nothing."""
  manual_dir = os.path.expanduser(manual_dir)
  # The layout is looked for first: TFDS's own check of an empty manual dir
  # is an assertion.
  _Source(manual_dir, ROOT_NAMES[Modelnet40.builder_configs[config].layout])
  return atomic.prepare(
      lambda root: Modelnet40(config=config, data_dir=root,
                              num_workers=num_workers),
      data_dir, manual_dir)


def report(builder: tfds.core.DatasetBuilder) -> dict[str, Any]:
  """Split sizes and skipped files of a prepared builder."""
  return {
      'data_dir': os.fspath(builder.data_path),
      'num_examples': {s: builder.info.splits[s].num_examples
                       for s in SPLITS},
      'num_skipped': dict(builder.info.metadata.get('num_skipped', {})),
      'skipped': dict(builder.info.metadata.get('skipped', {})),
  }

