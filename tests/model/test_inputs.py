"""Tests of perceiver_jax.model.inputs: every input type's byte array.

Grids, audio and video patches, modality fusion, point clouds and the
released classifiers' image preprocessors; values by hand or numpy.
"""

import math

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from configs import digits
from configs import modelnet40 as modelnet40_config
from configs import shapes as shapes_config
from perceiver_jax.data import shapes
from perceiver_jax.model import factory
from perceiver_jax.model import inputs
from perceiver_jax.model import position_encoding as pe
from perceiver_jax.train import optim
from tests.helpers.model_test_utils import jit
from tests.helpers.model_test_utils import random_params

# ---------------------------------------------------------------------------
# Grids.

def adapt(x, **kwargs):
  """Runs a GridAdapter over `x` `[B, *grid, C_raw]`: (params, byte array)."""
  f = hk.transform(lambda x: inputs.GridAdapter(x.shape[1:-1], **kwargs)(x))
  params = f.init(jax.random.PRNGKey(0), x)
  return params, np.asarray(f.apply(params, None, x))


def hand_fourier_3x2():
  """Fourier features of the 3x2 grid, K = 2, mu = (3, 2), by hand."""
  rows = []
  for x0 in (-1.0, 0.0, 1.0):
    for x1 in (-1.0, 1.0):  # Row-major: the last axis varies fastest.
      angles = [math.pi * 1.0 * x0, math.pi * 1.5 * x0,
                math.pi * 1.0 * x1, math.pi * 1.0 * x1]
      rows.append([x0, x1] + [math.sin(a) for a in angles] +
                  [math.cos(a) for a in angles])
  return np.array(rows)


def image(shape=(2, 3, 2, 3), seed=0):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_fourier_features_are_concatenated_after_the_raw_channels():
  x = image()
  params, out = adapt(x, num_bands=2)
  assert params == {}
  assert out.shape == (2, 6, 3 + 10)
  # Raw channels first, flattened row-major like the position features.
  np.testing.assert_array_equal(out[..., :3], x.reshape(2, 6, 3))
  for b in range(2):
    np.testing.assert_allclose(out[b, :, 3:], hand_fourier_3x2(), atol=1e-5)


def test_num_channels():
  f = hk.transform(lambda: (
      inputs.GridAdapter((224, 224)).num_channels(3),
      inputs.GridAdapter((8, 8), num_bands=4).num_channels(1),
      inputs.GridAdapter((5,), position_encoding='learned',
                           learned_position_channels=16).num_channels(2),
      inputs.GridAdapter((5,), position_encoding='none').num_channels(2)))
  assert f.apply({}, None) == (3 + 258, 1 + 2 * 9, 2 + 16, 2)


def test_permutation_moves_inputs_with_their_position_features():
  x = image()
  perm = np.array([4, 0, 5, 2, 1, 3])
  _, plain = adapt(x, num_bands=2)
  _, permuted = adapt(x, num_bands=2, permutation=perm)
  np.testing.assert_array_equal(permuted, plain[:, perm])
  # Position i of the output holds pixel perm[i] and that pixel's features.
  flat = x.reshape(2, 6, 3)
  for i, j in enumerate(perm):
    np.testing.assert_array_equal(permuted[:, i, :3], flat[:, j])
    np.testing.assert_allclose(permuted[:, i, 3:],
                               np.broadcast_to(hand_fourier_3x2()[j], (2, 10)),
                               atol=1e-5)


def test_learned_positions():
  x = image()
  params, out = adapt(x, position_encoding='learned',
                      learned_position_channels=5,
                      learned_position_init_scale=0.1)
  table = params['grid_adapter/learned_positions']['pos_embs']
  assert table.shape == (6, 5)
  assert 0 < np.abs(table).max() <= 0.2 + 1e-7
  assert out.shape == (2, 6, 3 + 5)
  np.testing.assert_array_equal(out[..., :3], x.reshape(2, 6, 3))
  np.testing.assert_array_equal(out[0, :, 3:], table)
  np.testing.assert_array_equal(out[1, :, 3:], table)


def test_no_position_encoding():
  x = image()
  _, out = adapt(x, position_encoding='none')
  np.testing.assert_array_equal(out, x.reshape(2, 6, 3))


