"""Audio features for AudioSet: a log-mel spectrogram and SpecAugment.

The paper flattens each 1.28 s window (61,440 samples at 48 kHz) into 4,800
inputs without giving parameters; ours (`MelParams()`, docs/audioset.md)
give 96 frames x 50 Slaney mel bands: a Hann window of 1,536 samples padded
by 448 at each end, hop 640, power spectrum, `log(mel + 1e-6)`. TensorFlow
ops, so it runs in tf.data. SpecAugment masks bands of mel channels and
frames with the mean; time warping (costliest, least useful) is omitted.
"""

import dataclasses

import numpy as np
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class MelParams:
  """Log-mel spectrogram parameters (defaults: the 96 x 50 layout above)."""
  sample_rate: int = 48_000
  window_length: int = 1536
  hop_length: int = 640
  num_mel_bins: int = 50
  fmin: float = 0.0
  fmax: float = 24_000.0
  log_offset: float = 1e-6

  def __post_init__(self):
    if self.hop_length < 1 or self.window_length < self.hop_length:
      raise ValueError(
          f'Need 1 <= hop_length <= window_length, got hop_length='
          f'{self.hop_length}, window_length={self.window_length}.')
    if (self.window_length - self.hop_length) % 2:
      raise ValueError(
          f'window_length - hop_length must be even (the padding is split '
          f'equally between both ends), got {self.window_length} - '
          f'{self.hop_length}.')
    if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
      raise ValueError(
          f'Need 0 <= fmin < fmax <= sample_rate / 2, got fmin={self.fmin}, '
          f'fmax={self.fmax}, sample_rate={self.sample_rate}.')
    if self.num_mel_bins < 1:
      raise ValueError(f'num_mel_bins must be positive, got '
                       f'{self.num_mel_bins}.')

  def num_frames(self, num_samples: int) -> int:
    """Frames for `num_samples` samples (a multiple of the hop)."""
    if num_samples % self.hop_length:
      raise ValueError(f'num_samples ({num_samples}) must be a multiple of '
                       f'hop_length ({self.hop_length}).')
    return num_samples // self.hop_length

  @property
  def padding(self) -> int:
    """Zeros added at each end of the waveform."""
    return (self.window_length - self.hop_length) // 2


_LOG_STEP = np.log(6.4) / 27.0  # Log-frequency step of one mel above 1 kHz.


def hz_to_mel(hz):
  """Slaney's mel scale: linear (3 mels per 200 Hz) below 1 kHz, log above."""
  hz = np.asarray(hz, np.float64)
  linear = hz * 3.0 / 200.0
  log_part = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / _LOG_STEP
  return np.where(hz >= 1000.0, log_part, linear)


def mel_to_hz(mel):
  """Inverse of `hz_to_mel`."""
  mel = np.asarray(mel, np.float64)
  return np.where(mel >= 15.0, 1000.0 * np.exp(_LOG_STEP * (mel - 15.0)),
                  mel * 200.0 / 3.0)


def mel_filterbank(params: MelParams = MelParams()) -> np.ndarray:
  """Equal-area triangular filters `[window_length // 2 + 1, bins]` on
  `bins + 2` mel-spaced edges."""
  fft_hz = np.linspace(0.0, params.sample_rate / 2,
                       params.window_length // 2 + 1)
  edges = mel_to_hz(np.linspace(hz_to_mel(params.fmin),
                                hz_to_mel(params.fmax),
                                params.num_mel_bins + 2))
  lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
  rising = (fft_hz[:, None] - lower) / (centre - lower)
  falling = (upper - fft_hz[:, None]) / (upper - centre)
  weights = np.maximum(0.0, np.minimum(rising, falling))
  weights *= 2.0 / (upper - lower)
  return weights.astype(np.float32)


def mel_power_spectrogram(waveform: tf.Tensor,
                          params: MelParams = MelParams()) -> tf.Tensor:
  """`[..., num_samples]` -> `[..., samples / hop, bins]` mel power."""
  waveform = tf.convert_to_tensor(waveform, tf.float32)
  num_samples = waveform.shape[-1]
  if num_samples is not None:
    params.num_frames(num_samples)  # Validates the length.
  pad = params.padding
  paddings = [[0, 0]] * (len(waveform.shape) - 1) + [[pad, pad]]
  padded = tf.pad(waveform, paddings)
  stft = tf.signal.stft(padded, frame_length=params.window_length,
                        frame_step=params.hop_length,
                        fft_length=params.window_length,
                        window_fn=tf.signal.hann_window, pad_end=False)
  power = tf.math.real(stft) ** 2 + tf.math.imag(stft) ** 2
  return tf.tensordot(power, tf.constant(mel_filterbank(params)), axes=1)


def log_mel_spectrogram(waveform: tf.Tensor,
                        params: MelParams = MelParams()) -> tf.Tensor:
  """`log(mel power + offset)`: `[..., samples]` -> `[..., frames, bins]`."""
  return tf.math.log(mel_power_spectrogram(waveform, params) +
                     params.log_offset)


@dataclasses.dataclass(frozen=True)
class SpecAugmentParams:
  """SpecAugment masks: widths uniform in `[0, max_width]`, starts where
  they fit (defaults for 96 x 50)."""
  num_freq_masks: int = 2
  max_freq_width: int = 10
  num_time_masks: int = 2
  max_time_width: int = 16

  def __post_init__(self):
    for name in ('num_freq_masks', 'max_freq_width', 'num_time_masks',
                 'max_time_width'):
      if getattr(self, name) < 0:
        raise ValueError(f'{name} must be non-negative, got '
                         f'{getattr(self, name)}.')


def _band_mask(seed: tf.Tensor, size: int, max_width: int,
               num_masks: int) -> tf.Tensor:
  """`[size]` bool: True inside any of `num_masks` random bands."""
  masked = tf.zeros([size], tf.bool)
  if num_masks == 0 or max_width == 0:
    return masked
  positions = tf.range(size)
  seeds = tf.random.experimental.stateless_split(seed, 2 * num_masks)
  for i in range(num_masks):
    width = tf.random.stateless_uniform(
        [], seeds[2 * i], minval=0, maxval=min(max_width, size) + 1,
        dtype=tf.int32)
    start = tf.random.stateless_uniform(
        [], seeds[2 * i + 1], minval=0, maxval=size - width + 1,
        dtype=tf.int32)
    masked |= (positions >= start) & (positions < start + width)
  return masked


def spec_augment(spectrogram: tf.Tensor, seed: tf.Tensor,
                 params: SpecAugmentParams = SpecAugmentParams()
                 ) -> tf.Tensor:
  """Sets random frequency and time bands of a static `[frames, bins]` to
  its mean; the `[2]` seed fixes the masks."""
  spectrogram = tf.convert_to_tensor(spectrogram)
  if len(spectrogram.shape) != 2 or None in spectrogram.shape:
    raise ValueError(f'spec_augment needs a [frames, bins] spectrogram with '
                     f'a static shape, got {spectrogram.shape}.')
  num_frames, num_bins = spectrogram.shape
  freq_seed, time_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 2))
  freq = _band_mask(freq_seed, num_bins, params.max_freq_width,
                    params.num_freq_masks)
  time = _band_mask(time_seed, num_frames, params.max_time_width,
                    params.num_time_masks)
  masked = time[:, None] | freq[None, :]
  fill = tf.reduce_mean(spectrogram)
  return tf.where(masked, fill, spectrogram)
