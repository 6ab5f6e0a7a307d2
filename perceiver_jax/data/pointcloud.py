"""Point clouds from meshes: OFF reading, surface sampling, normalisation.

Shared by the ModelNet40 builder and the shapes dataset (docs/paper.md
section 4). `normalize` centres on the mean (stable under the per-point
scaling augmentation, unlike a bounding-box centre) and scales all axes
alike into [-1, 1]^3, the range the Fourier features assume, keeping the
proportions that carry the class.
"""

import hashlib
import re
from typing import Union

import numpy as np
import trimesh

from perceiver_jax import checks

# Default points per example: the paper's "about 2,000", rounded to a power
# of two (any prefix of an i.i.d. sample is itself one, so loaders may use
# fewer).
DEFAULT_NUM_POINTS = 2048
DEFAULT_SCALE_RANGE = (0.99, 1.01)

# 'OFF', optionally fused with the first counts: 'OFF', 'OFF490 518 0'.
_OFF_HEADER = re.compile(rb'^\s*OFF(?=\s|$|[0-9+-])(.*)$')


class MeshReadError(ValueError):
  """A mesh file that cannot be read or sampled (malformed or degenerate)."""


def _strip_comments(line: bytes) -> bytes:
  return line.split(b'#', 1)[0].strip()


def read_off(source: Union[str, bytes]) -> trimesh.Trimesh:
  """An unprocessed triangle mesh from OFF bytes or a path.

  Also reads ModelNet's malformed header (`OFF490 518 0`); polygons become
  triangle fans, per-face colours are ignored. Raises MeshReadError unless
  the mesh has positive area.
  """
  if isinstance(source, str):
    try:
      with open(source, 'rb') as f:
        source = f.read()
    except OSError as e:
      raise MeshReadError(f'Cannot open OFF file {source!r}: {e}') from e
  lines = [_strip_comments(l) for l in source.splitlines()]
  lines = [l for l in lines if l]
  if not lines:
    raise MeshReadError('Empty OFF file.')
  match = _OFF_HEADER.match(lines[0])
  if not match:
    raise MeshReadError(
        f'Not an OFF file: first line {lines[0][:40]!r} lacks the OFF '
        'keyword.')
  rest = match.group(1).strip()
  body = lines[1:]
  if not rest:  # Standard header: the counts are on the next line.
    if not body:
      raise MeshReadError('OFF file ends after its header.')
    rest, body = body[0], body[1:]
  try:
    counts = [int(t) for t in rest.split()]
  except ValueError as e:
    raise MeshReadError(f'Bad OFF counts line {rest[:40]!r}.') from e
  if len(counts) < 2 or counts[0] < 3 or counts[1] < 1:
    raise MeshReadError(
        f'OFF counts {counts} need at least 3 vertices and 1 face.')
  num_vertices, num_faces = counts[0], counts[1]
  if len(body) < num_vertices + num_faces:
    raise MeshReadError(
        f'OFF file declares {num_vertices} vertices and {num_faces} faces '
        f'but has only {len(body)} data lines.')
  try:
    vertices = np.array(
        [l.split()[:3] for l in body[:num_vertices]], dtype=np.float64)
  except ValueError as e:
    raise MeshReadError(f'Bad OFF vertex line: {e}') from e
  if vertices.shape != (num_vertices, 3) or not np.all(np.isfinite(vertices)):
    raise MeshReadError('OFF vertices must be 3 finite numbers per line.')
  faces = _parse_faces(body[num_vertices:num_vertices + num_faces],
                       num_vertices)
  mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=False)
  if not mesh.area > 0:
    raise MeshReadError('OFF mesh has zero surface area.')
  return mesh


