"""Tests of the losses and the optimizer/schedule construction."""

import math

import haiku as hk
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import common
from configs import imagenet
from perceiver_jax.train import losses
from perceiver_jax.train import loop
from perceiver_jax.train import optim


def test_softmax_loss_with_label_smoothing_by_hand():
  logits = jnp.array([[2.0, 0.0, -1.0]])
  # log-softmax by hand.
  z = math.log(math.exp(2) + math.exp(0) + math.exp(-1))
  log_p = [2 - z, 0 - z, -1 - z]
  smoothing = 0.3
  target = [1 - smoothing + smoothing / 3, smoothing / 3, smoothing / 3]
  expected = -sum(t * lp for t, lp in zip(target, log_p))
  got = losses.per_example_loss(logits, jnp.array([0]),
                                loss_type='softmax_xent',
                                label_smoothing=smoothing)
  np.testing.assert_allclose(got, [expected], rtol=1e-6)


def test_sigmoid_loss_by_hand():
  logits = jnp.array([[0.5, -2.0]])
  labels = jnp.array([[1.0, 0.0]])
  sig = lambda x: 1 / (1 + math.exp(-x))
  expected = -math.log(sig(0.5)) - math.log(1 - sig(-2.0))
  got = losses.per_example_loss(logits, labels, loss_type='sigmoid_xent')
  np.testing.assert_allclose(got, [expected], rtol=1e-6)


def test_masked_mean_ignores_padding():
  values = jnp.array([1.0, 3.0, 100.0])
  assert float(losses.masked_mean(values, jnp.array([1.0, 1.0, 0.0]))) == 2.0


def test_unknown_loss_type():
  with pytest.raises(ValueError, match="'hinge'"):
    losses.per_example_loss(jnp.zeros((1, 2)), jnp.array([0]),
                            loss_type='hinge')


def test_weight_decay_mask_skips_biases_and_layer_norm():
  params = {
      'lin': {'w': jnp.ones((2, 2)), 'b': jnp.ones(2)},
      'norm': {'scale': jnp.ones(2), 'offset': jnp.ones(2)},
      'perceiver': {'latents': jnp.ones((4, 2))},
  }
  mask = optim.weight_decay_mask(params)
  assert mask == {'lin': {'w': True, 'b': False},
                  'norm': {'scale': False, 'offset': False},
                  'perceiver': {'latents': True}}


def test_decay_skips_masked_parameters():
  params = {'lin': {'w': jnp.ones(3), 'b': jnp.ones(3)}}
  config = ml_collections.ConfigDict(dict(
      name='adamw', learning_rate=0.1, weight_decay=0.5, b1=0.9, b2=0.999,
      eps=1e-8))
  tx = optim.make_optimizer(config, optax.constant_schedule(0.1))
  zero_grads = hk.data_structures.map(lambda m, n, p: jnp.zeros_like(p),
                                      params)
  updates, _ = tx.update(zero_grads, tx.init(params), params)
  # With zero gradients only weight decay moves w: -lr * wd * w.
  np.testing.assert_allclose(updates['lin']['w'], -0.05 * np.ones(3),
                             rtol=1e-6)
  np.testing.assert_array_equal(updates['lin']['b'], np.zeros(3))


def test_step_schedule_follows_batch_size_override():
  config = imagenet.get_config()
  length = loop.run_length(config)
  assert length.total_steps == math.ceil(120 * 1_281_167 / 1024)
  schedule = optim.learning_rate_schedule(
      config.optimizer, total_steps=length.total_steps,
      steps_per_epoch=length.steps_per_epoch)
  boundary = int(84 * 1_281_167 / 1024)
  assert float(schedule(boundary - 1)) == pytest.approx(4e-3)
  assert float(schedule(boundary)) == pytest.approx(4e-4)
  assert float(schedule(int(114 * 1_281_167 / 1024))) == pytest.approx(4e-6)

  config.train.batch_size = 512  # Twice the steps, boundaries move too.
  length = loop.run_length(config)
  assert length.total_steps == math.ceil(120 * 1_281_167 / 512)
  schedule = optim.learning_rate_schedule(
      config.optimizer, total_steps=length.total_steps,
      steps_per_epoch=length.steps_per_epoch)
  boundary = int(84 * 1_281_167 / 512)
  assert float(schedule(boundary - 1)) == pytest.approx(4e-3)
  assert float(schedule(boundary)) == pytest.approx(4e-4)


def test_warmup_then_cosine():
  config = common.base_config().optimizer
  config.update(schedule='cosine', learning_rate=1.0, warmup_steps=10)
  schedule = optim.learning_rate_schedule(config, total_steps=110,
                                          steps_per_epoch=1.0)
  assert float(schedule(0)) == 0.0
  assert float(schedule(5)) == pytest.approx(0.5)
  assert float(schedule(10)) == pytest.approx(1.0)
  assert float(schedule(60)) == pytest.approx(0.5, abs=1e-6)
  assert float(schedule(110)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize('field,value,match', [
    ('learning_rate', -1.0, 'learning_rate must be positive'),
    ('learning_rate', float('nan'), 'learning_rate must be a finite'),
    ('schedule', 'linear', "'linear'"),
    ('name', 'adagrad', "'adagrad'"),
    ('clip_global_norm', 0.0, 'clip_global_norm must be positive'),
])
def test_bad_optimizer_values_are_named(field, value, match):
  config = common.base_config().optimizer
  config[field] = value
  with pytest.raises(ValueError, match=match):
    schedule = optim.learning_rate_schedule(config, total_steps=10,
                                            steps_per_epoch=1.0)
    optim.make_optimizer(config, schedule)


@pytest.mark.parametrize('field,value,match', [
    ('num_steps', 0, 'num_steps must be a positive integer'),
    ('batch_size', 0, 'batch_size must be a positive integer'),
    ('log_every_steps', 0, 'log_every_steps'),
])
def test_bad_run_lengths_are_named(field, value, match):
  config = imagenet.get_config('runlocal')
  config.train[field] = value
  with pytest.raises(ValueError, match=match):
    loop.run_length(config)
