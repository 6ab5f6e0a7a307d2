r"""ModelNet40 point clouds for training and evaluation (the data API).

Reads this host's shard of `modelnet40/<config.builder_config>` (built by
`builders/modelnet40.py`) into memory and batches it with `in_memory`.
`num_points` below the stored 2,048 takes a prefix of the i.i.d. samples,
re-normalised. `mock` builds a tiny ModelNet40-layout folder of generated
shapes with the real builder, so the whole path runs without the dataset.
Prepare the real data once:

  python -m perceiver_jax.data.modelnet40 --manual_dir=DIR --config=official
"""

import atexit
import functools
import json
import os
import shutil
import tempfile
from typing import Iterator, Optional, Sequence

from absl import flags
from absl import logging
import jax
import ml_collections
import numpy as np
from perceiver_jax import cli
from perceiver_jax.data import in_memory
from perceiver_jax.data import pointcloud
from perceiver_jax.data import shapes
from perceiver_jax.data.builders import modelnet40 as builder_lib

SPLITS = builder_lib.SPLITS
# Mock classes: a ModelNet40 class name and the generated shape standing in
# for it (labels are their ModelNet40 indices).
MOCK_CLASSES = (('bowl', 'torus'), ('cone', 'cone'), ('cup', 'cylinder'),
                ('xbox', 'box'))


def write_mock_layout(root: str, *, train_per_class: int,
                      test_per_class: int, seed: int = 0) -> None:
  """Writes `root/ModelNet40/<class>/{train,test}/<class>_<nnnn>.off`, every
  other file with ModelNet's malformed header `OFF<V> <F> 0`."""
  index = {'train': 0, 'test': 0}
  for class_name, shape_name in MOCK_CLASSES:
    label = shapes.CLASS_NAMES.index(shape_name)
    for split, count in (('train', train_per_class), ('test', test_per_class)):
      folder = os.path.join(root, 'ModelNet40', class_name, split)
      os.makedirs(folder, exist_ok=True)
      for _ in range(count):
        i = index[split]
        index[split] += 1
        mesh = shapes.make_mesh(label, shapes.example_rng(seed, split, i))
        fused = i % 2 == 1
        path = os.path.join(folder, f'{class_name}_{i + 1:04d}.off')
        with open(path, 'w') as f:
          f.write(off_text(mesh.vertices, mesh.faces, fused_header=fused))


def off_text(vertices: np.ndarray, faces: np.ndarray, *,
             fused_header: bool = False) -> str:
  """OFF text of a triangle mesh; `fused_header` writes 'OFF<V> <F> 0'."""
  counts = f'{len(vertices)} {len(faces)} 0'
  lines = [f'OFF{counts}'] if fused_header else ['OFF', counts]
  lines += [f'{x:.6f} {y:.6f} {z:.6f}' for x, y, z in vertices]
  lines += [f'3 {a} {b} {c}' for a, b, c in faces]
  return '\n'.join(lines) + '\n'


@functools.lru_cache(maxsize=None)
def _mock_data_dir(train_per_class: int, test_per_class: int) -> str:
  """Builds the mock dataset once per process; returns its TFDS data dir."""
  root = tempfile.mkdtemp(prefix='modelnet40_mock_')
  atexit.register(shutil.rmtree, root, ignore_errors=True)
  manual_dir = os.path.join(root, 'manual')
  write_mock_layout(manual_dir, train_per_class=train_per_class,
                    test_per_class=test_per_class)
  data_dir = os.path.join(root, 'tfds')
  builder_lib.build(manual_dir, config='official', data_dir=data_dir)
  return data_dir


def _builder_args(config: ml_collections.ConfigDict
                  ) -> tuple[str, Optional[str]]:
  """(builder config name, TFDS data dir) that `config` reads."""
  if config.get('mock', False):
    return 'official', _mock_data_dir(
        int(config.get('mock_train_per_class', 8)),
        int(config.get('mock_test_per_class', 4)))
  return config.get('builder_config', 'official'), config.get('data_dir')


class DatasetNotPreparedError(FileNotFoundError):
  """`modelnet40/<config>` has not been built in the data dir."""


def _builder(config: ml_collections.ConfigDict) -> builder_lib.Modelnet40:
  """The prepared builder that `config` names; raises if it is not built."""
  builder_config, data_dir = _builder_args(config)
  builder = builder_lib.Modelnet40(config=builder_config, data_dir=data_dir)
  if not builder.is_prepared():
    raise DatasetNotPreparedError(
        f'ModelNet40 (TFDS modelnet40/{builder_config}) is not prepared in '
        f'{builder.data_dir}. TFDS cannot download it; download '
        f'{builder_lib.ROOT_NAMES[builder_config]}.zip into a folder DIR '
        '(ModelNet40.zip: https://modelnet.cs.princeton.edu/) and run\n'
        '  python -m perceiver_jax.data.modelnet40 --manual_dir=DIR '
        f'--config={builder_config}'
        + (f' --data_dir={data_dir}' if data_dir else '') +
        '\nor try the pipeline on generated meshes with '
        '--config=configs/modelnet40.py:runlocal,mock.')
  return builder


