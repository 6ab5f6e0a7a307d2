"""AudioSet loader: 1.28 s windows of raw audio, mel spectrogram and video.

Reads the `audioset` TFDS dataset of `builders.audioset` (48 kHz int16
audio, 25 fps JPEG frames). A window is 32 frames = 61,440 samples (docs/
paper.md section 4). Training takes one window per clip at a uniform
start (a frame start with video, so sound and picture stay aligned);
evaluation takes 16 evenly spaced windows per clip, each an example whose
`'clip_index'` (unique over hosts, -1 on padding) lets the evaluator
average them. Short clips pad audio with zeros, video with the last frame.

Batch keys, as the modality needs: 'audio' float32 `[..., 61440]`, 'mel'
`[..., 96, 50]` (SpecAugment in training when enabled), 'video' `[..., 32,
H, W, 3]` (one crop, flip and colour jitter for all frames in training; the
central crop in evaluation), 'label' `[..., 527]` multi-hot, 'mask' and
'clip_index'. Config fields and defaults: docs/audioset.md. The training
stream is a pure function of (seed, host, start_step), as in `pipeline`.
"""

import atexit
import functools
import shutil
import tempfile
from typing import Any, Iterator, Mapping, Sequence

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from perceiver_jax import checks
from perceiver_jax.data import audio as audio_lib
from perceiver_jax.data import augment
from perceiver_jax.data import pipeline
from perceiver_jax.data.builders import audioset as builder_lib
from perceiver_jax.data.builders import audioset_fake

NUM_CLASSES = builder_lib.NUM_CLASSES
WINDOW_FRAMES = 32
SAMPLES_PER_FRAME = builder_lib.SAMPLE_RATE // builder_lib.FPS  # 1,920
WINDOW_SAMPLES = WINDOW_FRAMES * SAMPLES_PER_FRAME  # 61,440
WINDOWS_PER_CLIP = 16
MEL_PARAMS = audio_lib.MelParams()
MEL_SHAPE = (MEL_PARAMS.num_frames(WINDOW_SAMPLES),
             MEL_PARAMS.num_mel_bins)  # (96, 50)
MODALITIES = ('raw', 'mel', 'video', 'raw_video', 'mel_video')
BUILDER_CONFIGS = ('audio', 'audio_video')
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Stored shorter side of the mock's frames (its clips are 48x64).
MOCK_FRAME_MIN_SIDE = 64

# What the loader reads for a `config.data` field that is missing or None;
# configs/audioset.py builds its `config.data` from these.
DEFAULTS = dict(
    data_dir=None,
    mock=False,
    builder_config='audio',
    modality='raw',
    train_split='balanced_train+unbalanced_train',
    eval_split='eval',
    num_classes=NUM_CLASSES,
    spec_augment=True,
    spec_augment_freq_masks=2,
    spec_augment_max_freq_width=10,
    spec_augment_time_masks=2,
    spec_augment_max_time_width=16,
    video_size=(224, 224),
    video_crop_area_range=(0.08, 1.0),
    video_crop_aspect_range=(3 / 4, 4 / 3),
    video_eval_crop_fraction=0.875,
    video_brightness=0.4,
    video_contrast=0.4,
    video_saturation=0.4,
    video_hue=0.1,
    shuffle_buffer=10_000,
)


def _get(config: Mapping[str, Any], name: str) -> Any:
  value = config.get(name, None) if hasattr(config, 'get') else None
  return DEFAULTS[name] if value is None and name != 'data_dir' else value


def _check_config(config: Mapping[str, Any]) -> tuple[str, str]:
  modality = checks.one_of(_get(config, 'modality'), 'config.data.modality',
                           MODALITIES)
  builder_config = checks.one_of(_get(config, 'builder_config'),
                                 'config.data.builder_config', BUILDER_CONFIGS)
  if 'video' in modality and builder_config != 'audio_video':
    raise ValueError(f'modality {modality!r} needs builder_config '
                     f"'audio_video' (frames), got {builder_config!r}.")
  if _get(config, 'num_classes') != NUM_CLASSES:
    raise ValueError(f'AudioSet has {NUM_CLASSES} classes; '
                     f'config.data.num_classes is '
                     f'{_get(config, "num_classes")}.')
  height, width = _get(config, 'video_size')
  if height < 1 or width < 1:
    raise ValueError(f'video_size must be positive, got {(height, width)}.')
  return modality, builder_config


