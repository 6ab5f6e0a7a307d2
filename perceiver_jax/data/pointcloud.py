"""Point clouds from meshes: OFF reading, surface sampling, normalisation.

Shared by the ModelNet40 builder and the embedded shapes dataset, so both
give the model point clouds made the same way (docs/paper.md section 4):

1. `read_off`: a mesh from OFF text, tolerant of ModelNet's malformed
   headers (the keyword fused with the counts: `OFF490 518 0`).
2. `sample_surface`: points drawn uniformly over the surface (faces chosen
   with probability proportional to their area), seeded.
3. `normalize`: zero-centred (the mean of the points moves to the origin)
   and scaled isotropically so that the largest |coordinate| is 1: the cloud
   lies in the cube [-1, 1]^3 and touches it. Why these two choices: the
   mean is what "zero-centred" says, and it is stable under the per-point
   scaling augmentation (a bounding-box centre follows the few extreme
   points); [-1, 1] is the range the Fourier features assume (their lowest
   band spans it once), and one scale for all axes keeps the shape's
   proportions, which carry the class.
4. `augment_scale`: the paper's training augmentation, a random scale in
   [0.99, 1.01] per point, then re-centring and re-normalising.
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
  """Reads a mesh in OFF format.

  Accepts the standard header (`OFF` on its own line, counts on the next)
  and ModelNet's malformed one (`OFF` fused with the counts, e.g.
  `OFF490 518 0`), `#` comments and blank lines. Polygons with more than
  three vertices are split into triangle fans; anything after a face's
  vertex indices (per-face colours) is ignored.

  Args:
    source: the file's contents (bytes) or its path (str).

  Returns:
    The mesh, unprocessed (no vertex merging), float64 vertices `[V, 3]`
    and int64 triangle faces `[F, 3]`.

  Raises:
    MeshReadError: the text is not a readable OFF mesh with at least one
      face of positive area.
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
  """A stable 32-bit seed derived from a file's relative path.

  Python's `hash` changes between processes; SHA-256 does not, so a mesh
  gets the same points in every build.
  """
  digest = hashlib.sha256(relative_path.replace('\\', '/').encode('utf-8'))
  return int.from_bytes(digest.digest()[:4], 'little')


def sample_surface(mesh: trimesh.Trimesh, num_points: int,
                   seed: Union[int, np.random.Generator]) -> np.ndarray:
  """Area-weighted uniform samples of a mesh's surface.

  Args:
    mesh: a triangle mesh with positive area.
    num_points: P.
    seed: an integer seed or a numpy Generator (then advanced).

  Returns:
    float32 `[P, 3]` points, i.i.d. (so any prefix is also a uniform
    sample), not yet normalised.

  Raises:
    MeshReadError: the mesh has no area to sample from.
    ValueError: `num_points` is not a positive integer.
  """
  checks.positive_int(num_points, 'num_points',
                      integer_types=(int, np.integer))
  if len(mesh.faces) == 0 or not mesh.area > 0:
    raise MeshReadError('Cannot sample a mesh with zero surface area.')
  points, _ = trimesh.sample.sample_surface(mesh, int(num_points), seed=seed)
  return np.asarray(points, dtype=np.float32)


def normalize(points: np.ndarray) -> np.ndarray:
  """Zero-centres points (mean) and scales them so max |coordinate| is 1.

  Args:
    points: `[..., P, 3]` (any leading dims; each cloud on its own).

  Returns:
    float32 points of the same shape, each cloud's mean 0 and its largest
    absolute coordinate 1 (so inside [-1, 1]^3). A cloud of one repeated
    point (no extent) becomes all zeros rather than NaN.
  """
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
  """The paper's augmentation: per-point random scaling, then `normalize`.

  Each point is multiplied by its own factor drawn uniformly from
  `scale_range` (one factor for all three coordinates of a point, so it
  moves along the ray from the centre by at most 1%); the cloud is then
  re-centred and re-normalised into [-1, 1]^3.

  Args:
    points: `[..., P, 3]` normalised clouds.
    rng: the randomness (advanced).
    scale_range: (low, high), 0 < low <= high.

  Returns:
    float32 `[..., P, 3]`.
  """
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
