r"""ModelNet40 point clouds: the paper's run (85.7% top-1, docs/paper.md
section 4).

  python -m perceiver_jax.data.modelnet40 --manual_dir=DIR --config=official
  python -m experiments.train --config=configs/modelnet40.py

`runlocal` runs in seconds on a CPU; `mock` builds a tiny generated
ModelNet40. Readings (ASSUMED where the paper is silent): ImageNet's 8
latent Transformers of 6 shared layers with 2 interleaved cross-attends
(the other reading: `--config.model.encoder.num_blocks=2`); Fourier
features of (x, y, z) with 64 bands up to 1120 ("10x ImageNet"), i.e.
mu = 2240, C = 3 * (2 * 64 + 1) = 387; 2,048 points.
"""

import ml_collections

from configs import common

NUM_TRAIN_EXAMPLES = 9843
NUM_TEST_EXAMPLES = 2468


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Returns the ModelNet40 config for `arg` ('runlocal', 'mock', both)."""
  args = common.parse_arg(arg, flags=('runlocal', 'mock'))
  config = common.base_config()
  config.task = 'modelnet40'

  config.data = ml_collections.ConfigDict(dict(
      data_dir=ml_collections.FieldReference(None, field_type=str),
      builder_config='official',  # Or 'resampled' (pre-sampled points).
      mock=args['mock'],
      mock_train_per_class=8,
      mock_test_per_class=4,
      num_classes=40,
      num_train_examples=NUM_TRAIN_EXAMPLES,
      num_points=2048,
      scale_range=(0.99, 1.01),  # Per-point scaling, then re-normalised.
  ))
  config.model = common.perceiver_model(num_cross_attends=2)
  config.model.input = ml_collections.ConfigDict(dict(
      type='points',
      key='points',
      num_points=config.data.get_ref('num_points'),
      num_bands=64,
      max_resolution=(2240.0, 2240.0, 2240.0),  # Highest frequency 1120.
  ))

  config.train.batch_size = 512
  config.train.num_steps = 50_000
  config.train.eval_every_steps = 2500
  config.train.checkpoint_every_steps = 2500

  # Weight decay and clipping as ImageNet's (ASSUMED; see lamb_recipe).
  common.lamb_recipe(config.optimizer, learning_rate=1e-3,
                     schedule='constant')

  if args['runlocal']:
    config.data.num_points = 64
    config.data.mock_train_per_class = 4
    config.data.mock_test_per_class = 2
    common.paper_scale_runlocal(config)
    config.model.input.num_bands = 4
  if args['mock']:
    # The mock dataset's size (4 classes), so that epochs mean the same.
    config.data.num_train_examples = 4 * config.data.mock_train_per_class
  return config
