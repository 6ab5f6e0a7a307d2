"""The AudioSet loader on the mock (a tiny AudioSet built by the builder)."""

import itertools

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from perceiver_jax.data import audio as audio_lib
from perceiver_jax.data import audioset
from perceiver_jax.data.builders import audioset_fake as fake

CLIPS = {c.ytid: c for c in fake.default_clips()
         if c.kind in ('mp4', 'mkv')}
TRAIN_IDS = {y for y, c in CLIPS.items() if c.split != 'eval'}
EVAL_IDS = {y for y, c in CLIPS.items() if c.split == 'eval'}
VIDEO_SIZE = (16, 24)


def _config(**overrides):
  config = ml_collections.ConfigDict(dict(
      mock=True, data_dir=None, builder_config='audio', modality='raw',
      train_split='balanced_train+unbalanced_train', eval_split='eval',
      num_classes=527, spec_augment=False, video_size=VIDEO_SIZE,
      shuffle_buffer=16))
  config.update(overrides)
  return config


def _multi_hot(labels):
  row = np.zeros(527, np.float32)
  row[list(labels)] = 1.0
  return row


def _peak_hz(window):
  spectrum = np.abs(np.fft.rfft(window))
  return np.argmax(spectrum) * 48_000 / window.size


def _clip_of_tone(window, ids):
  """The clip whose tone the window holds (by its spectral peak)."""
  hz = _peak_hz(window)
  (ytid,) = [y for y in ids if abs(CLIPS[y].tone_hz - hz) < 2.0]
  return ytid


@pytest.fixture(scope='module')
def stored_audio():
  """The prepared mock's int16 audio per ytid, read directly with TFDS."""
  builder = audioset._builder(_config())
  return {ex['ytid'].decode(): ex['audio'] for ex in tfds.as_numpy(
      builder.as_dataset(split='balanced_train+unbalanced_train+eval'))}


def test_num_examples():
  assert audioset.num_examples('train', _config()) == len(TRAIN_IDS)
  assert audioset.num_examples('eval', _config()) == len(EVAL_IDS)
  assert audioset.num_examples('balanced_train', _config()) == 3


def test_train_raw_windows_and_labels():
  batches = audioset.load('train', is_training=True, batch_dims=(2, 3),
                          config=_config(), seed=3)
  for batch in itertools.islice(batches, 2):
    assert sorted(batch) == ['audio', 'label', 'mask']
    assert batch['audio'].shape == (2, 3, 61_440)
    assert batch['audio'].dtype == np.float32
    assert batch['label'].shape == (2, 3, 527)
    np.testing.assert_array_equal(batch['mask'], np.ones((2, 3)))
    for window, label in zip(batch['audio'].reshape(6, -1),
                             batch['label'].reshape(6, -1)):
      # Clips are 2 s, so a 1.28 s window is all tone; its frequency names
      # the clip, whose labels must come with it.
      assert np.abs(window).max() == pytest.approx(0.5, abs=0.05)
      ytid = _clip_of_tone(window, TRAIN_IDS)
      np.testing.assert_array_equal(label, _multi_hot(CLIPS[ytid].labels))


def test_train_is_deterministic_and_resumable():
  def first(n, **kwargs):
    it = audioset.load('train', is_training=True, batch_dims=(4,),
                       config=_config(), **kwargs)
    return [b['audio'] for b in itertools.islice(it, n)]
  run = first(3, seed=5)
  again = first(3, seed=5)
  resumed = first(2, seed=5, start_step=1)
  other = first(1, seed=6)
  for a, b in zip(run, again):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(run[1:], resumed):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(run[0], other[0])


def test_eval_windows_cover_each_clip(stored_audio):
  batches = list(audioset.load('eval', is_training=False, batch_dims=(5,),
                               config=_config()))
  # 3 clips x 16 windows = 48 windows: 9 full batches and one with 3 real
  # windows and 2 of padding.
  assert len(batches) == 10
  merged = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
  assert sorted(merged) == ['audio', 'clip_index', 'label', 'mask']
  np.testing.assert_array_equal(merged['mask'], [1.0] * 48 + [0.0] * 2)
  np.testing.assert_array_equal(merged['clip_index'][48:], [-1, -1])
  assert not merged['audio'][48:].any() and not merged['label'][48:].any()
  seen = set()
  for clip in range(3):
    rows = np.flatnonzero(merged['clip_index'] == clip)
    np.testing.assert_array_equal(rows, np.arange(16) + 16 * clip)
    windows = merged['audio'][rows]
    ytid = _clip_of_tone(windows[0], EVAL_IDS)
    seen.add(ytid)
    np.testing.assert_array_equal(
        merged['label'][rows], np.tile(_multi_hot(CLIPS[ytid].labels),
                                       (16, 1)))
    # Window k starts at round(k * S / 15), S = n - 61,440: the first at
    # the clip's start, the last ending at its end.
    samples = stored_audio[ytid].astype(np.float32) / 32768
    last_start = samples.size - 61_440
    for k in range(16):
      start = int(round(k * last_start / 15))
      np.testing.assert_array_equal(windows[k],
                                    samples[start:start + 61_440])
  assert seen == EVAL_IDS


