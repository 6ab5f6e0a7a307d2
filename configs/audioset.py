r"""AudioSet (527 classes, multi-label): audio, video and audio + video.

  python -m experiments.train --config=configs/audioset.py:variant=raw \
      --config.data.data_dir=/data/tfds

Variants (`variant=NAME`) and the paper's mAP (%):

  raw              raw audio, 480 patches of 128 samples (default)   38.3
  mel              log-mel spectrogram, 96 x 50 = 4,800 values       38.4
  video            2x8x8 space-time patches, 12,544 tokens           25.8
  raw_video        raw audio + video                                 43.5
  mel_video        mel + video                                       43.2
  mel_video_tuned  mel + video, no SpecAugment, 10% mel dropout      44.2

Prepare the data first (docs/audioset.md). `runlocal` runs in seconds on a
CPU; `mock` reads a tiny generated AudioSet, so `variant=mel,runlocal,mock`
runs anywhere. Model: 2 blocks, each a cross-attend and 8 unshared
self-attends (the 8-block reading: `--config.model.encoder.num_blocks=8`).
Sigmoid cross-entropy over 100 epochs; evaluation averages 16 windows per
clip into mAP. ASSUMED values (not in the paper) follow Perceiver IO's
AudioSet latents and this project's ImageNet optimizer.
"""

import ml_collections

from configs import common
from perceiver_jax.data import audioset as audioset_data

VARIANTS = ('raw', 'mel', 'video', 'raw_video', 'mel_video',
            'mel_video_tuned')
NUM_CLASSES = audioset_data.NUM_CLASSES
# "About 1.7M" training clips (docs/paper.md); the prepared dataset's own count
# depends on how many clips could be downloaded: set it with
# --config.data.num_train_examples=N to keep epochs exact.
NUM_TRAIN_EXAMPLES = 1_700_000
# Training clips of the mock that build (3 of 4 balanced, 1 of 2 unbalanced:
# one file is corrupt, one missing); with `mock`, epochs are the mock's.
MOCK_NUM_TRAIN_EXAMPLES = 4


def _audio_input(raw: bool, num_bands: int) -> ml_collections.ConfigDict:
  # max_resolution None: mu = the grid, 480 patches of 128 samples (raw) or
  # the mel spectrogram's (96, 50).
  fields = (dict(type='raw_audio', key='audio', samples_per_patch=128,
                 num_samples=audioset_data.WINDOW_SAMPLES) if raw else
            dict(type='mel', key='mel', index_dims=audioset_data.MEL_SHAPE))
  return ml_collections.ConfigDict(dict(
      fields, num_bands=num_bands,
      max_resolution=ml_collections.FieldReference(None, field_type=tuple)))


def _video_input(data: ml_collections.ConfigDict,
                 num_bands: int) -> ml_collections.ConfigDict:
  # (T, H, W) follows data.video_size, so overriding the frame size moves
  # the model's grid too.
  index_dims = ml_collections.FieldReference(
      (audioset_data.WINDOW_FRAMES,), field_type=tuple) + data.get_ref(
          'video_size')
  return ml_collections.ConfigDict(dict(
      type='video', key='video', index_dims=index_dims,
      patch_shape=(2, 8, 8),  # 12,544 tokens of 384 values at 224x224.
      num_bands=num_bands,
      # None: mu = the patch grid, (16, 28, 28) at 224x224.
      max_resolution=ml_collections.FieldReference(None, field_type=tuple)))


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Returns the AudioSet config for `arg` ('variant=...,runlocal,mock')."""
  args = common.parse_arg(arg, flags=('runlocal', 'mock'),
                          options={'variant': VARIANTS})
  variant = args.get('variant', 'raw')
  modality = 'mel_video' if variant == 'mel_video_tuned' else variant
  with_video = 'video' in modality
  config = common.base_config()
  config.task = 'audioset'
  config.variant = variant

  # The loader's defaults (splits, SpecAugment and video augmentation),
  # with what this config chooses per variant.
  config.data = ml_collections.ConfigDict(dict(
      audioset_data.DEFAULTS,
      data_dir=ml_collections.FieldReference(None, field_type=str),
      mock=args['mock'],
      builder_config='audio_video' if with_video else 'audio',
      modality=modality,
      num_train_examples=NUM_TRAIN_EXAMPLES,
      spec_augment=modality.startswith('mel'),
      # Windows, not clips: about 120 KB each for audio, 0.9 MB with video
      # frames (JPEGs), so about 1.2 GB or 1.8 GB of host memory.
      shuffle_buffer=2_000 if with_video else 10_000,
  ))

  if args['mock']:
    config.data.num_train_examples = MOCK_NUM_TRAIN_EXAMPLES

  config.model = common.perceiver_model(
      num_blocks=2,  # Our reading: 2 interleaved cross-attends = 2 blocks.
      num_self_attends_per_block=8,
      num_cross_attends=2,
      share_weights=False,
      num_latents=512,  # ASSUMED (Perceiver IO)
      num_latent_channels=512,  # ASSUMED (Perceiver IO)
      num_self_heads=8,
      num_cross_heads=1)
  audio_bands, mel_bands, video_bands = 64, 32, 32
  if args['runlocal']:
    audio_bands = mel_bands = video_bands = 4
  raw = modality.startswith('raw')
  audio = _audio_input(raw, audio_bands if raw else mel_bands)
  if modality in ('raw', 'mel'):
    config.model.input = audio
  elif modality == 'video':
    config.model.input = _video_input(config.data, video_bands)
  else:
    config.model.input = ml_collections.ConfigDict(dict(
        type='audio_video', audio=audio,
        video=_video_input(config.data, video_bands),
        num_modality_channels=4,
        video_dropout=0.3,
        audio_dropout=0.0))
  if variant == 'mel_video_tuned':
    config.data.spec_augment = False
    # "10% spectrogram dropout", read as for video dropout: all of an
    # example's spectrogram tokens masked out with probability 0.1 in
    # training (never together with its video).
    config.model.input.audio_dropout = 0.1

  config.loss.type = 'sigmoid_xent'

  config.train.batch_size = 1024  # ASSUMED
  config.train.num_epochs = 100.0
  config.train.eval_every_steps = 10_000
  config.train.checkpoint_every_steps = 5_000

  # ASSUMED: the ImageNet recipe (rate included) with a cosine decay.
  common.lamb_recipe(config.optimizer, learning_rate=4e-3, schedule='cosine')

  config.evaluator.type = 'multilabel_map'
  config.evaluator.metric = 'map'
  config.evaluator.split = 'eval'
  config.evaluator.windows_per_clip = audioset_data.WINDOWS_PER_CLIP
  config.evaluator.batch_size = 512  # Windows (32 clips).

  if args['runlocal']:
    config.data.video_size = (16, 16)  # 64 video tokens.
    config.data.shuffle_buffer = 16
    # Bands are set above; evaluation counts clips: 2 are 32 windows.
    common.paper_scale_runlocal(config, max_eval_examples=2)
  return config
