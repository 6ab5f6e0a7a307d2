"""Log-mel spectrogram against librosa, and SpecAugment's masks."""

import librosa
import numpy as np
import pytest
import tensorflow as tf

from perceiver_jax.data import audio

# librosa equivalents of `audio.MelParams()`: Slaney mel scale and area
# normalisation (librosa's defaults), periodic Hann, 448 zeros each side
# instead of librosa's centring.
_LIBROSA = dict(sr=48_000, n_fft=1536, hop_length=640, win_length=1536,
                window='hann', center=False, power=2.0, n_mels=50, fmin=0.0,
                fmax=24_000.0, htk=False, norm='slaney')


def _signal(seed=0, num_samples=61_440):
  rng = np.random.default_rng(seed)
  t = np.arange(num_samples) / 48_000
  return (0.3 * np.sin(2 * np.pi * 1234.5 * t) +
          0.05 * rng.normal(size=num_samples)).astype(np.float32)


def test_window_gives_4800_values():
  params = audio.MelParams()
  spec = audio.log_mel_spectrogram(_signal(), params)
  assert spec.shape == (96, 50)
  assert spec.shape[0] * spec.shape[1] == 4800
  assert params.num_frames(61_440) == 96


def test_filterbank_matches_librosa():
  expected = librosa.filters.mel(sr=48_000, n_fft=1536, n_mels=50, fmin=0.0,
                                 fmax=24_000.0, htk=False, norm='slaney')
  np.testing.assert_allclose(audio.mel_filterbank(), expected.T, rtol=1e-5,
                             atol=1e-9)


def test_mel_spectrogram_matches_librosa():
  x = _signal()
  expected = librosa.feature.melspectrogram(y=np.pad(x, 448),
                                            **_LIBROSA).T  # [frames, bins]
  ours = audio.mel_power_spectrogram(x).numpy()
  assert ours.shape == expected.shape == (96, 50)
  np.testing.assert_allclose(ours, expected, rtol=2e-4,
                             atol=1e-5 * expected.max())
  np.testing.assert_allclose(audio.log_mel_spectrogram(x).numpy(),
                             np.log(expected + 1e-6), atol=2e-3)


def test_tone_lands_in_its_band():
  # A 1234.5 Hz tone: the loudest band is the one whose triangle peaks
  # nearest to it (librosa's band centre frequencies).
  centres = librosa.mel_frequencies(n_mels=52, fmin=0.0, fmax=24_000.0,
                                    htk=False)[1:-1]
  t = np.arange(61_440) / 48_000
  x = np.sin(2 * np.pi * 1234.5 * t).astype(np.float32)
  spec = audio.log_mel_spectrogram(x).numpy()
  assert np.argmax(spec.mean(0)) == np.argmin(np.abs(centres - 1234.5))


def test_batched_and_silence():
  x = np.stack([_signal(0), _signal(1), np.zeros(61_440, np.float32)])
  spec = audio.log_mel_spectrogram(x).numpy()
  assert spec.shape == (3, 96, 50)
  np.testing.assert_allclose(spec[1],
                             audio.log_mel_spectrogram(x[1]).numpy(),
                             atol=1e-4)
  np.testing.assert_allclose(spec[2], np.log(1e-6), rtol=1e-6)


def test_bad_parameters():
  with pytest.raises(ValueError, match='multiple of hop_length'):
    audio.log_mel_spectrogram(np.zeros(1000, np.float32))
  with pytest.raises(ValueError, match='fmax'):
    audio.MelParams(fmax=30_000.0)
  with pytest.raises(ValueError, match='even'):
    audio.MelParams(window_length=1535)


def _masked(original, augmented):
  return augmented != original


def test_spec_augment_masks_whole_bands():
  spec = tf.constant(np.random.default_rng(0).normal(size=(96, 50)),
                     tf.float32)
  params = audio.SpecAugmentParams(num_freq_masks=1, max_freq_width=10,
                                   num_time_masks=1, max_time_width=16)
  seen_any = False
  for seed in range(20):
    out = audio.spec_augment(spec, tf.constant([seed, 7]), params).numpy()
    masked = _masked(spec.numpy(), out)
    np.testing.assert_allclose(out[masked], spec.numpy().mean(), rtol=1e-5)
    freq_rows = np.flatnonzero(masked.all(axis=0))  # Bins masked at all t.
    time_rows = np.flatnonzero(masked.all(axis=1))  # Frames masked at all f.
    # Every masked value lies in a fully masked band of bins or frames.
    covered = np.zeros_like(masked)
    covered[:, freq_rows] = True
    covered[time_rows, :] = True
    np.testing.assert_array_equal(masked, covered)
    # One mask per axis: contiguous, at most the maximum width.
    for rows, width in ((freq_rows, 10), (time_rows, 16)):
      if rows.size:
        assert rows.size <= width
        assert rows[-1] - rows[0] + 1 == rows.size
    seen_any |= bool(freq_rows.size and time_rows.size)
  assert seen_any


def test_spec_augment_is_seeded():
  spec = tf.constant(np.random.default_rng(1).normal(size=(96, 50)),
                     tf.float32)
  a = audio.spec_augment(spec, tf.constant([1, 2])).numpy()
  b = audio.spec_augment(spec, tf.constant([1, 2])).numpy()
  c = audio.spec_augment(spec, tf.constant([1, 3])).numpy()
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  none = audio.SpecAugmentParams(num_freq_masks=0, num_time_masks=0)
  np.testing.assert_array_equal(
      audio.spec_augment(spec, tf.constant([1, 2]), none).numpy(),
      spec.numpy())
  with pytest.raises(ValueError, match='frames, bins'):
    audio.spec_augment(tf.zeros([2, 96, 50]), tf.constant([1, 2]))