@pytest.mark.parametrize('permutation, match', [
    (np.array([0, 1, 2, 3, 4]), r'range\(6\).*shape \(5,\)'),
    (np.array([0, 1, 2, 3, 4, 4]), r'range\(6\).*shape \(6,\)'),
    (np.array([[0, 1, 2], [3, 4, 5]]), r'shape \(2, 3\)'),
    (np.array([0., 1., 2., 3., 4., 5.]), 'float64'),
    (np.array([5, 4, 3, 2, 1, 6]), r'range\(6\)'),
])
def test_bad_permutations_raise(permutation, match):
  with pytest.raises(ValueError, match=match):
    adapt(image(), num_bands=2, permutation=permutation)


def test_boolean_permutation_raises():
  # On a grid of 2, [True, False] sorts to [0, 1] but would act as a mask.
  f = hk.transform(lambda: inputs.GridAdapter(
      (2,), num_bands=1, permutation=np.array([True, False])))
  with pytest.raises(ValueError, match='bool'):
    f.init(None)


@pytest.mark.parametrize('kwargs, match', [
    (dict(position_encoding='sine'), "'sine'"),
    (dict(index_dims=(3, 0)), r'index_dims.*\(3, 0\)'),
    (dict(index_dims=(2.5, 2)), r'index_dims.*2.5'),
])
def test_bad_adapter_config_raises(kwargs, match):
  args = dict(index_dims=(3, 2), num_bands=2)
  args.update(kwargs)
  f = hk.transform(lambda: inputs.GridAdapter(**args))
  with pytest.raises(ValueError, match=match):
    f.init(None)


@pytest.mark.parametrize('shape', [(2, 2, 3, 3), (2, 6, 3), (2, 3, 2, 1, 3),
                                   (2, 3, 2, 4)])
def test_input_with_another_grid_raises(shape):
  config = dict(type='grid', key='x', index_dims=(3, 2), raw_channels=3,
                num_bands=2)
  f = hk.transform(lambda b: inputs.make(config)(b, is_training=False))
  with pytest.raises(ValueError, match=rf"batch\['x'\] has shape "
                     rf'{re_shape(shape)}; expected \[batch, 3, 2, 3\]'):
    jax.eval_shape(f.init, jax.random.PRNGKey(0),
                   {'x': jax.ShapeDtypeStruct(shape, jnp.float32)})


def re_shape(shape):
  return '\\(' + ', '.join(map(str, shape)) + '\\)'


def test_permuted_pixels_with_their_features_leave_logits_unchanged():
  """The whole classifier (digits config): permutation_seed on and off."""
  plain = factory.transform_classifier(digits.get_config('runlocal').model, 10)
  model_config = digits.get_config('runlocal').model
  model_config.input.permutation_seed = 7
  permuted = factory.transform_classifier(model_config, 10)
  batch = {'image': image((2, 8, 8, 1), seed=1)}
  shapes = jax.eval_shape(lambda b: plain.init(jax.random.PRNGKey(0), b,
                                               is_training=False), batch)
  # No adapter parameters with Fourier features: the same tree either way.
  assert jax.tree.structure(shapes) == jax.tree.structure(jax.eval_shape(
      lambda b: permuted.init(jax.random.PRNGKey(0), b, is_training=False),
      batch))
  # Random values for all parameters, the zero-initialised head included,
  # so that equal logits are not trivially zero.
  params = random_params(shapes, seed=2)
  apply_plain = jit(lambda p, b: plain.apply(p, None, b, is_training=False))
  apply_permuted = jit(lambda p, b: permuted.apply(p, None, b,
                                                   is_training=False))
  logits = apply_plain(params, batch)
  assert np.abs(logits).max() > 0.1
  np.testing.assert_allclose(apply_permuted(params, batch), logits, atol=1e-5)
  # Moving pixels without their features does change the logits.
  perm = np.random.default_rng(3).permutation(64)
  shuffled = {'image': batch['image'].reshape(2, 64, 1)[:, perm].reshape(
      2, 8, 8, 1)}
  assert np.abs(apply_plain(params, shuffled) - logits).max() > 1e-3


def test_fourier_features_are_behind_an_optimization_barrier():
  """The constant features reach the program through an optimization
  barrier, so that XLA cannot constant-fold the work downstream of them
  (slow compiles at batch 1); the values are unchanged (tests above)."""
  f = hk.transform(lambda x: inputs.GridAdapter(x.shape[1:-1])(x))
  x = jnp.zeros((1, 4, 4, 3))
  params = f.init(jax.random.PRNGKey(0), x)
  hlo = jax.jit(f.apply).lower(params, None, x).as_text()
  assert 'optimization_barrier' in hlo
  learned = hk.transform(lambda x: inputs.GridAdapter(
      x.shape[1:-1], position_encoding='learned')(x))
  params = learned.init(jax.random.PRNGKey(0), x)
  assert 'optimization_barrier' not in jax.jit(learned.apply).lower(
      params, None, x).as_text()


