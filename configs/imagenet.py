r"""ImageNet (ILSVRC-2012): the paper's headline run and its variants.

  python -m experiments.train --config=configs/imagenet.py

Variants (`variant=NAME`), with the paper's or model card's top-1:
  fourier      the headline: 8 interleaved cross-attends, shared weights
               (default; 78.0%, 44.9M parameters, 707.2B FLOPs/image).
  learned_pos  one cross-attend, 128-d learned positions (70.9%).
  permuted     one fixed pixel permutation (78.0%).
  perceiver_io_fourier, perceiver_io_learned, perceiver_io_conv
               DeepMind's released Perceiver IO classifiers' shapes (79.0%,
               72.7%, 82.1% once imported; docs/checkpoints.md).

`runlocal` runs in seconds on a CPU; `mock` reads TFDS mock data.
Ablations are overrides of `config.model.encoder`, e.g.
`share_weights=False` (326.2M), `num_cross_attends=1`,
`num_cross_attends=4 cross_attend_placement=start`. ASSUMED values follow
Perceiver IO (docs/paper.md section 4).
"""

import ml_collections

from configs import common
from perceiver_jax.interop import transformers_format

VARIANTS = ('fourier', 'learned_pos', 'permuted', 'perceiver_io_fourier',
            'perceiver_io_learned', 'perceiver_io_conv')
NUM_TRAIN_EXAMPLES = 1_281_167


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Returns the ImageNet config for `arg` ('variant=...,runlocal,mock')."""
  args = common.parse_arg(arg, flags=('runlocal', 'mock'),
                          options={'variant': VARIANTS})
  variant = args.get('variant', 'fourier')
  config = common.base_config()
  config.task = 'imagenet'
  config.variant = variant

  config.data = ml_collections.ConfigDict(dict(
      data_dir=ml_collections.FieldReference(None, field_type=str),
      mock=args['mock'],
      num_classes=1000,
      num_train_examples=NUM_TRAIN_EXAMPLES,
      image_shape=(224, 224),  # Crop size (H, W); the model's grid follows.
      eval_crop_fraction=224 / 256,
      # 'paper' (ours) or 'transformers' (their Perceiver image processor's,
      # set by experiments.import_checkpoint; data/transformers_preprocessing).
      eval_preprocessing='paper',
      randaugment_layers=4,
      randaugment_magnitude=5,  # Of 10.
      mixup_alpha=0.2,  # ASSUMED
      cutmix_alpha=1.0,  # ASSUMED
      shuffle_buffer=10_000,
      # Random JPEGs per split that TFDS mock data yields (with `mock`).
      mock_num_examples=20,
      threadpool_size=0,  # tf.data threads; 0: all cores.
  ))
  if args['mock']:
    # Epochs (and so the step schedule) are those of the mock data.
    config.data.num_train_examples = config.data.get_ref('mock_num_examples')
  config.model = common.perceiver_model()
  # The 7 repeated shared steps run under one scan: far faster compiles
  # (docs/performance.md).
  config.model.encoder.scan_blocks = True
  config.model.input = common.grid_input(
      key='image', index_dims=config.data.get_ref('image_shape'),
      raw_channels=3, num_bands=64,
      max_resolution=None)  # None: mu = the crop size per axis (224).
  if variant == 'learned_pos':
    config.model.encoder.num_cross_attends = 1
    config.model.input.position_encoding = 'learned'
  elif variant == 'permuted':
    config.model.input.permutation_seed = 0
  elif variant.startswith('perceiver_io_'):
    released = transformers_format.RELEASED_CONFIGS[
        'deepmind/vision-perceiver-' + variant[len('perceiver_io_'):]]
    transformers_format.merge_model_config(
        config.model, transformers_format.model_config(
            released, image_size=config.data.image_shape))
    # The grid follows the crop size, as in the other variants.
    config.model.input.index_dims = config.data.get_ref('image_shape')
    config.data.eval_preprocessing = 'transformers'

  config.train.batch_size = 1024  # ASSUMED
  config.train.num_epochs = 120.0
  config.train.eval_every_steps = 5000
  config.train.checkpoint_every_steps = 5000

  # No warm-up, weight decay 0.1, clipping at 10: ASSUMED (see lamb_recipe).
  common.lamb_recipe(config.optimizer, learning_rate=4e-3, schedule='step')
  config.optimizer.decay_epochs = (84, 102, 114)  # Each times 0.1.
  config.loss.label_smoothing = 0.1  # ASSUMED

  config.evaluator.split = 'validation'

  if args['runlocal']:
    config.data.image_shape = (32, 32)
    config.data.shuffle_buffer = 64
    common.paper_scale_runlocal(config)
    if 'num_bands' in config.model.input:
      config.model.input.num_bands = 4
  return config
