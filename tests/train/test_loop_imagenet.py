"""End-to-end ImageNet runs on TFDS mock data, one per variant."""

import numpy as np
import pytest

from configs import imagenet as imagenet_config
from perceiver_jax.model import position_encoding as pe
from perceiver_jax.train import loop


def _smoke_config(variant):
  config = imagenet_config.get_config(f'variant={variant},runlocal,mock')
  config.train.update(num_steps=2, log_every_steps=2, eval_every_steps=2,
                      checkpoint_every_steps=2)
  config.evaluator.max_examples = 8
  return config


@pytest.mark.parametrize('variant', imagenet_config.VARIANTS)
def test_runlocal_mock_trains_and_evaluates(variant, tmp_path):
  config = _smoke_config(variant)
  metrics = loop.train_and_evaluate(config, str(tmp_path))
  assert metrics['step'] == 2
  assert metrics['num_examples'] == 8
  assert 0.0 <= metrics['top1'] <= metrics['top5'] <= 1.0
  assert np.isfinite(metrics['loss'])
  assert (tmp_path / 'checkpoints' / '2').is_dir()
  saved = tmp_path / 'permutation.npy'
  assert saved.exists() == (variant == 'permuted')


def test_permutation_is_the_same_across_launches(tmp_path):
  first = imagenet_config.get_config('variant=permuted,runlocal,mock')
  second = imagenet_config.get_config('variant=permuted,runlocal,mock')
  seed = first.model.input.permutation_seed
  assert seed == second.model.input.permutation_seed
  num_positions = int(np.prod(first.model.input.index_dims))
  np.testing.assert_array_equal(pe.permutation(num_positions, seed),
                                pe.permutation(num_positions, seed))
  assert sorted(pe.permutation(num_positions, seed)) == list(
      range(num_positions))


def test_variant_models_match_the_paper_description():
  fourier = imagenet_config.get_config()
  assert fourier.model.encoder.num_cross_attends == 8
  assert fourier.model.encoder.share_weights
  assert fourier.model.input.position_encoding == 'fourier'
  assert fourier.model.input.num_bands == 64
  assert tuple(fourier.model.input.index_dims) == (224, 224)
  learned = imagenet_config.get_config('variant=learned_pos')
  assert learned.model.encoder.num_cross_attends == 1
  assert learned.model.input.position_encoding == 'learned'
  assert learned.model.input.learned_position_channels == 128
  permuted = imagenet_config.get_config('variant=permuted')
  assert permuted.model.input.permutation_seed is not None
  with pytest.raises(ValueError, match="'fourer'"):
    imagenet_config.get_config('variant=fourer')
