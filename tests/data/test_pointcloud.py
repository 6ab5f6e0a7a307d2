"""Tests of perceiver_jax.data.pointcloud: OFF reading, sampling, scaling."""

import math

import numpy as np
import pytest
import trimesh

from perceiver_jax.data import pointcloud

# A unit square in the z = 0 plane as one quad (triangulated as a fan).
SQUARE_VERTICES = '0 0 0\n1 0 0\n1 1 0\n0 1 0\n'


def test_read_off_standard_header_with_comments_and_quads():
  text = ('OFF\n# a comment\n\n4 1 0\n' + SQUARE_VERTICES +
          '4 0 1 2 3 255 0 0\n').encode()
  mesh = pointcloud.read_off(text)
  np.testing.assert_array_equal(mesh.faces, [[0, 1, 2], [0, 2, 3]])
  assert mesh.vertices.shape == (4, 3)
  assert mesh.area == pytest.approx(1.0)


def test_read_off_fused_header():
  # ModelNet's malformed header: the keyword fused with the counts.
  text = ('OFF4 2 0\n' + SQUARE_VERTICES + '3 0 1 2\n3 0 2 3\n').encode()
  mesh = pointcloud.read_off(text)
  np.testing.assert_array_equal(mesh.faces, [[0, 1, 2], [0, 2, 3]])
  np.testing.assert_array_equal(mesh.vertices[2], [1, 1, 0])
  assert mesh.area == pytest.approx(1.0)


def test_read_off_from_path(tmp_path):
  path = tmp_path / 'square.off'
  path.write_text('OFF\n4 2 0\n' + SQUARE_VERTICES + '3 0 1 2\n3 0 2 3\n')
  assert pointcloud.read_off(str(path)).area == pytest.approx(1.0)


@pytest.mark.parametrize('text, message', [
    ('', 'Empty'),
    ('PLY\n4 2 0\n', 'lacks the OFF'),
    ('OFF\n', 'ends after'),
    ('OFF\nfour two zero\n', 'counts'),
    ('OFF\n4 2 0\n' + SQUARE_VERTICES + '3 0 1 2\n', 'only'),
    ('OFF\n4 1 0\n' + SQUARE_VERTICES + '3 0 1 9\n', 'indices'),
    ('OFF\n4 1 0\n0 0 0\n1 0 x\n1 1 0\n0 1 0\n3 0 1 2\n', 'vertex'),
    ('OFF\n3 1 0\n0 0 0\n1 0 0\n2 0 0\n3 0 1 2\n', 'zero surface'),
    ('OFF\n4 1 0\n' + SQUARE_VERTICES + '2 0 1\n', 'face line'),
])
def test_read_off_rejects_broken_files(text, message):
  with pytest.raises(pointcloud.MeshReadError, match=message):
    pointcloud.read_off(text.encode())


def test_mesh_read_error_for_missing_file(tmp_path):
  with pytest.raises(pointcloud.MeshReadError, match='Cannot open'):
    pointcloud.read_off(str(tmp_path / 'missing.off'))


def test_sample_surface_is_deterministic_per_seed():
  mesh = trimesh.creation.box(extents=(1.0, 2.0, 3.0))
  a = pointcloud.sample_surface(mesh, 500, seed=7)
  b = pointcloud.sample_surface(mesh, 500, seed=7)
  c = pointcloud.sample_surface(mesh, 500, seed=8)
  assert a.shape == (500, 3) and a.dtype == np.float32
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_sample_surface_points_lie_on_the_box_faces():
  mesh = trimesh.creation.box(extents=(1.0, 2.0, 3.0))
  points = pointcloud.sample_surface(mesh, 2000, seed=0)
  half = np.array([0.5, 1.0, 1.5])
  # Inside the box, and on one of its faces.
  assert np.all(np.abs(points) <= half + 1e-5)
  assert np.all(np.any(np.abs(np.abs(points) - half) < 1e-5, axis=1))


def test_sample_surface_is_area_weighted():
  # Two separate triangles of areas 1 and 3 (in the planes z=0 and z=10).
  vertices = np.array([[0, 0, 0], [2, 0, 0], [0, 1, 0],
                       [0, 0, 10], [3, 0, 10], [0, 2, 10]], np.float64)
  mesh = trimesh.Trimesh(vertices, [[0, 1, 2], [3, 4, 5]], process=False)
  points = pointcloud.sample_surface(mesh, 20000, seed=0)
  fraction_upper = np.mean(points[:, 2] > 5)
  # Binomial std at n=20000, p=0.75 is 0.003.
  assert fraction_upper == pytest.approx(0.75, abs=0.015)


