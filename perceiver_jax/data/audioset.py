"""AudioSet loader: 1.28 s windows of raw audio, mel spectrogram and video.

Reads the `audioset` TFDS dataset prepared by
`perceiver_jax.data.builders.audioset` (48 kHz mono int16 audio, 25 fps
JPEG frames, class indices) and yields batches for the data API
(`load`, `num_examples`).

Windows (docs/paper.md section 4): 32 frames at 25 fps = 1.28 s = 61,440
samples at 48 kHz (1,920 samples per frame).

- Training: one window per clip at a random start. Audio-only modalities
  draw the start sample uniformly in `[0, max(0, n - 61,440)]` (n: the
  clip's samples); modalities with video draw the start frame uniformly in
  `[0, max(0, L - 32)]` (L: the clip's length in frames) and take audio from
  sample `1,920 * start frame`, so sound and picture stay aligned.
- Evaluation: 16 windows per clip, evenly spaced from the clip's start to
  its end: starts `round(k * S / 15)`, k = 0..15, where S is the last start
  (`n - 61,440` samples, or `L - 32` frames with video). For a full 10 s
  clip the stride is 27,904 samples (0.581 s) for audio alone and about
  14.5 frames (starts rounded to whole frames) with video. Each window is
  one example; `'clip_index'` (int32) names its clip so the evaluator can
  average the 16 predictions of a clip: `local_clip * process_count +
  process_index`, unique over all hosts; -1 on padding.
- Clips shorter than a window (or shorter than 10 s) are padded: audio with
  zeros, video by repeating the last frame.

Batch keys (leading dims `batch_dims`), only those the modality needs:

- `'audio'` float32 `[..., 61440]`, raw samples in [-1, 1] ('raw*').
- `'mel'` float32 `[..., 96, 50]`, log-mel spectrogram (`audio.MelParams`)
  ('mel*'), with SpecAugment in training when enabled.
- `'video'` float32 `[..., 32, H, W, 3]` ('*video'), RGB scaled to [0, 1]
  then normalised with the ImageNet mean and std. Training: one
  Inception-style crop (area and aspect ranges below) for all 32 frames,
  resized to `video_size`, a horizontal flip with probability 1/2 and
  colour jitter (brightness, contrast and saturation factors drawn from
  `[1 - s, 1 + s]`, hue shift from `[-h, h]`, applied in that order, the
  same for all frames). Evaluation: the central square crop of
  `video_eval_crop_fraction` of the shorter side, resized to `video_size`.
- `'label'` float32 `[..., 527]` multi-hot; `'mask'` float32 `[...]`;
  `'clip_index'` int32 `[...]` (evaluation only).

`config.data` fields read here:

- `data_dir` (str or None): the TFDS data dir holding `audioset/`.
- `builder_config` ('audio' | 'audio_video'): which prepared config to read;
  modalities with video need 'audio_video'.
- `modality` ('raw' | 'mel' | 'video' | 'raw_video' | 'mel_video').
- `train_split` (default 'balanced_train+unbalanced_train') and `eval_split`
  (default 'eval'): what `load('train')` and `load('eval' | 'test' |
  'validation')` read; any other split string goes to TFDS as it is.
- `mock` (bool): generate a tiny AudioSet in the real formats (CSVs and
  PyAV-encoded clips, see `builders.audioset_fake`) in a temporary folder,
  build it with the real builder and read it back.
- `num_classes` (527).
- `spec_augment` (bool) and optionally `spec_augment_freq_masks` (2),
  `spec_augment_max_freq_width` (10), `spec_augment_time_masks` (2),
  `spec_augment_max_time_width` (16).
- `video_size` ((224, 224)), `video_crop_area_range` ((0.08, 1.0)),
  `video_crop_aspect_range` ((3/4, 4/3)), `video_eval_crop_fraction`
  (0.875), `video_brightness`, `video_contrast`, `video_saturation` (0.4
  each) and `video_hue` (0.1).
- `shuffle_buffer` (10,000): windows, not clips, are buffered: about
  120 KB each for audio, plus about 0.8 MB of JPEGs with video at the
  stored 256-px size (so about 1.2 GB, or 9 GB with video, at 10,000;
  lower it for video runs on small hosts).

Determinism: the training order is fixed by (seed, host, start_step): TFDS
file order and the shuffle buffer are seeded and every random choice (the
window's start, then the augmentation) is a stateless op seeded by (seed,
host, the clip's position in the host's read stream), so starting at
`start_step` skips exactly `start_step` batches of the same stream (the
skipped windows are read and cut, not decoded).
"""