# ---------------------------------------------------------------------------
# Audio, video and their fusion.

RAW = dict(type='raw_audio', key='audio', num_samples=61_440,
           samples_per_patch=128, num_bands=64, max_resolution=None)
MEL = dict(type='mel', key='mel', index_dims=(96, 50), num_bands=32,
           max_resolution=None)
VIDEO = dict(type='video', key='video', index_dims=(32, 224, 224),
             patch_shape=(2, 8, 8), num_bands=32, max_resolution=None)


def _adapter_fn(input_config):
  def fn(batch, is_training):
    adapter = inputs.make(input_config)
    byte_array, mask = adapter(batch, is_training=is_training)
    return byte_array, mask, adapter.num_channels
  return hk.transform(fn)


def _run(input_config, batch, *, is_training=False, seed=0):
  fn = _adapter_fn(input_config)
  params = fn.init(jax.random.key(seed), batch, is_training)
  return fn.apply(params, jax.random.key(seed + 1), batch, is_training), params


def _shapes(input_config, batch_size=2):
  """Output shapes and C via eval_shape (no big arrays computed)."""
  fn = _adapter_fn(input_config)
  batch = factory.example_batch(input_config, batch_size)
  params = jax.eval_shape(lambda b: fn.init(jax.random.key(0), b, True),
                          batch)
  channels = []

  def apply(p, b):
    inputs, mask, c = fn.apply(p, jax.random.key(1), b, True)
    channels.append(c)
    return inputs, mask
  inputs, mask = jax.eval_shape(apply, params, batch)
  return inputs.shape, None if mask is None else mask.shape, channels[0]


def test_paper_token_counts():
  # Raw audio: 61,440 / 128 = 480 tokens of 128 samples + 1D Fourier
  # features (64 bands): 128 + 2 * 64 + 1 = 257 channels.
  assert _shapes(RAW) == ((2, 480, 257), None, 257)
  # Mel: 96 x 50 = 4,800 values, each with 2D Fourier features (32 bands
  # per axis): 1 + 2 * (2 * 32 + 1) = 131.
  assert _shapes(MEL) == ((2, 4800, 131), None, 131)
  # Video: 32x224x224x3 in 2x8x8 patches: 16 * 28 * 28 = 12,544 tokens of
  # 2 * 8 * 8 * 3 = 384 values + 3D Fourier features: 384 + 3 * 65 = 579.
  assert _shapes(VIDEO) == ((2, 12_544, 579), None, 579)
  # Fusion: tokens concatenated, channels padded to the wider + 4.
  fused = dict(type='audio_video', audio=RAW, video=VIDEO,
               num_modality_channels=4, video_dropout=0.3)
  assert _shapes(fused) == ((2, 480 + 12_544, 583), (2, 480 + 12_544), 583)
  fused_mel = dict(fused, audio=MEL)
  assert _shapes(fused_mel) == ((2, 4800 + 12_544, 583),
                                (2, 4800 + 12_544), 583)


def test_example_batch_shapes():
  batch = factory.example_batch(
      dict(type='audio_video', audio=MEL, video=VIDEO), 3)
  assert {k: v.shape for k, v in batch.items()} == {
      'mel': (3, 96, 50), 'video': (3, 32, 224, 224, 3)}
  assert factory.example_batch(RAW, 1)['audio'].shape == (1, 61_440)
  with pytest.raises(ValueError, match="'mesh'"):
    factory.example_batch(dict(type='mesh'), 1)


def test_raw_audio_patches_and_time_features():
  config = dict(RAW, num_samples=1024, num_bands=4)  # 8 patches.
  audio = np.random.default_rng(0).normal(size=(2, 1024)).astype(np.float32)
  (inputs, mask, channels), _ = _run(config, {'audio': audio})
  assert mask is None and inputs.shape == (2, 8, 128 + 9) and channels == 137
  np.testing.assert_array_equal(inputs[:, :, :128], audio.reshape(2, 8, 128))
  # Positions of the 8 patches in [-1, 1]; the lowest band has frequency 1,
  # the highest mu / 2 = 4 (mu = 8 patches).
  x = np.linspace(-1, 1, 8)
  np.testing.assert_allclose(inputs[0, :, 128], x, atol=1e-6)
  np.testing.assert_allclose(inputs[1, :, 129], np.sin(np.pi * x), atol=1e-6)
  np.testing.assert_allclose(inputs[1, :, 132], np.sin(4 * np.pi * x),
                             atol=1e-5)
  np.testing.assert_allclose(inputs[0, :, 133], np.cos(np.pi * x), atol=1e-6)