def _check_split(split: str) -> None:
  if split not in SPLITS:
    raise ValueError(f'ModelNet40 has splits {SPLITS}, got {split!r}.')


def num_examples(split: str, config: ml_collections.ConfigDict) -> int:
  """Examples in the whole prepared split (all hosts; skipped files not)."""
  _check_split(split)
  return _builder(config).info.splits[split].num_examples


@functools.lru_cache(maxsize=4)
def _read_shard(builder_config: str, data_dir: Optional[str], split: str,
                process_index: int, process_count: int
                ) -> tuple[np.ndarray, np.ndarray]:
  """This host's shard of a split: points `[n, P, 3]`, labels `[n]`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')  # Keep TF off JAX's GPUs.
  builder = builder_lib.Modelnet40(config=builder_config, data_dir=data_dir)
  total = builder.info.splits[split].num_examples
  shard = in_memory.host_shard(total, process_index, process_count)
  # Contiguous shards in the split's stored (deterministic) order.
  ds = builder.as_dataset(split=f'{split}[{shard.start}:{shard.stop}]',
                          shuffle_files=False)
  points, labels = [], []
  for batch in ds.batch(1024).as_numpy_iterator():
    points.append(batch['points'])
    labels.append(batch['label'].astype(np.int32))
  num_points = builder.builder_config.num_points
  if not points:
    return np.zeros((0, num_points, 3), np.float32), np.zeros((0,), np.int32)
  return np.concatenate(points), np.concatenate(labels)


def load(split: str, *, is_training: bool, batch_dims: Sequence[int],
         config: ml_collections.ConfigDict, seed: int = 0,
         start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
  """'points' `[*batch_dims, P, 3]`, 'label' and 'mask' batches (data API);
  training scales points in `config.scale_range`, then re-normalises."""
  _check_split(split)
  builder_config, data_dir = _builder_args(config)
  builder = _builder(config)
  process_index, process_count = jax.process_index(), jax.process_count()
  points, labels = _read_shard(builder_config, data_dir, split,
                               process_index, process_count)
  stored = builder.builder_config.num_points
  num_points = int(config.get('num_points', stored))
  if not 1 <= num_points <= stored:
    raise ValueError(f'config.num_points must be in [1, {stored}] (the '
                     f'points stored per shape), got {num_points}.')
  if num_points < stored:
    points = pointcloud.normalize(points[:, :num_points])
  if is_training and len(labels) == 0:
    raise ValueError(f'No {split} examples for process {process_index}.')
  return in_memory.shard_batches(
      {'points': points, 'label': labels},
      total_examples=builder.info.splits[split].num_examples,
      is_training=is_training, batch_dims=batch_dims, seed=seed,
      start_step=start_step, process_index=process_index,
      process_count=process_count,
      augment=pointcloud.scale_augmentation(tuple(config.get(
          'scale_range', pointcloud.DEFAULT_SCALE_RANGE))))


def main(argv: list[str]) -> None:
  """Prepares ModelNet40 with the builder and prints its report."""
  del argv
  f = flags.FLAGS
  if not os.path.isdir(os.path.expanduser(f.manual_dir)):
    raise cli.UsageError(
        f'--manual_dir={f.manual_dir} is not a directory; give the folder '
        f'holding {builder_lib.ROOT_NAMES[f.config]}.zip or its extracted '
        'folder (https://modelnet.cs.princeton.edu/).')
  # The builder counts the meshes with an ETA; TFDS's bars would share its
  # line.
  builder_lib.tfds.disable_progress_bar()
  if not f['verbosity'].present:
    # TFDS's INFO lines; skipped files are still reported (WARNING).
    logging.set_verbosity(logging.WARNING)
  builder = builder_lib.build(f.manual_dir, config=f.config,
                              data_dir=f.data_dir, num_workers=f.num_workers)
  print(json.dumps(builder_lib.report(builder), indent=2))


if __name__ == '__main__':
  flags.DEFINE_string('manual_dir', None, 'Folder holding the download.',
                      required=True)
  flags.DEFINE_enum('config', 'official', sorted(builder_lib.ROOT_NAMES),
                    'Which distribution to read.')
  flags.DEFINE_string('data_dir', None, "TFDS data dir (default: TFDS's).")
  flags.DEFINE_integer('num_workers', os.cpu_count() or 1,
                       'Processes that read and sample meshes.')
  cli.run(main)