def _parse_faces(lines: list[bytes], num_vertices: int) -> np.ndarray:
  """Triangles `[F', 3]` from OFF face lines `n i_1 ... i_n [colour]`."""
  # Fast path: every line is exactly '3 a b c' (almost all of ModelNet).
  try:
    table = np.array([l.split() for l in lines], dtype=np.int64)
  except ValueError:  # Ragged (mixed polygons, colours) or not integers.
    table = None
  if table is not None and table.ndim == 2 and table.shape[1] == 4 and (
      np.all(table[:, 0] == 3)):
    faces = table[:, 1:]
  else:
    triangles = []
    for line in lines:
      tokens = line.split()
      try:
        n = int(tokens[0])
        index = [int(t) for t in tokens[1:n + 1]]
      except (ValueError, IndexError) as e:
        raise MeshReadError(f'Bad OFF face line {line[:40]!r}.') from e
      if n < 3 or len(index) != n:
        raise MeshReadError(f'Bad OFF face line {line[:40]!r}.')
      triangles.extend(
          (index[0], index[k], index[k + 1]) for k in range(1, n - 1))
    faces = np.array(triangles, dtype=np.int64).reshape(-1, 3)
  if faces.size and (faces.min() < 0 or faces.max() >= num_vertices):
    raise MeshReadError(
        f'OFF face indices must lie in [0, {num_vertices}), got '
        f'[{faces.min()}, {faces.max()}].')
  return faces


def path_seed(relative_path: str) -> int:
  """A 32-bit seed of a relative path, the same in every process (SHA-256)."""
  digest = hashlib.sha256(relative_path.replace('\\', '/').encode('utf-8'))
  return int.from_bytes(digest.digest()[:4], 'little')


def sample_surface(mesh: trimesh.Trimesh, num_points: int,
                   seed: Union[int, np.random.Generator]) -> np.ndarray:
  """`[P, 3]` i.i.d. area-weighted surface samples (any prefix is one too)."""
  checks.positive_int(num_points, 'num_points',
                      integer_types=(int, np.integer))
  if len(mesh.faces) == 0 or not mesh.area > 0:
    raise MeshReadError('Cannot sample a mesh with zero surface area.')
  points, _ = trimesh.sample.sample_surface(mesh, int(num_points), seed=seed)
  return np.asarray(points, dtype=np.float32)


def normalize(points: np.ndarray) -> np.ndarray:
  """Each cloud of `[..., P, 3]` centred on its mean, max |coordinate| 1
  (a cloud without extent becomes zeros)."""
  points = np.asarray(points, dtype=np.float64)
  if points.ndim < 2 or points.shape[-1] != 3:
    raise ValueError(f'points must have shape [..., P, 3], got '
                     f'{points.shape}.')
  centred = points - points.mean(axis=-2, keepdims=True)
  scale = np.abs(centred).max(axis=(-2, -1), keepdims=True)
  scale = np.where(scale > 0, scale, 1.0)
  return (centred / scale).astype(np.float32)


def augment_scale(points: np.ndarray, rng: np.random.Generator,
                  scale_range: tuple[float, float] = DEFAULT_SCALE_RANGE
                  ) -> np.ndarray:
  """The paper's augmentation: each point of `[..., P, 3]` scaled by its own
  factor in `scale_range`, then `normalize`d."""
  low, high = (float(s) for s in scale_range)
  if not 0 < low <= high:
    raise ValueError(f'scale_range must satisfy 0 < low <= high, got '
                     f'{scale_range!r}.')
  points = np.asarray(points, dtype=np.float32)
  factors = rng.uniform(low, high, size=points.shape[:-1] + (1,))
  return normalize(points * factors)


def scale_augmentation(scale_range: tuple[float, float] = DEFAULT_SCALE_RANGE):
  """`augment(batch, rng)` applying `augment_scale` to `batch['points']`."""

  def augment(batch: dict[str, np.ndarray], rng: np.random.Generator
              ) -> dict[str, np.ndarray]:
    batch['points'] = augment_scale(batch['points'], rng, scale_range)
    return batch

  return augment


def mesh_to_points(mesh: trimesh.Trimesh, num_points: int,
                   seed: Union[int, np.random.Generator]) -> np.ndarray:
  """`normalize(sample_surface(mesh, num_points, seed))`: float32 `[P, 3]`."""
  return normalize(sample_surface(mesh, num_points, seed))