def test_sample_surface_rejects_bad_counts():
  mesh = trimesh.creation.box()
  with pytest.raises(ValueError, match='num_points'):
    pointcloud.sample_surface(mesh, 0, seed=0)


def test_normalize_hand_computed():
  points = np.array([[0, 0, 0], [2, 0, 0], [4, 4, 0]], np.float32)
  # Mean (2, 4/3, 0); centred (-2, -4/3, 0), (0, -4/3, 0), (2, 8/3, 0);
  # the largest |coordinate| is 8/3.
  expected = np.array([[-0.75, -0.5, 0], [0, -0.5, 0], [0.75, 1, 0]])
  np.testing.assert_allclose(pointcloud.normalize(points), expected,
                             atol=1e-6)


def test_normalize_batched_and_degenerate():
  rng = np.random.default_rng(0)
  clouds = rng.normal(size=(4, 100, 3)) * [1, 5, 2] + [10, -3, 7]
  out = pointcloud.normalize(clouds)
  np.testing.assert_allclose(out.mean(axis=1), 0, atol=1e-6)
  np.testing.assert_allclose(np.abs(out).max(axis=(1, 2)), 1, atol=1e-6)
  # Isotropic: ratios of extents preserved.
  extent_in = np.ptp(clouds, axis=1)
  extent_out = np.ptp(out, axis=1)
  np.testing.assert_allclose(extent_out / extent_out[:, :1],
                             extent_in / extent_in[:, :1], rtol=1e-5)
  np.testing.assert_array_equal(pointcloud.normalize(np.ones((5, 3))), 0)
  with pytest.raises(ValueError, match='shape'):
    pointcloud.normalize(np.zeros((5, 2)))


def test_augment_scale_bounds():
  rng = np.random.default_rng(1)
  clouds = pointcloud.normalize(rng.normal(size=(8, 1000, 3)))
  out = pointcloud.augment_scale(clouds, np.random.default_rng(2))
  assert out.shape == clouds.shape and out.dtype == np.float32
  # Re-centred and re-normalised.
  np.testing.assert_allclose(out.mean(axis=1), 0, atol=1e-6)
  np.testing.assert_allclose(np.abs(out).max(axis=(1, 2)), 1, atol=1e-6)
  # Each point moved by at most ~1% of its radius plus the re-centring and
  # re-scaling (also about 1%): well under 5% of the unit cube.
  assert np.abs(out - clouds).max() < 0.05
  assert np.abs(out - clouds).max() > 1e-4  # It did change the points.
  # Per-point factors: away from the centre (where the small shared
  # re-centring does not matter), radii change by the point's own factor
  # times one shared re-scaling, so their ratios spread over ~2%.
  radius = np.linalg.norm(clouds, axis=-1)
  ratio = np.linalg.norm(out, axis=-1) / radius
  spread = (ratio / np.median(ratio, axis=1, keepdims=True))[radius > 0.3]
  assert spread.min() > 0.975 and spread.max() < 1.025
  assert spread.max() - spread.min() > 0.01  # Factors differ per point.


def test_augment_scale_is_seeded_and_identity_at_unit_range():
  rng = np.random.default_rng(3)
  cloud = pointcloud.normalize(rng.normal(size=(200, 3)))
  a = pointcloud.augment_scale(cloud, np.random.default_rng(5))
  b = pointcloud.augment_scale(cloud, np.random.default_rng(5))
  np.testing.assert_array_equal(a, b)
  same = pointcloud.augment_scale(cloud, np.random.default_rng(5), (1., 1.))
  np.testing.assert_allclose(same, cloud, atol=1e-6)
  with pytest.raises(ValueError, match='scale_range'):
    pointcloud.augment_scale(cloud, rng, (1.01, 0.99))


def test_path_seed_is_stable_and_separator_independent():
  seed = pointcloud.path_seed('chair/train/chair_0001.off')
  assert seed == pointcloud.path_seed('chair\\train\\chair_0001.off')
  assert seed != pointcloud.path_seed('chair/train/chair_0002.off')
  assert 0 <= seed < 2**32


def test_mesh_to_points_normalised():
  mesh = trimesh.creation.cylinder(radius=0.2, height=5.0)
  points = pointcloud.mesh_to_points(mesh, 300, seed=0)
  assert points.shape == (300, 3)
  assert np.abs(points).max() == pytest.approx(1.0)
  np.testing.assert_allclose(points.mean(axis=0), 0, atol=1e-6)
  # The long axis (z) spans about [-1, 1]; the radius is 0.2 / 2.5 = 0.08.
  assert math.isclose(np.ptp(points[:, 2]), 2.0, abs_tol=0.02)
  assert np.abs(points[:, :2]).max() < 0.1