import atexit
import functools
import math
import shutil
import tempfile
from typing import Any, Iterator, Mapping, Optional, Sequence

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from perceiver_jax.data import audio as audio_lib
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
  modality = _get(config, 'modality')
  if modality not in MODALITIES:
    raise ValueError(f'config.data.modality must be one of {MODALITIES}, '
                     f'got {modality!r}.')
  builder_config = _get(config, 'builder_config')
  if builder_config not in BUILDER_CONFIGS:
    raise ValueError(f'config.data.builder_config must be one of '
                     f'{BUILDER_CONFIGS}, got {builder_config!r}.')
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


def _hide_gpus() -> None:
  """Keeps TensorFlow off the GPUs (JAX owns them) where still possible."""
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:
    # TF was initialised already (by the caller): its choice stands.
    pass


def _builder(config: Mapping[str, Any]) -> tfds.core.DatasetBuilder:
  _, builder_config = _check_config(config)
  _hide_gpus()
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
  builder = _builder(config)
  return builder.info.splits[_split_name(split, config)].num_examples


def _multi_hot(labels: tf.Tensor) -> tf.Tensor:
  """Class indices `[k]` -> float32 `[527]` (k may be 0)."""
  one_hot = tf.one_hot(tf.cast(labels, tf.int32), NUM_CLASSES)
  return tf.minimum(tf.reduce_sum(one_hot, axis=0), 1.0)


def _audio_window(audio: tf.Tensor, start: tf.Tensor) -> tf.Tensor:
  """int16 `[n]` -> int16 `[61440]` from `start`, zero-padded at the end."""
  pad = tf.maximum(0, start + WINDOW_SAMPLES - tf.shape(audio)[0])
  audio = tf.pad(audio, [[0, pad]])
  return tf.ensure_shape(audio[start:start + WINDOW_SAMPLES],
                         [WINDOW_SAMPLES])


def _clip_frames(example: Mapping[str, tf.Tensor], with_video: bool
                 ) -> tf.Tensor:
  """The clip's length in frames (the longer of its audio and video)."""
  audio_frames = -(-tf.shape(example['audio'])[0] // SAMPLES_PER_FRAME)
  if not with_video:
    return audio_frames
  return tf.maximum(audio_frames, tf.shape(example['video'])[0])


def _frame_indices(video: tf.Tensor, start: tf.Tensor) -> tf.Tensor:
  """32 frame indices from `start`, the last frame repeated past the end."""
  last = tf.shape(video)[0] - 1
  return tf.minimum(start + tf.range(WINDOW_FRAMES), last)


def _decode_frames(encoded: tf.Tensor, crop_window: tf.Tensor) -> tf.Tensor:
  """JPEGs `[32]` -> uint8 `[32, h, w, 3]` cropped to `[y, x, h, w]`."""
  def decode(jpeg):
    return tf.image.decode_and_crop_jpeg(jpeg, crop_window, channels=3)
  return tf.map_fn(decode, encoded, fn_output_signature=tf.uint8)


def _normalise_video(frames: tf.Tensor) -> tf.Tensor:
  return (frames - tf.constant(IMAGENET_MEAN)) / tf.constant(IMAGENET_STD)


def _train_video(encoded: tf.Tensor, seed: tf.Tensor,
                 config: Mapping[str, Any]) -> tf.Tensor:
  """32 JPEGs -> float32 `[32, H, W, 3]`: crop, flip, jitter, normalise."""
  seeds = tf.random.experimental.stateless_split(seed, 7)
  shape = tf.image.extract_jpeg_shape(encoded[0])
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
      seed=seeds[0], min_object_covered=0.0,
      aspect_ratio_range=tuple(_get(config, 'video_crop_aspect_range')),
      area_range=tuple(_get(config, 'video_crop_area_range')),
      max_attempts=10, use_image_if_no_bounding_boxes=True)
  crop_window = tf.stack([begin[0], begin[1], size[0], size[1]])
  frames = _decode_frames(encoded, crop_window)
  frames = tf.image.resize(tf.cast(frames, tf.float32) / 255.0,
                           tuple(_get(config, 'video_size')),
                           method='bilinear', antialias=True)
  flip = tf.random.stateless_uniform([], seeds[1]) < 0.5
  frames = tf.cond(flip, lambda: tf.reverse(frames, axis=[2]),
                   lambda: frames)

  def factor(strength, seed):
    return tf.random.stateless_uniform([], seed, 1.0 - strength,
                                       1.0 + strength)
  brightness = _get(config, 'video_brightness')
  contrast = _get(config, 'video_contrast')
  saturation = _get(config, 'video_saturation')
  hue = _get(config, 'video_hue')
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
  return _normalise_video(tf.clip_by_value(frames, 0.0, 1.0))