_MOCK_BUILDERS: dict[str, tfds.core.DatasetBuilder] = {}


def _mock_builder(builder_config: str) -> tfds.core.DatasetBuilder:
  """Writes and builds the tiny fake AudioSet once per process and config."""
  if builder_config not in _MOCK_BUILDERS:
    root = tempfile.mkdtemp(prefix='perceiver_audioset_mock_')
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    manual_dir = f'{root}/manual'
    tf.io.gfile.makedirs(manual_dir)
    audioset_fake.write_fake_audioset(manual_dir)
    config = builder_lib.AudiosetConfig(
        name=f'{builder_config}_mock',
        with_video=builder_config == 'audio_video',
        frame_min_side=MOCK_FRAME_MIN_SIDE)
    _MOCK_BUILDERS[builder_config] = builder_lib.build(
        manual_dir, f'{root}/tfds', config)
  return _MOCK_BUILDERS[builder_config]


def _builder(config: Mapping[str, Any]) -> tfds.core.DatasetBuilder:
  _, builder_config = _check_config(config)
  pipeline.hide_gpus_from_tf()
  if _get(config, 'mock'):
    return _mock_builder(builder_config)
  builder = builder_lib.Audioset(config=builder_config,
                                 data_dir=_get(config, 'data_dir'))
  if not builder.is_prepared():
    raise FileNotFoundError(
        f'AudioSet ({builder_config}) is not prepared in '
        f'{builder.data_dir}; build it with `python -m '
        f'perceiver_jax.data.builders.audioset --manual_dir=... '
        f'--data_dir=... --config={builder_config}` (see '
        f'docs/audioset.md), or set config.data.mock=True.')
  return builder


def _split_name(split: str, config: Mapping[str, Any]) -> str:
  if split == 'train':
    return _get(config, 'train_split')
  if split in ('test', 'validation'):
    return _get(config, 'eval_split')
  return split


def num_examples(split: str, config: Mapping[str, Any]) -> int:
  """Clips in `split` (all hosts). Evaluation yields 16 windows per clip."""
  return _builder(config).info.splits[_split_name(split, config)].num_examples


def _multi_hot(labels: tf.Tensor) -> tf.Tensor:
  """Class indices `[k]` -> float32 `[527]` (k may be 0)."""
  one_hot = tf.one_hot(tf.cast(labels, tf.int32), NUM_CLASSES)
  return tf.minimum(tf.reduce_sum(one_hot, axis=0), 1.0)


def _decode_frames(encoded: tf.Tensor, crop_window: tf.Tensor,
                   config: Mapping[str, Any]) -> tf.Tensor:
  """JPEGs `[32]` cropped to `[y, x, h, w]` -> float32 `[32, H, W, 3]` in
  [0, 1], resized to `video_size`."""
  def decode(jpeg):
    return tf.image.decode_and_crop_jpeg(jpeg, crop_window, channels=3)
  frames = tf.map_fn(decode, encoded, fn_output_signature=tf.uint8)
  return tf.image.resize(tf.cast(frames, tf.float32) / 255.0,
                         tuple(_get(config, 'video_size')),
                         method='bilinear', antialias=True)


def _normalise_video(frames: tf.Tensor) -> tf.Tensor:
  frames = tf.clip_by_value(frames, 0.0, 1.0)
  return (frames - tf.constant(IMAGENET_MEAN)) / tf.constant(IMAGENET_STD)


def _train_video(encoded: tf.Tensor, seed: tf.Tensor,
                 config: Mapping[str, Any]) -> tf.Tensor:
  """32 JPEGs -> float32 `[32, H, W, 3]`: crop, flip, jitter, normalise."""
  seeds = tf.random.experimental.stateless_split(seed, 7)
  crop_window = augment.random_crop_window(
      tf.image.extract_jpeg_shape(encoded[0]), seeds[0],
      area_range=_get(config, 'video_crop_area_range'),
      aspect_ratio_range=_get(config, 'video_crop_aspect_range'))
  frames = _decode_frames(encoded, crop_window, config)
  flip = tf.random.stateless_uniform([], seeds[1]) < 0.5
  frames = tf.cond(flip, lambda: tf.reverse(frames, axis=[2]),
                   lambda: frames)

  def factor(strength, seed):
    return tf.random.stateless_uniform([], seed, 1.0 - strength,
                                       1.0 + strength)
  brightness, contrast, saturation, hue = (
      _get(config, f'video_{name}')
      for name in ('brightness', 'contrast', 'saturation', 'hue'))
  if brightness:
    frames = frames * factor(brightness, seeds[2])
  if contrast:
    frames = tf.image.adjust_contrast(frames, factor(contrast, seeds[3]))
  if saturation:
    frames = tf.image.adjust_saturation(tf.clip_by_value(frames, 0.0, 1.0),
                                        factor(saturation, seeds[4]))
  if hue:
    frames = tf.image.adjust_hue(
        tf.clip_by_value(frames, 0.0, 1.0),
        tf.random.stateless_uniform([], seeds[5], -hue, hue))
  return _normalise_video(frames)


