"""The `audioset` TFDS builder on a tiny AudioSet in the official formats."""

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from perceiver_jax.data.builders import audioset as builder_lib
from perceiver_jax.data.builders import audioset_fake as fake

# The default fake rows plus an audio-only WAV file (kept by 'audio', a
# failure for 'audio_video').
CLIPS = fake.default_clips() + [
    fake.FakeClip('jjjjjjjjjj9', 'eval', (7, 8), 'wav', 800.0)]
BY_ID = {c.ytid: c for c in CLIPS}
MIN_SIDE = 32  # Stored shorter side in the test config (clips are 48x64).


@pytest.fixture(scope='module')
def manual_dir(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('audioset_manual'))
  return fake.write_fake_audioset(root, CLIPS)


@pytest.fixture(scope='module')
def av_builder(manual_dir, tmp_path_factory):
  config = builder_lib.AudiosetConfig(name='audio_video_test',
                                      with_video=True,
                                      frame_min_side=MIN_SIDE)
  return builder_lib.build(manual_dir,
                           str(tmp_path_factory.mktemp('tfds_av')), config,
                           num_workers=2)


@pytest.fixture(scope='module')
def audio_builder(manual_dir, tmp_path_factory):
  return builder_lib.build(manual_dir,
                           str(tmp_path_factory.mktemp('tfds_audio')),
                           'audio')


def _examples(builder, split):
  return {ex['ytid'].decode(): ex
          for ex in tfds.as_numpy(builder.as_dataset(split=split))}


def _peak_hz(samples):
  spectrum = np.abs(np.fft.rfft(samples.astype(np.float64)))
  return np.argmax(spectrum) * builder_lib.SAMPLE_RATE / samples.size


def test_report_counts_and_lists_skipped_clips(av_builder):
  report = builder_lib.read_report(av_builder)
  assert report['config'] == 'audio_video_test'
  splits = report['splits']
  assert {s: (v['num_rows'], v['num_written'], v['num_missing'],
              v['num_failed']) for s, v in splits.items()} == {
                  'balanced_train': (4, 3, 0, 1),
                  'unbalanced_train': (2, 1, 1, 0),
                  'eval': (4, 3, 0, 1)}
  corrupt = splits['balanced_train']['failed'][0]
  assert corrupt['ytid'] == 'dddddddddd3'
  assert corrupt['files'][0]['path'].endswith('clips/dddddddddd3.mp4')
  assert 'InvalidData' in corrupt['files'][0]['error']
  assert splits['unbalanced_train']['missing'] == [
      {'ytid': 'ffffffffff5', 'start_seconds': 30.0}]
  no_video = splits['eval']['failed'][0]
  assert no_video['ytid'] == 'jjjjjjjjjj9'
  assert 'no video stream' in no_video['files'][0]['error']
  # TFDS' own counts agree with the report.
  assert {s: av_builder.info.splits[s].num_examples for s in splits} == {
      'balanced_train': 3, 'unbalanced_train': 1, 'eval': 3}


def test_labels_audio_and_frames(av_builder):
  for split in ('balanced_train', 'unbalanced_train', 'eval'):
    examples = _examples(av_builder, split)
    expected_ids = {c.ytid for c in CLIPS if c.split == split and
                    c.kind in ('mp4', 'mkv')}
    assert set(examples) == expected_ids
    for ytid, ex in examples.items():
      clip = BY_ID[ytid]
      assert sorted(ex['labels'].tolist()) == sorted(clip.labels)
      assert ex['start_seconds'] == pytest.approx(clip.start_seconds)
      audio = ex['audio']
      assert audio.dtype == np.int16
      # 2 s at 48 kHz; codecs add at most a few ms.
      assert 2 * 48_000 <= audio.size <= 2.05 * 48_000, ytid
      assert _peak_hz(audio) == pytest.approx(clip.tone_hz, abs=1.0)
      # A 0.5-amplitude sine, from the first window on (for the whole
      # video, the silence before the segment was skipped).
      assert 0.45 * 32768 < np.abs(audio[:4800]).max() < 0.55 * 32768
      video = ex['video']
      assert video.shape == (50, MIN_SIDE, round(64 * MIN_SIDE / 48), 3)
      # Every frame has the clip's colour (the whole video's black frames
      # before the segment were skipped); JPEG and YUV shift it slightly.
      np.testing.assert_allclose(video.reshape(50, -1, 3).mean(1),
                                 np.tile(clip.color, (50, 1)), atol=12)


def test_audio_config_stores_no_frames(audio_builder):
  assert 'video' not in audio_builder.info.features
  report = builder_lib.read_report(audio_builder)['splits']
  assert report['eval']['num_written'] == 4  # The WAV clip counts here.
  assert report['balanced_train']['num_failed'] == 1
  assert report['unbalanced_train']['num_missing'] == 1
  wav = _examples(audio_builder, 'eval')['jjjjjjjjjj9']
  assert sorted(wav['labels'].tolist()) == [7, 8]
  assert _peak_hz(wav['audio']) == pytest.approx(800.0, abs=1.0)
  assert os.path.basename(audio_builder.data_dir) == '1.0.0'


def test_read_segments_real_format(tmp_path):
  index = tmp_path / 'class_labels_indices.csv'
  index.write_text('index,mid,display_name\n0,/m/09x0r,"Speech"\n'
                   '1,/m/05zppz,"Male speech, man speaking"\n')
  segments = tmp_path / 'eval_segments.csv'
  segments.write_text(
      '# Segments csv created Sun Mar  5 10:54:25 2017\n'
      '# num_ytids=2, num_segs=2, num_unique_labels=2, '
      'num_positive_labels=3\n'
      '# YTID, start_seconds, end_seconds, positive_labels\n'
      '--4gqARaEJE, 0.000, 10.000, "/m/09x0r,/m/05zppz"\n'
      '-0RWZT-miFs, 420.000, 430.000, "/m/05zppz"\n')
  mids = builder_lib.read_class_index(str(index))
  assert mids == {'/m/09x0r': 0, '/m/05zppz': 1}
  assert builder_lib.read_segments(str(segments), mids) == [
      builder_lib.Segment('--4gqARaEJE', 0.0, 10.0, (0, 1)),
      builder_lib.Segment('-0RWZT-miFs', 420.0, 430.0, (1,))]
  segments.write_text('abc, 0.0, 10.0, "/m/unknown"\n')
  with pytest.raises(ValueError, match='/m/unknown'):
    builder_lib.read_segments(str(segments), mids)


def test_clip_index_matches_stems(tmp_path):
  for name in ('a_b_c.mp4', 'a_b_c_30.m4a', 'a_b_c_31.wav', 'x.mkv',
               '.hidden'):
    (tmp_path / name).write_bytes(b'')
  index = builder_lib.ClipIndex(str(tmp_path))
  found = index.find('a_b_c', 30.0)
  assert found == [(str(tmp_path / 'a_b_c_30.m4a'), True),
                   (str(tmp_path / 'a_b_c.mp4'), False)]
  assert index.find('a_b', 30.0) == []
  assert index.find('x', 0.0) == [(str(tmp_path / 'x.mkv'), False)]


def test_missing_csv_is_an_error(tmp_path):
  (tmp_path / 'clips').mkdir()
  with pytest.raises(FileNotFoundError, match='class_labels_indices'):
    builder_lib.build(str(tmp_path), str(tmp_path / 'tfds'), 'audio')