def _eval_video(encoded: tf.Tensor, config: Mapping[str, Any]) -> tf.Tensor:
  """32 JPEGs -> float32 `[32, H, W, 3]`: central crop, resize, normalise."""
  shape = tf.image.extract_jpeg_shape(encoded[0])
  side = tf.cast(tf.round(
      _get(config, 'video_eval_crop_fraction') *
      tf.cast(tf.minimum(shape[0], shape[1]), tf.float32)), tf.int32)
  side = tf.maximum(side, 1)
  crop_window = tf.stack([(shape[0] - side) // 2, (shape[1] - side) // 2,
                          side, side])
  frames = _decode_frames(encoded, crop_window)
  frames = tf.image.resize(tf.cast(frames, tf.float32) / 255.0,
                           tuple(_get(config, 'video_size')),
                           method='bilinear', antialias=True)
  return _normalise_video(tf.clip_by_value(frames, 0.0, 1.0))


def _audio_features(window: tf.Tensor, modality: str, seed: Optional[tf.Tensor],
                    config: Mapping[str, Any]) -> dict[str, tf.Tensor]:
  if modality.startswith('raw'):
    return {'audio': window}
  if modality.startswith('mel'):
    mel = audio_lib.log_mel_spectrogram(window, MEL_PARAMS)
    if seed is not None and _get(config, 'spec_augment'):
      mel = audio_lib.spec_augment(mel, seed, audio_lib.SpecAugmentParams(
          num_freq_masks=_get(config, 'spec_augment_freq_masks'),
          max_freq_width=_get(config, 'spec_augment_max_freq_width'),
          num_time_masks=_get(config, 'spec_augment_time_masks'),
          max_time_width=_get(config, 'spec_augment_max_time_width')))
    return {'mel': mel}
  return {}


def _train_window(index: tf.Tensor, example: Mapping[str, tf.Tensor], *,
                  base_seed: tf.Tensor, modality: str
                  ) -> dict[str, tf.Tensor]:
  """One random window of one clip, still encoded (int16, JPEG bytes).

  Runs before the shuffle buffer, so that the buffer holds windows (about
  120 KB of audio, 32 JPEGs) rather than whole clips.
  """
  seed = tf.random.experimental.stateless_fold_in(base_seed, index)
  start_seed, augment_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 2))
  with_video = 'video' in modality
  out = {'label': _multi_hot(example['labels']), 'seed': augment_seed}
  if with_video:
    last_start = tf.maximum(0, _clip_frames(example, True) - WINDOW_FRAMES)
    start_frame = tf.random.stateless_uniform(
        [], start_seed, 0, last_start + 1, dtype=tf.int32)
    start_sample = start_frame * SAMPLES_PER_FRAME
    out['video'] = tf.gather(example['video'],
                             _frame_indices(example['video'], start_frame))
  else:
    last_start = tf.maximum(0, tf.shape(example['audio'])[0] - WINDOW_SAMPLES)
    start_sample = tf.random.stateless_uniform(
        [], start_seed, 0, last_start + 1, dtype=tf.int32)
  if modality != 'video':
    out['audio'] = _audio_window(example['audio'], start_sample)
  return out