def test_mel_values_and_2d_features():
  config = dict(MEL, index_dims=(6, 5), num_bands=2)
  mel = np.random.default_rng(1).normal(size=(2, 6, 5)).astype(np.float32)
  (inputs, _, channels), _ = _run(config, {'mel': mel})
  assert inputs.shape == (2, 30, 1 + 2 * 5) and channels == 11
  np.testing.assert_array_equal(inputs[:, :, 0], mel.reshape(2, 30))
  t, f = np.meshgrid(np.linspace(-1, 1, 6), np.linspace(-1, 1, 5),
                     indexing='ij')
  np.testing.assert_allclose(inputs[0, :, 1], t.reshape(-1), atol=1e-6)
  np.testing.assert_allclose(inputs[0, :, 2], f.reshape(-1), atol=1e-6)


def test_video_patch_contents():
  config = dict(VIDEO, index_dims=(4, 16, 24), num_bands=3)
  video = np.random.default_rng(2).normal(size=(2, 4, 16, 24, 3)).astype(
      np.float32)
  (inputs, _, _), _ = _run(config, {'video': video})
  assert inputs.shape == (2, 2 * 2 * 3, 384 + 3 * 7)
  token = 0
  for gt in range(2):
    for gh in range(2):
      for gw in range(3):
        patch = video[:, 2 * gt:2 * gt + 2, 8 * gh:8 * gh + 8,
                      8 * gw:8 * gw + 8]  # [B, t, h, w, c]
        np.testing.assert_array_equal(inputs[:, token, :384],
                                      patch.reshape(2, 384))
        # (t, h, w) of the patch grid, each in [-1, 1].
        np.testing.assert_allclose(
            inputs[0, token, 384:387],
            [np.linspace(-1, 1, 2)[gt], np.linspace(-1, 1, 2)[gh],
             np.linspace(-1, 1, 3)[gw]], atol=1e-6)
        token += 1


SMALL_RAW = dict(RAW, num_samples=256, num_bands=2)  # 2 tokens, C 133.
SMALL_VIDEO = dict(VIDEO, index_dims=(2, 8, 8), num_bands=2,
                   max_resolution=(2, 2, 2))  # 1 token of 399 channels.


def test_fusion_layout_and_modality_embeddings():
  config = dict(type='audio_video', audio=SMALL_RAW, video=SMALL_VIDEO,
                num_modality_channels=4, video_dropout=0.3)
  rng = np.random.default_rng(3)
  batch = {'audio': rng.normal(size=(2, 256)).astype(np.float32),
           'video': rng.normal(size=(2, 2, 8, 8, 3)).astype(np.float32)}
  (inputs, mask, channels), params = _run(config, batch)
  assert mask is None  # Evaluation: nothing dropped.
  assert inputs.shape == (2, 3, 403) and channels == 403
  (audio_tokens, _, _), _ = _run(SMALL_RAW, batch)
  (video_tokens, _, _), _ = _run(SMALL_VIDEO, batch)
  np.testing.assert_array_equal(inputs[:, :2, :133], audio_tokens)
  np.testing.assert_array_equal(inputs[:, :2, 133:399], 0.0)  # Padding.
  np.testing.assert_array_equal(inputs[:, 2:, :399], video_tokens)
  embeddings = params['audio_video_fusion']
  np.testing.assert_array_equal(
      inputs[:, :2, 399:], np.broadcast_to(embeddings['audio_embedding'],
                                           (2, 2, 4)))
  np.testing.assert_array_equal(
      inputs[:, 2:, 399:], np.broadcast_to(embeddings['video_embedding'],
                                           (2, 1, 4)))
  assert not np.allclose(embeddings['audio_embedding'],
                         embeddings['video_embedding'])