def test_eval_mel_is_log_mel_of_the_raw_window():
  raw = next(audioset.load('eval', is_training=False, batch_dims=(4,),
                           config=_config()))
  mel = next(audioset.load('eval', is_training=False, batch_dims=(4,),
                           config=_config(modality='mel', spec_augment=True)))
  assert mel['mel'].shape == (4, 96, 50)
  np.testing.assert_allclose(
      mel['mel'], audio_lib.log_mel_spectrogram(raw['audio']).numpy(),
      atol=1e-4)
  np.testing.assert_array_equal(mel['label'], raw['label'])


def test_train_mel_spec_augment_masks_bands():
  config = _config(modality='mel', spec_augment=True,
                   spec_augment_freq_masks=1, spec_augment_max_freq_width=10,
                   spec_augment_time_masks=1, spec_augment_max_time_width=16)
  batch = next(audioset.load('train', is_training=True, batch_dims=(8,),
                             config=config, seed=0))
  assert batch['mel'].shape == (8, 96, 50)
  masked_bins = masked_frames = 0
  for spec in batch['mel']:
    # A masked band of bins is constant over time, and vice versa.
    masked_bins += np.sum(np.ptp(spec, axis=0) == 0)
    masked_frames += np.sum(np.ptp(spec, axis=1) == 0)
  assert masked_bins > 0 and masked_frames > 0
  plain = next(audioset.load('train', is_training=True, batch_dims=(8,),
                             config=_config(modality='mel'), seed=0))
  assert not np.any(np.ptp(plain['mel'], axis=1) == 0)


def _rgb(video):
  """Mean RGB in [0, 255] of normalised frames `[..., 3]`."""
  pixels = video * np.array(audioset.IMAGENET_STD) + np.array(
      audioset.IMAGENET_MEAN)
  return 255 * pixels.reshape(-1, 3).mean(0)


def test_video_windows_train_and_eval():
  no_jitter = dict(video_brightness=0.0, video_contrast=0.0,
                   video_saturation=0.0, video_hue=0.0)
  config = _config(builder_config='audio_video', modality='mel_video',
                   **no_jitter)
  batch = next(audioset.load('train', is_training=True, batch_dims=(2, 2),
                             config=config, seed=1))
  assert sorted(batch) == ['label', 'mask', 'mel', 'video']
  assert batch['video'].shape == (2, 2, 32, *VIDEO_SIZE, 3)
  assert batch['mel'].shape == (2, 2, 96, 50)
  for video, label in zip(batch['video'].reshape(4, 32, *VIDEO_SIZE, 3),
                          batch['label'].reshape(4, 527)):
    (ytid,) = [y for y in TRAIN_IDS
               if np.array_equal(label, _multi_hot(CLIPS[y].labels))]
    np.testing.assert_allclose(_rgb(video), CLIPS[ytid].color, atol=15)

  eval_batches = list(audioset.load(
      'eval', is_training=False, batch_dims=(16,),
      config=_config(builder_config='audio_video', modality='raw_video')))
  assert len(eval_batches) == 3
  for eval_batch in eval_batches:
    assert sorted(eval_batch) == ['audio', 'clip_index', 'label', 'mask',
                                  'video']
    assert eval_batch['video'].shape == (16, 32, *VIDEO_SIZE, 3)
    ytid = _clip_of_tone(eval_batch['audio'][0], EVAL_IDS)
    np.testing.assert_allclose(_rgb(eval_batch['video']), CLIPS[ytid].color,
                               atol=15)
    assert len(set(eval_batch['clip_index'].tolist())) == 1

  jittered = next(audioset.load(
      'train', is_training=True, batch_dims=(4,), seed=1,
      config=_config(builder_config='audio_video', modality='video')))
  assert sorted(jittered) == ['label', 'mask', 'video']
  # Same clips, windows, crops and flips as the first batch (same seed;
  # the window start is drawn in frames for every modality with video),
  # but colours moved by the jitter.
  plain = batch['video'].reshape(4, 32, *VIDEO_SIZE, 3)
  np.testing.assert_array_equal(jittered['label'],
                                batch['label'].reshape(4, 527))
  assert np.abs(jittered['video'] - plain).mean() > 0.05


def test_hosts_read_disjoint_shards(monkeypatch):
  clip_sets, label_sets = [], []
  for host in range(2):
    monkeypatch.setattr(audioset.jax, 'process_index', lambda h=host: h)
    monkeypatch.setattr(audioset.jax, 'process_count', lambda: 2)
    batches = list(audioset.load('eval', is_training=False, batch_dims=(16,),
                                 config=_config()))
    clips = np.concatenate([b['clip_index'][b['mask'] > 0] for b in batches])
    labels = np.concatenate([b['label'][b['mask'] > 0] for b in batches])
    assert np.all(clips % 2 == host)
    clip_sets.append(set(clips.tolist()))
    label_sets.append({tuple(np.flatnonzero(row)) for row in labels})
  assert clip_sets[0].isdisjoint(clip_sets[1])
  assert len(clip_sets[0]) + len(clip_sets[1]) == 3
  assert label_sets[0] | label_sets[1] == {
      tuple(sorted(CLIPS[y].labels)) for y in EVAL_IDS}


def test_bad_configs():
  with pytest.raises(ValueError, match="needs builder_config 'audio_video'"):
    audioset.load('train', is_training=True, batch_dims=(2,),
                  config=_config(modality='video'))
  with pytest.raises(ValueError, match='modality'):
    audioset.load('train', is_training=True, batch_dims=(2,),
                  config=_config(modality='spectrogram'))
  with pytest.raises(ValueError, match='527'):
    audioset.num_examples('train', _config(num_classes=10))
