"""Raw audio, mel, video and audio+video adapters (token counts, contents)."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from perceiver_jax.model import adapters
from perceiver_jax.model import factory

RAW = dict(type='raw_audio', key='audio', num_samples=61_440,
           samples_per_patch=128, num_bands=64, max_resolution=None)
MEL = dict(type='mel', key='mel', index_dims=(96, 50), num_bands=32,
           max_resolution=None)
VIDEO = dict(type='video', key='video', index_dims=(32, 224, 224),
             patch_shape=(2, 8, 8), num_bands=32, max_resolution=None)


def _adapter_fn(input_config):
  def fn(batch, is_training):
    adapter = factory.make_adapter(input_config)
    inputs, mask = adapter(batch, is_training=is_training)
    return inputs, mask, adapter.num_channels
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
    return factory.make_adapter(model.input)(b, is_training=True)[1]

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
    adapters.patchify(jnp.zeros((1, 10, 1)), (3,))
  with pytest.raises(ValueError, match='patch_shape'):
    hk.transform(lambda: adapters.PatchAdapter((10,), (4,))).init(None)
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