def test_video_dropout_masks_whole_examples():
  num = 4000
  config = dict(type='audio_video', audio=SMALL_RAW, video=SMALL_VIDEO,
                video_dropout=0.3, audio_dropout=0.1)
  batch = {'audio': np.zeros((num, 256), np.float32),
           'video': np.zeros((num, 2, 8, 8, 3), np.float32)}
  (_, mask, _), _ = _run(config, batch, is_training=True)
  mask = np.asarray(mask)
  assert mask.shape == (num, 3) and mask.dtype == bool
  audio_kept, video_kept = mask[:, 0], mask[:, 2]
  np.testing.assert_array_equal(mask[:, 0], mask[:, 1])  # Whole modality.
  assert np.all(audio_kept | video_kept)  # Never both dropped.
  # P(video dropped) = 0.3; audio is dropped only when video is kept:
  # 0.1 * 0.7 = 0.07. Binomial standard errors are below 0.008.
  assert abs((~video_kept).mean() - 0.3) < 0.03
  assert abs((~audio_kept).mean() - 0.07) < 0.025
  (_, eval_mask, _), _ = _run(config, batch, is_training=False)
  assert eval_mask is None
  (_, no_drop, _), _ = _run(dict(config, video_dropout=0.0,
                                 audio_dropout=0.0), batch, is_training=True)
  assert no_drop is None


def test_dropped_video_does_not_reach_the_logits():
  model = common.perceiver_model(
      num_blocks=1, num_self_attends_per_block=1, num_cross_attends=1,
      share_weights=False, num_latents=4, num_latent_channels=8,
      num_self_heads=2)
  model.input = dict(type='audio_video', audio=SMALL_RAW, video=SMALL_VIDEO,
                     video_dropout=0.5)
  forward = factory.transform_classifier(model, num_classes=3)
  rng = np.random.default_rng(4)
  batch = {'audio': rng.normal(size=(16, 256)).astype(np.float32),
           'video': rng.normal(size=(16, 2, 8, 8, 3)).astype(np.float32)}
  # Random parameters of the right shapes (the head's init is zero, and
  # logits must depend on the inputs); eval_shape avoids compiling init.
  shapes = jax.eval_shape(
      lambda: forward.init(jax.random.key(0), batch, is_training=True))
  params_rng = np.random.default_rng(5)
  params = jax.tree.map(
      lambda s: jnp.asarray(0.3 * params_rng.normal(size=s.shape), s.dtype),
      shapes)

  def mask_fn(b):
    return inputs.make(model.input)(b, is_training=True)[1]

  @jax.jit
  def logits_and_mask(b):
    key = jax.random.key(7)
    mask = hk.transform(mask_fn).apply(params, key, b)
    return forward.apply(params, key, b, is_training=True), mask
  logits, mask = logits_and_mask(batch)
  dropped = ~np.asarray(mask)[:, -1]
  assert 0 < dropped.sum() < 16
  changed = dict(batch, video=batch['video'] + 3.0)
  new_logits, new_mask = logits_and_mask(changed)
  np.testing.assert_array_equal(new_mask, mask)  # Same rng, same drops.
  np.testing.assert_allclose(new_logits[dropped], logits[dropped], atol=1e-5)
  assert not np.allclose(new_logits[~dropped], logits[~dropped], atol=1e-3)


def test_bad_inputs():
  with pytest.raises(ValueError, match='patches'):
    inputs.patchify(jnp.zeros((1, 10, 1)), (3,))
  with pytest.raises(ValueError, match='patch_shape'):
    hk.transform(lambda: inputs.PatchAdapter((10,), (4,))).init(None)
  with pytest.raises(ValueError, match=r"batch\['audio'\] has shape"):
    _run(SMALL_RAW, {'audio': np.zeros((2, 255), np.float32)})
  with pytest.raises(ValueError, match='audio.type'):
    _run(dict(type='audio_video', audio=SMALL_VIDEO, video=SMALL_VIDEO),
         {'video': np.zeros((1, 2, 8, 8, 3), np.float32)})
  with pytest.raises(ValueError, match='Dropout rate'):
    _run(dict(type='audio_video', audio=SMALL_RAW, video=SMALL_VIDEO,
              video_dropout=1.0),
         {'audio': np.zeros((1, 256), np.float32),
          'video': np.zeros((1, 2, 8, 8, 3), np.float32)})


# ---------------------------------------------------------------------------
# Point clouds.

def _apply_adapter(points, **kwargs):
  config = dict(dict(type='points', key='points', num_bands=64,
                     max_resolution=(2240.0,) * 3), **kwargs)

  def forward(x):
    adapter = inputs.make(config)
    return adapter({'points': x}, is_training=False)[0], adapter.num_channels
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
  # No input parameters: only the encoder's and the head's.
  assert {m.split('/')[0] for m in params} == {'perceiver',
                                              'classification_head'}
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


