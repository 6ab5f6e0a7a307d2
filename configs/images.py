r"""Image classification on any TFDS image dataset or a folder of images.

  python -m experiments.train --config=configs/images.py:dataset=cifar10
  python -m experiments.train --config=configs/images.py:dataset=folder \
      --config.data.folder=DIR      # DIR/<split>/<class>/<image files>

Class count, label names, image size and training examples come from the
data at launch (`perceiver_jax.data.images.complete_config`); override
`config.data.image_shape` to train at another size. A TFDS dataset's splits
take TFDS split syntax (`--config.data.train_split='train[:90%]'`,
`--config.evaluator.split='train[90%:]'`); a folder's split is its
subfolder's name.

Arguments (`--config=configs/images.py:ARG,...`):
  dataset=NAME  a TFDS dataset, or 'folder' (default 'folder').
  model=small   a CPU-sized Perceiver (default): 28x28 to 64x64 images train
                in minutes on a CPU (docs/your_data.md).
  model=paper   the paper's ImageNet architecture (configs/imagenet.py).
  finetune      the fine-tuning recipe (AdamW at 3e-4, 100 warm-up steps,
                cosine decay over 10 epochs) for `--config.init_from=RUN`
                (perceiver_jax/train/finetune.py); with
                `--config.finetune.freeze_encoder=True`, a linear probe.
  runlocal      seconds on a CPU; `mock` reads TFDS mock data.
"""

import ml_collections

from configs import common
from configs import imagenet as imagenet_config


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Returns the config for `arg` ('dataset=...,model=...,runlocal')."""
  args = common.parse_arg(arg, flags=('runlocal', 'mock', 'finetune'),
                          options={'model': ('small', 'paper'),
                                   'dataset': None})
  config = common.base_config()
  config.task = 'images'
  config.data = ml_collections.ConfigDict(dict(
      dataset=args.get('dataset', 'folder'),
      folder='',  # dataset=folder: DIR/<split>/<class>/<files>.
      data_dir=ml_collections.FieldReference(None, field_type=str),
      mock=args['mock'],
      mock_num_examples=16,
      train_split='train',
      # None or empty: filled from the data at launch.
      num_classes=ml_collections.FieldReference(None, field_type=int),
      num_train_examples=ml_collections.FieldReference(None, field_type=int),
      label_names=ml_collections.FieldReference((), field_type=tuple),
      image_shape=ml_collections.FieldReference((), field_type=tuple),
      channels=3,  # 1: decode as grey (then normalization='unit').
      normalization='imagenet',  # Or 'unit': pixels / 255.
      random_crop=True,
      flip=True,
      eval_crop_fraction=1.0,
      eval_preprocessing='paper',  # Or 'transformers' (imported models).
      randaugment_layers=0,
      randaugment_magnitude=5,
      mixup_alpha=0.0,
      cutmix_alpha=0.0,
      shuffle_buffer=10_000,
      # A small folder, decoded once and shuffled as configs/digits.py's
      # data (file-name order; flip is its only augmentation).
      in_memory=False,
      threadpool_size=0,
  ))

  paper = args.get('model') == 'paper'
  config.model = (imagenet_config.get_config().model if paper else
                  common.small_model())
  config.model.input = common.grid_input(
      key='image', index_dims=config.data.get_ref('image_shape'),
      raw_channels=config.data.get_ref('channels'),
      num_bands=64 if paper else 16, max_resolution=None)

  config.train.batch_size = 64
  config.train.num_epochs = 30.0
  config.train.log_every_steps = 100
  config.train.eval_every_steps = 1000
  config.train.checkpoint_every_steps = 1000
  common.adamw_cosine(config.optimizer, weight_decay=0.05)
  config.loss.label_smoothing = 0.1
  config.evaluator.split = 'test'
  config.evaluator.batch_size = 128
  config.init_from = ''  # A run (or step) directory to start from.
  config.finetune = ml_collections.ConfigDict(dict(freeze_encoder=False))
  if args['finetune']:
    config.optimizer.update(learning_rate=3e-4, warmup_steps=100)
    config.train.num_epochs = 10.0

  if args['runlocal']:
    config.data.shuffle_buffer = 64
    common.small_runlocal(config, eval_batch_size=16)
    config.evaluator.max_examples = 32
    if args['finetune']:
      config.optimizer.warmup_steps = 2
  return config
