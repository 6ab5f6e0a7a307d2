"""Tests of the point-cloud adapter, its factory entry and the configs."""

import math

import haiku as hk
import jax
import numpy as np
import pytest

from configs import modelnet40 as modelnet40_config
from configs import shapes as shapes_config
from perceiver_jax.data import shapes
from perceiver_jax.model import adapters
from perceiver_jax.model import factory


def _apply_adapter(points, **kwargs):
  def forward(x):
    adapter = adapters.PointCloudAdapter(**kwargs)
    return adapter(x), adapter.num_channels
  transformed = hk.without_apply_rng(hk.transform(forward))
  params = transformed.init(None, points)
  assert not params  # Fixed features: nothing to learn.
  return transformed.apply(params, points)


def test_paper_channel_count():
  out, channels = _apply_adapter(np.zeros((2, 5, 3), np.float32))
  assert channels == 3 * (2 * 64 + 1) == 387
  assert out.shape == (2, 5, 387)


def test_hand_computed_features():
  # K = 2, mu = 4: frequencies linspace(1, 2, 2) = [1, 2] on every axis.
  point = np.array([[[0.5, -0.25, 1.0]]], np.float32)
  out, channels = _apply_adapter(point, num_bands=2,
                                 max_resolution=(4, 4, 4))
  h = math.sqrt(0.5)
  expected = [
      0.5, -0.25, 1.0,  # The coordinates.
      # sin(pi f x): x bands, y bands, z bands.
      1.0, 0.0, -h, -1.0, 0.0, 0.0,
      # cos(pi f x).
      0.0, -1.0, h, 0.0, -1.0, 1.0,
  ]
  assert channels == 15
  np.testing.assert_allclose(np.asarray(out)[0, 0], expected, atol=1e-6)


def test_paper_highest_frequency_is_1120():
  # x = 1/2240: the top band (f = 1120) is at a quarter period, sin = 1;
  # the lowest (f = 1) gives sin(pi / 2240).
  x = 1.0 / 2240.0
  out, _ = _apply_adapter(np.array([[[x, 0.0, 0.0]]], np.float32))
  out = np.asarray(out)[0, 0]
  sines = out[3:3 + 3 * 64]
  assert sines[63] == pytest.approx(1.0, abs=1e-5)
  assert sines[0] == pytest.approx(math.sin(math.pi / 2240), rel=1e-4)
  # Band 2 of 64: f = 1 + 1119 / 63.
  assert sines[1] == pytest.approx(
      math.sin(math.pi * (1 + 1119 / 63) * x), rel=1e-4)
  np.testing.assert_allclose(sines[64:], 0.0, atol=1e-7)  # y = z = 0.


def test_adapter_rejects_bad_shapes_and_settings():
  with pytest.raises(ValueError, match='num_points, 3'):
    _apply_adapter(np.zeros((2, 5, 2), np.float32))
  with pytest.raises(ValueError, match='num_bands'):
    _apply_adapter(np.zeros((1, 1, 3), np.float32), num_bands=0)
  with pytest.raises(ValueError, match='max_resolution'):
    _apply_adapter(np.zeros((1, 1, 3), np.float32), max_resolution=(8, 8))


def _model(config):
  return hk.transform(factory.classifier_forward(config.model,
                                                 config.data.num_classes))


def test_shapes_config_forward_on_a_real_batch_is_order_invariant():
  config = shapes_config.get_config('runlocal')
  batch = next(shapes.load('train', is_training=True, batch_dims=[4],
                           config=config.data))
  model = _model(config)
  params = model.init(jax.random.PRNGKey(0), batch, is_training=True)
  assert 'point_cloud_adapter' not in str(list(params))  # No parameters.
  # The zero-initialised head gives zero logits; perturb it to test more.
  params = jax.tree.map(lambda p: p + 0.01, params)
  logits = model.apply(params, None, batch, is_training=False)
  assert logits.shape == (4, config.data.num_classes)
  assert np.all(np.isfinite(logits))
  shuffled = dict(batch)
  order = np.random.default_rng(0).permutation(config.data.num_points)
  shuffled['points'] = batch['points'][:, order]
  np.testing.assert_allclose(
      model.apply(params, None, shuffled, is_training=False), logits,
      rtol=1e-4, atol=1e-5)


def test_example_batch_initialises_the_modelnet40_model():
  config = modelnet40_config.get_config('runlocal,mock')
  shapes = factory.example_batch(config.model.input, 2)
  assert shapes['points'].shape == (2, config.data.num_points, 3)
  example = {k: np.zeros(v.shape, v.dtype) for k, v in shapes.items()}
  model = _model(config)
  params = model.init(jax.random.PRNGKey(0), example, is_training=True)
  logits = model.apply(params, None, example, is_training=False)
  assert logits.shape == (2, 40)
  with pytest.raises(ValueError, match='num_points must be positive'):
    factory.example_batch({'type': 'points', 'key': 'points'}, 2)


def test_configs_follow_the_paper():
  config = modelnet40_config.get_config('')
  assert config.task == 'modelnet40'
  assert config.model.encoder.num_cross_attends == 2
  assert config.model.encoder.num_self_attends_per_block == 6
  assert config.model.encoder.num_blocks == 8
  assert config.model.input.type == 'points'
  assert config.model.input.num_bands == 64
  assert tuple(config.model.input.max_resolution) == (2240.0,) * 3
  assert config.optimizer.name == 'lamb'
  assert config.optimizer.learning_rate == 1e-3
  assert config.optimizer.schedule == 'constant'
  assert config.train.batch_size == 512
  assert config.train.num_steps == 50_000
  assert not config.data.mock
  assert modelnet40_config.get_config('mock').data.mock
  # The model's num_points follows the data's.
  config.data.num_points = 1000
  assert config.model.input.num_points == 1000
  with pytest.raises(ValueError, match='variant'):
    modelnet40_config.get_config('variant=x')
  assert shapes_config.get_config('').task == 'shapes'