def _eval_video(encoded: tf.Tensor, config: Mapping[str, Any]) -> tf.Tensor:
  """32 JPEGs -> float32 `[32, H, W, 3]`: central crop, resize, normalise."""
  crop_window = augment.center_crop_window(  # A square.
      tf.image.extract_jpeg_shape(encoded[0]), (1, 1),
      _get(config, 'video_eval_crop_fraction'))
  return _normalise_video(_decode_frames(encoded, crop_window, config))


def _example(window: Mapping[str, tf.Tensor], *, modality: str,
             config: Mapping[str, Any], training: bool
             ) -> dict[str, tf.Tensor]:
  """Decodes (and in training augments) a window of `_train_window` or
  `_eval_windows`."""
  out = {k: window[k] for k in ('label', 'clip_index') if k in window}
  out['mask'] = tf.constant(1.0)
  if training:
    video_seed, audio_seed = tf.unstack(
        tf.random.experimental.stateless_split(window['seed'], 2))
  if 'video' in modality:
    out['video'] = (_train_video(window['video'], video_seed, config)
                    if training else _eval_video(window['video'], config))
  if modality.startswith('raw'):
    out['audio'] = tf.cast(window['audio'], tf.float32) / 32768.0
  elif modality.startswith('mel'):
    mel = audio_lib.log_mel_spectrogram(
        tf.cast(window['audio'], tf.float32) / 32768.0, MEL_PARAMS)
    if training and _get(config, 'spec_augment'):
      mel = audio_lib.spec_augment(mel, audio_seed, audio_lib.SpecAugmentParams(
          num_freq_masks=_get(config, 'spec_augment_freq_masks'),
          max_freq_width=_get(config, 'spec_augment_max_freq_width'),
          num_time_masks=_get(config, 'spec_augment_time_masks'),
          max_time_width=_get(config, 'spec_augment_max_time_width')))
    out['mel'] = mel
  return out


def _cut_windows(example: Mapping[str, tf.Tensor], starts, modality: str
                 ) -> dict[str, tf.Tensor]:
  """The clip's windows at `starts(last_start)` (int32 `[k]`, in frames with
  video, else in samples), still encoded: int16 audio `[k, 61440]`
  zero-padded at the end, JPEGs `[k, 32]` repeating the last frame."""
  windows = {}
  num_samples = tf.shape(example['audio'])[0]
  if 'video' in modality:
    num_frames = tf.shape(example['video'])[0]
    clip_frames = tf.maximum(-(-num_samples // SAMPLES_PER_FRAME), num_frames)
    start_frames = starts(tf.maximum(0, clip_frames - WINDOW_FRAMES))
    start_samples = start_frames * SAMPLES_PER_FRAME
    windows['video'] = tf.gather(example['video'], tf.minimum(
        start_frames[:, None] + tf.range(WINDOW_FRAMES), num_frames - 1))
  else:
    start_samples = starts(tf.maximum(0, num_samples - WINDOW_SAMPLES))
  if modality != 'video':
    pad = tf.maximum(
        0, tf.reduce_max(start_samples) + WINDOW_SAMPLES - num_samples)
    windows['audio'] = tf.gather(
        tf.pad(example['audio'], [[0, pad]]),
        start_samples[:, None] + tf.range(WINDOW_SAMPLES))
  return windows


def _train_window(index: tf.Tensor, example: Mapping[str, tf.Tensor], *,
                  base_seed: tf.Tensor, modality: str
                  ) -> dict[str, tf.Tensor]:
  """One random window of a clip, still encoded, so that the shuffle buffer
  holds windows rather than whole clips.
  """
  seed = tf.random.experimental.stateless_fold_in(base_seed, index)
  start_seed, augment_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 2))

  def starts(last_start):
    return tf.reshape(tf.random.stateless_uniform(
        [], start_seed, 0, last_start + 1, dtype=tf.int32), [1])

  out = {k: v[0] for k, v in _cut_windows(example, starts, modality).items()}
  out.update(label=_multi_hot(example['labels']), seed=augment_seed)
  return out