def _train_example(window: Mapping[str, tf.Tensor], *, modality: str,
                   config: Mapping[str, Any]) -> dict[str, tf.Tensor]:
  """Decodes and augments a window from `_train_window`."""
  video_seed, audio_seed = tf.unstack(
      tf.random.experimental.stateless_split(window['seed'], 2))
  out = {'label': window['label'], 'mask': tf.constant(1.0)}
  if 'video' in modality:
    out['video'] = _train_video(window['video'], video_seed, config)
  if modality != 'video':
    samples = tf.cast(window['audio'], tf.float32) / 32768.0
    out.update(_audio_features(samples, modality, audio_seed, config))
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
  with_video = 'video' in modality
  windows = {}
  if with_video:
    last_start = tf.maximum(0, _clip_frames(example, True) - WINDOW_FRAMES)
    start_frames = _window_starts(last_start)
    start_samples = start_frames * SAMPLES_PER_FRAME
    windows['video'] = tf.gather(
        example['video'],
        tf.minimum(start_frames[:, None] + tf.range(WINDOW_FRAMES),
                   tf.shape(example['video'])[0] - 1))
  else:
    start_samples = _window_starts(
        tf.maximum(0, tf.shape(example['audio'])[0] - WINDOW_SAMPLES))
  if modality != 'video':
    audio = example['audio']
    pad = tf.maximum(0, start_samples[-1] + WINDOW_SAMPLES - tf.shape(audio)[0])
    audio = tf.pad(audio, [[0, pad]])
    windows['audio'] = tf.gather(
        audio, start_samples[:, None] + tf.range(WINDOW_SAMPLES))
  clip_index = tf.cast(clip, tf.int32) * process_count + process_index
  windows['clip_index'] = tf.fill([WINDOWS_PER_CLIP], clip_index)
  windows['label'] = tf.tile(_multi_hot(example['labels'])[None],
                             [WINDOWS_PER_CLIP, 1])
  return tf.data.Dataset.from_tensor_slices(windows)


def _eval_example(window: Mapping[str, tf.Tensor], *, modality: str,
                  config: Mapping[str, Any]) -> dict[str, tf.Tensor]:
  out = {'label': window['label'], 'clip_index': window['clip_index'],
         'mask': tf.constant(1.0)}
  if 'video' in modality:
    out['video'] = _eval_video(window['video'], config)
  if modality != 'video':
    samples = tf.cast(window['audio'], tf.float32) / 32768.0
    out.update(_audio_features(samples, modality, None, config))
  return out


def _reshape(batch: dict[str, np.ndarray], batch_dims: Sequence[int]
             ) -> dict[str, np.ndarray]:
  return {k: v.reshape(*batch_dims, *v.shape[1:]) for k, v in batch.items()}


def _padded_batches(dataset: tf.data.Dataset, batch_size: int,
                    batch_dims: Sequence[int]) -> Iterator[dict[str, Any]]:
  """Finite batches; the last one padded with zeros (mask 0, clip -1)."""
  for batch in dataset.batch(batch_size).prefetch(2).as_numpy_iterator():
    size = batch['mask'].shape[0]
    if size < batch_size:
      padded = {}
      for key, value in batch.items():
        fill = -1 if key == 'clip_index' else 0
        pad = np.full((batch_size - size, *value.shape[1:]), fill,
                      value.dtype)
        padded[key] = np.concatenate([value, pad])
      batch = padded
    yield _reshape(batch, batch_dims)


def load(split: str, *, is_training: bool, batch_dims: Sequence[int],
         config: Mapping[str, Any], seed: int = 0, start_step: int = 0
         ) -> Iterator[dict[str, np.ndarray]]:
  """AudioSet batches (see the module docstring for keys and windows).

  Args:
    split: 'train', 'eval' (also 'test', 'validation'), or a TFDS split of
      the `audioset` dataset (e.g. 'balanced_train', 'eval[:10%]').
    is_training: an infinite stream of random augmented windows, or the 16
      windows of every clip of this host's shard once, in a fixed order.
    batch_dims: leading dims of every array; their product is this host's
      batch (of windows).
    config: `config.data`.
    seed: base seed of the order and the augmentation (training).
    start_step: batches to skip (training), to resume a run.

  Returns:
    An iterator of numpy batches.
  """
  modality, builder_config = _check_config(config)
  batch_dims = tuple(int(d) for d in batch_dims)
  if not batch_dims or any(d < 1 for d in batch_dims):
    raise ValueError(f'batch_dims must be positive, got {batch_dims}.')
  batch_size = math.prod(batch_dims)
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
        functools.partial(_train_example, modality=modality, config=config),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=True).prefetch(2)
    return (_reshape(b, batch_dims) for b in dataset.as_numpy_iterator())
  dataset = dataset.enumerate().flat_map(functools.partial(
      _eval_windows, modality=modality, process_index=process_index,
      process_count=process_count))
  dataset = dataset.map(
      functools.partial(_eval_example, modality=modality, config=config),
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return _padded_batches(dataset, batch_size, batch_dims)