# ---------------------------------------------------------------------------
# The released classifiers' image inputs.

@pytest.mark.parametrize('size,grid', [(224, (55, 55)), (32, (7, 7)),
                                       (5, (1, 1)), (4, (0, 0))])
def test_conv_stem_grid(size, grid):
  # 224: (224 + 6 - 7) // 2 + 1 = 112 after the conv, (112 - 3) // 2 + 1 = 55.
  assert inputs.conv_stem_grid(size, size) == grid


def test_conv_stem_equals_numpy_and_keeps_its_statistics():
  rng = np.random.default_rng(0)
  images = rng.normal(size=(2, 9, 11, 3)).astype(np.float32)
  forward = hk.transform(lambda x: inputs.ConvStemAdapter(
      (9, 11, 3), out_channels=4, num_bands=2, max_resolution=(8, 8))(x))
  params = forward.init(jax.random.key(0), images)
  params = jax.tree.map(
      lambda p: jnp.asarray(rng.uniform(0.5, 1.5, p.shape), jnp.float32),
      params)
  out = np.asarray(forward.apply(params, None, images))
  # numpy: zero-pad 3, 7x7 stride-2 conv, batch norm, ReLU, 3x3/2 max pool.
  w = np.asarray(params['conv_stem_adapter/conv']['w'])  # [7, 7, 3, 4]
  bn = params['conv_stem_adapter/batch_norm']
  padded = np.pad(images, ((0, 0), (3, 3), (3, 3), (0, 0)))
  conv_h, conv_w = (9 + 6 - 7) // 2 + 1, (11 + 6 - 7) // 2 + 1
  conv = np.zeros((2, conv_h, conv_w, 4))
  for i in range(conv_h):
    for j in range(conv_w):
      patch = padded[:, 2 * i:2 * i + 7, 2 * j:2 * j + 7]
      conv[:, i, j] = np.einsum('bhwc,hwco->bo', patch, w)
  normed = ((conv - bn['mean']) / np.sqrt(bn['var'] + 1e-5) * bn['scale'] +
            bn['offset'])
  relu = np.maximum(normed, 0)
  grid = inputs.conv_stem_grid(9, 11)
  pooled = np.zeros((2, *grid, 4))
  for i in range(grid[0]):
    for j in range(grid[1]):
      pooled[:, i, j] = relu[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max(
          axis=(1, 2))
  fourier = pe.fourier_grid_features(grid, 2, (8, 8))
  expected = np.concatenate(
      [pooled.reshape(2, -1, 4),
       np.broadcast_to(fourier, (2, *fourier.shape))], axis=-1)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
  # The statistics get no gradient and no weight decay; scale does.
  grads = jax.grad(lambda p: jnp.sum(forward.apply(p, None, images)))(params)
  assert not np.any(grads['conv_stem_adapter/batch_norm']['mean'])
  assert not np.any(grads['conv_stem_adapter/batch_norm']['var'])
  assert np.any(grads['conv_stem_adapter/batch_norm']['scale'])
  mask = optim.weight_decay_mask(params)['conv_stem_adapter/batch_norm']
  assert not mask['mean'] and not mask['var']


def test_conv1x1_learned_shapes_and_bad_images():
  forward = hk.transform(lambda x: inputs.Conv1x1LearnedAdapter(
      (4, 5, 3), out_channels=6, position_channels=7,
      projected_channels=8)(x))
  images = np.ones((2, 4, 5, 3), np.float32)
  params = forward.init(jax.random.key(0), images)
  assert params['conv1x1_learned_adapter/positions']['pos_embs'].shape == (
      20, 7)
  assert forward.apply(params, None, images).shape == (2, 20, 14)
  reader = hk.transform(lambda b: inputs.make(dict(
      type='conv1x1_learned', key='image', index_dims=(4, 5),
      raw_channels=3))(b, is_training=False))
  with pytest.raises(ValueError, match=r"batch\['image'\] has shape "
                     r'\(2, 5, 4, 3\); expected \[batch, 4, 5, 3\]'):
    reader.init(jax.random.key(0), {'image': np.ones((2, 5, 4, 3),
                                                     np.float32)})
  too_small = hk.transform(
      lambda: inputs.ConvStemAdapter((4, 9, 3))(None))
  with pytest.raises(ValueError, match='too small for the conv stem'):
    too_small.init(jax.random.key(0))