def _window_starts(last_start: tf.Tensor) -> tf.Tensor:
  """16 starts evenly spaced over `[0, last_start]`, rounded (int32)."""
  steps = tf.range(WINDOWS_PER_CLIP, dtype=tf.float64) / (
      WINDOWS_PER_CLIP - 1)
  return tf.cast(tf.round(steps * tf.cast(last_start, tf.float64)), tf.int32)


def _eval_windows(clip: tf.Tensor, example: Mapping[str, tf.Tensor], *,
                  modality: str, process_index: int, process_count: int
                  ) -> tf.data.Dataset:
  """The 16 windows of one clip, still encoded (int16 audio, JPEG frames)."""
  windows = _cut_windows(example, _window_starts, modality)
  clip_index = tf.cast(clip, tf.int32) * process_count + process_index
  windows['clip_index'] = tf.fill([WINDOWS_PER_CLIP], clip_index)
  windows['label'] = tf.tile(_multi_hot(example['labels'])[None],
                             [WINDOWS_PER_CLIP, 1])
  return tf.data.Dataset.from_tensor_slices(windows)


def _reshape(batch: dict[str, np.ndarray], batch_dims: Sequence[int]
             ) -> dict[str, np.ndarray]:
  return {k: v.reshape(*batch_dims, *v.shape[1:]) for k, v in batch.items()}


def load(split: str, *, is_training: bool, batch_dims: Sequence[int],
         config: Mapping[str, Any], seed: int = 0, start_step: int = 0
         ) -> Iterator[dict[str, np.ndarray]]:
  """AudioSet batches of `split` ('train', 'eval', 'test', 'validation' or a
  TFDS split): endless random windows, or every clip's 16 windows once.
  """
  modality, builder_config = _check_config(config)
  batch_size = pipeline.batch_size_of(batch_dims)
  if start_step < 0:
    raise ValueError(f'start_step must be non-negative, got {start_step}.')
  builder = _builder(config)
  process_index, process_count = jax.process_index(), jax.process_count()
  host_split = tfds.split_for_jax_process(
      _split_name(split, config), process_index=process_index,
      process_count=process_count)
  decoders = None
  if builder_config == 'audio_video':
    # Frames stay JPEG bytes: a window decodes only its own 32 frames.
    decoders = {'video': tfds.decode.SkipDecoding()}
  read_config = tfds.ReadConfig(shuffle_seed=seed, add_tfds_id=False)
  dataset = builder.as_dataset(split=host_split, shuffle_files=is_training,
                               decoders=decoders, read_config=read_config)
  keep = ['audio', 'labels'] + (['video'] if 'video' in modality else [])
  dataset = dataset.map(lambda ex: {k: ex[k] for k in keep})
  options = tf.data.Options()
  options.deterministic = True
  dataset = dataset.with_options(options)
  if is_training:
    # Windows are cut before the shuffle buffer (seeded by their position in
    # the host's read order) and decoded after the skip, so resuming reads
    # but does not decode the skipped examples.
    base_seed = tf.constant([seed, process_index], tf.int64)
    dataset = dataset.repeat().enumerate().map(
        functools.partial(_train_window, base_seed=base_seed,
                          modality=modality),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.shuffle(_get(config, 'shuffle_buffer'), seed=seed,
                              reshuffle_each_iteration=True)
    dataset = dataset.skip(start_step * batch_size)
    dataset = dataset.map(
        functools.partial(_example, modality=modality, config=config,
                          training=True),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=True).prefetch(2)
    return (_reshape(b, batch_dims) for b in dataset.as_numpy_iterator())
  dataset = dataset.enumerate().flat_map(functools.partial(
      _eval_windows, modality=modality, process_index=process_index,
      process_count=process_count))
  dataset = dataset.map(
      functools.partial(_example, modality=modality, config=config,
                        training=False),
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  # The last batch is padded with zeros (mask 0) and clip index -1.
  return ({**b, 'clip_index': np.where(b['mask'] > 0, b['clip_index'], -1)}
          for b in pipeline.evaluation_batches(
              dataset, batch_dims=batch_dims, preprocess_fn=lambda x: x))
