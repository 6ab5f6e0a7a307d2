"""Embedded point clouds: procedurally generated 3-D primitives.

Each example is one of `CLASSES` as a mesh with random proportions, a
random stretch, size and rotation, point-sampled as ModelNet40 is
(`pointcloud.mesh_to_points`). Proportions make classes overlap in outline,
so the model must learn surface structure. `config.rotation`: 'z' keeps
shapes upright (as ModelNet40's aligned models), 'so3' rotates them
anywhere. Example i of a split depends on (seed, split, i) only; its class
is `i % num_classes`.
"""

import functools
import math
from typing import Callable, Iterator, Sequence

import jax
import ml_collections
import numpy as np
import trimesh

from perceiver_jax.data import in_memory
from perceiver_jax.data import pointcloud

SPLITS = ('train', 'test')


def _tetrahedron() -> trimesh.Trimesh:
  vertices = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]],
                      np.float64)
  faces = np.array([[0, 1, 2], [0, 3, 1], [0, 2, 3], [1, 3, 2]])
  return trimesh.Trimesh(vertices, faces, process=False)


def _octahedron() -> trimesh.Trimesh:
  vertices = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0],
                       [0, 0, 1], [0, 0, -1]], np.float64)
  faces = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4],
                    [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
  return trimesh.Trimesh(vertices, faces, process=False)


def _dome() -> trimesh.Trimesh:
  """A closed hemisphere: unit radius, flat base at z = 0, top at z = 1."""
  angles = np.linspace(0.0, np.pi / 2, 9)
  # (radius, z) profile from the base centre out to the rim and over the
  # arc to the top, revolved about z.
  profile = np.concatenate([[[0.0, 0.0]],
                            np.stack([np.cos(angles), np.sin(angles)], -1)[:-1],
                            [[0.0, 1.0]]])
  return trimesh.creation.revolve(profile, sections=32)


def _prism() -> trimesh.Trimesh:
  """A prism on an equilateral triangle, z in [-1, 1]."""
  angles = np.pi / 2 + 2 * np.pi * np.arange(3) / 3
  ring = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
  vertices = np.concatenate([np.c_[ring, -np.ones(3)], np.c_[ring, np.ones(3)]])
  faces = np.array([[0, 2, 1], [3, 4, 5], [0, 1, 4], [0, 4, 3], [1, 2, 5],
                    [1, 5, 4], [2, 0, 3], [2, 3, 5]])
  return trimesh.Trimesh(vertices, faces, process=False)


# Unit meshes that a per-axis scaling turns into every instance. The cone
# has its base at z = 0 and its apex at z = 2 (trimesh's convention).
_TEMPLATES = {
    'sphere': lambda: trimesh.creation.icosphere(subdivisions=2),
    'box': lambda: trimesh.creation.box(extents=(2.0, 2.0, 2.0)),
    'cylinder': lambda: trimesh.creation.cylinder(radius=1.0, height=2.0,
                                                  sections=32),
    'cone': lambda: trimesh.creation.cone(radius=1.0, height=2.0,
                                          sections=32),
    'tetrahedron': _tetrahedron,
    'octahedron': _octahedron,
    'dome': _dome,
    'prism': _prism,
}


@functools.cache
def _template(name: str) -> trimesh.Trimesh:
  return _TEMPLATES[name]()


def _scaled(name: str, scale: Sequence[float]) -> trimesh.Trimesh:
  template = _template(name)
  return trimesh.Trimesh(template.vertices * np.asarray(scale),
                         template.faces, process=False)


# Each builder draws one instance's class-specific proportions from `rng`
# and returns its mesh (before the shared stretch, size and rotation).
Builder = Callable[[np.random.Generator], trimesh.Trimesh]


def _fixed(name: str) -> Builder:
  """The template as it is (its variation is the shared stretch alone)."""
  return lambda rng: _template(name)


def _stretched(name: str, low: float, high: float, log: bool = True
               ) -> Builder:
  """The template stretched along z by a factor in [low, high], drawn
  log-uniformly (or uniformly): disc to rod, flat cap to tall dome."""
  def build(rng):
    z = (math.exp(rng.uniform(math.log(low), math.log(high))) if log
         else rng.uniform(low, high))
    return _scaled(name, (1.0, 1.0, z))
  return build


def _box(rng):
  return _scaled('box', rng.uniform(0.25, 1.0, size=3))


def _torus(rng):
  minor = rng.uniform(0.15, 0.45)  # Tube radius / ring radius.
  return trimesh.creation.torus(major_radius=1.0, minor_radius=minor,
                                major_sections=24, minor_sections=12)


def _capsule(rng):
  # Straight part between 0.5 and 3 radii long.
  return trimesh.creation.capsule(height=rng.uniform(0.5, 3.0), radius=1.0,
                                  count=(16, 8))


# Class index -> (name, builder). Order is part of the dataset's definition.
CLASSES: tuple[tuple[str, Builder], ...] = (
    ('sphere', _fixed('sphere')),
    ('box', _box),
    ('cylinder', _stretched('cylinder', 0.4, 2.5)),
    ('cone', _stretched('cone', 0.4, 2.5)),
    ('torus', _torus),
    ('capsule', _capsule),
    ('tetrahedron', _fixed('tetrahedron')),
    ('octahedron', _fixed('octahedron')),
    ('dome', _stretched('dome', 0.5, 1.5, log=False)),
    ('prism', _stretched('prism', 0.3, 2.5)),
)
CLASS_NAMES = tuple(name for name, _ in CLASSES)
# Up to this much random extra stretch per axis (log-uniform in [1/s, s]).
MAX_STRETCH = 1.2
ROTATIONS = ('z', 'so3')


def random_rotation(rng: np.random.Generator) -> np.ndarray:
  """A rotation matrix `[3, 3]` uniform over SO(3) (a unit quaternion)."""
  q = rng.standard_normal(4)
  w, x, y, z = q / np.linalg.norm(q)
  return np.array([
      [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
      [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
      [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def random_yaw(rng: np.random.Generator) -> np.ndarray:
  """A rotation matrix `[3, 3]` about the z axis by a uniform angle."""
  angle = rng.uniform(0.0, 2.0 * np.pi)
  c, s = np.cos(angle), np.sin(angle)
  return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def make_mesh(label: int, rng: np.random.Generator,
              rotation: str = 'z') -> trimesh.Trimesh:
  """One random instance of class `label`; `rotation` 'z' or 'so3'."""
  if not 0 <= label < len(CLASSES):
    raise ValueError(f'label must be in [0, {len(CLASSES)}), got {label}.')
  if rotation not in ROTATIONS:
    raise ValueError(f'rotation must be one of {ROTATIONS}, got '
                     f'{rotation!r}.')
  mesh = CLASSES[label][1](rng)
  stretch = np.exp(rng.uniform(-math.log(MAX_STRETCH), math.log(MAX_STRETCH),
                               size=3))
  size = rng.uniform(0.5, 2.0)
  turn = random_yaw(rng) if rotation == 'z' else random_rotation(rng)
  transform = turn @ np.diag(stretch * size)
  return trimesh.Trimesh(mesh.vertices @ transform.T, mesh.faces,
                         process=False)


def example_rng(seed: int, split: str, index: int) -> np.random.Generator:
  """The generator of example `index` of `split`: one stream per example."""
  return np.random.default_rng([seed, SPLITS.index(split), index])


def generate(split: str, num_examples: int, *, num_points: int,
             num_classes: int = len(CLASSES), seed: int = 0,
             rotation: str = 'z') -> tuple[np.ndarray, np.ndarray]:
  """Points float32 `[n, P, 3]` (mean 0, in [-1, 1]^3) and labels int32 `[n]`
  of a split, from the first `num_classes` of `CLASSES`."""
  if split not in SPLITS:
    raise ValueError(f'split must be one of {SPLITS}, got {split!r}.')
  if not 1 <= num_classes <= len(CLASSES):
    raise ValueError(f'num_classes must be in [1, {len(CLASSES)}], got '
                     f'{num_classes}.')
  if num_examples < 0:
    raise ValueError(f'num_examples must be >= 0, got {num_examples}.')
  points = np.empty((num_examples, num_points, 3), np.float32)
  labels = np.arange(num_examples, dtype=np.int32) % num_classes
  for i in range(num_examples):
    rng = example_rng(seed, split, i)
    mesh = make_mesh(int(labels[i]), rng, rotation)
    points[i] = pointcloud.mesh_to_points(mesh, num_points, rng)
  return points, labels


def num_examples(split: str, config: ml_collections.ConfigDict) -> int:
  """Examples in the whole split (all hosts)."""
  if split == 'train':
    return int(config.num_train_examples)
  if split == 'test':
    return int(config.num_test_examples)
  raise ValueError(f'shapes has splits {SPLITS}, got {split!r}.')


@functools.lru_cache(maxsize=4)
def _cached_split(split: str, num_examples: int, num_points: int,
                  num_classes: int, seed: int, rotation: str
                  ) -> tuple[np.ndarray, np.ndarray]:
  points, labels = generate(split, num_examples, num_points=num_points,
                            num_classes=num_classes, seed=seed,
                            rotation=rotation)
  points.flags.writeable = False  # Shared by every loader of this process.
  labels.flags.writeable = False
  return points, labels


def load(split: str, *, is_training: bool, batch_dims: Sequence[int],
         config: ml_collections.ConfigDict, seed: int = 0,
         start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
  """'points' `[*batch_dims, P, 3]`, 'label' and 'mask' batches (data API);
  training scales points in `config.scale_range`."""
  total = num_examples(split, config)
  points, labels = _cached_split(split, total, int(config.num_points),
                                 int(config.num_classes),
                                 int(config.split_seed),
                                 config.get('rotation', 'z'))
  process_index, process_count = jax.process_index(), jax.process_count()
  shard = in_memory.host_shard(total, process_index, process_count)
  return in_memory.shard_batches(
      {'points': points[shard], 'label': labels[shard]},
      total_examples=total, is_training=is_training, batch_dims=batch_dims,
      seed=seed, start_step=start_step, process_index=process_index,
      process_count=process_count,
      augment=pointcloud.scale_augmentation(tuple(config.get(
          'scale_range', pointcloud.DEFAULT_SCALE_RANGE))))
