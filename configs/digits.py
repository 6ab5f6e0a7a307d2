r"""The embedded default: scikit-learn's handwritten digits (8x8, 10 classes).

A small Perceiver with the paper's structure reaches about 97% test
accuracy in a couple of minutes on a CPU; `runlocal` takes seconds:

  python -m experiments.train                       # this config
  python -m experiments.train --config=configs/digits.py:runlocal
"""

import ml_collections

from configs import common

NUM_TRAIN_EXAMPLES = 1437  # 80% of 1,797, stratified.


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Returns the digits config for `arg` ('' or 'runlocal')."""
  args = common.parse_arg(arg, flags=('runlocal',))
  config = common.base_config()
  config.task = 'digits'
  config.data = ml_collections.ConfigDict(dict(
      num_classes=10,
      num_train_examples=NUM_TRAIN_EXAMPLES,
      test_fraction=0.2,
      split_seed=0,
      max_shift=0,  # Training images move by up to this many pixels.
  ))
  config.model = common.small_model()
  config.model.input = common.grid_input(
      key='image', index_dims=(8, 8), raw_channels=1, num_bands=8,
      max_resolution=(8, 8))

  config.train.num_steps = 1500
  config.train.eval_every_steps = 500
  config.train.checkpoint_every_steps = 500

  # 85K parameters fit 1,437 images in a few hundred steps; weight decay
  # and label smoothing keep them from memorising (96% -> 97% test).
  common.adamw_cosine(config.optimizer, weight_decay=0.05)
  config.loss.label_smoothing = 0.1

  config.evaluator.batch_size = 128

  if args['runlocal']:
    common.small_runlocal(config, eval_batch_size=64)
  return config
