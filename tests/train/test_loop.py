"""Tests of the training loop: data parallelism, resumption, evaluation."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tests.helpers import command_utils
from configs import digits as digits_config
from perceiver_jax.data import digits
from perceiver_jax.data import in_memory
from perceiver_jax.train import checkpoint as checkpoint_lib
from perceiver_jax.train import evaluators
from perceiver_jax.train import loop
from perceiver_jax.train import parallel
from perceiver_jax.train import run_config

def _runlocal_config(**train_overrides) -> ml_collections.ConfigDict:
  config = digits_config.get_config('runlocal')
  config.train.update(train_overrides)
  return config


def _global_batch(config, size):
  batches = digits.load('train', is_training=True, batch_dims=[size],
                        config=config.data, seed=0)
  return next(batches)


def test_pmap_step_on_8_devices_equals_one_device_on_the_same_batch():
  config = _runlocal_config(batch_size=16)
  run = loop.Run(config, workdir='/nonexistent', read_only=True)
  global_batch = _global_batch(config, 16)
  state = run.fresh_state({k: v[None] for k, v in global_batch.items()})
  step_fn = loop.train_step_fn(run.forward.apply, run.optimizer, run.schedule,
                               config.loss)

  # 8 devices, 2 examples each.
  eight = jax.pmap(step_fn, axis_name=parallel.AXIS)
  sharded = {k: v.reshape(8, 2, *v.shape[1:]) for k, v in global_batch.items()}
  state8, metrics8 = eight(parallel.replicate(state), parallel.shard(sharded))
  state8 = parallel.unreplicate(state8)

  # One device with all 16 examples: the same function, mapped over a
  # single-member axis of the same name.
  one = jax.jit(jax.vmap(step_fn, axis_name=parallel.AXIS))
  state1, metrics1 = one(jax.tree.map(lambda x: jnp.asarray(x)[None], state),
                         {k: v[None] for k, v in global_batch.items()})
  state1 = jax.tree.map(lambda x: np.asarray(x[0]), state1)

  np.testing.assert_allclose(metrics8['loss'][0], metrics1['loss'][0],
                             rtol=1e-5)
  moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), state1.params,
                       state.params)
  assert max(jax.tree.leaves(moved)) > 1e-4  # The step did update.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
               state8.params, state1.params)


def _params_of_last_checkpoint(workdir, config):
  run = loop.Run(config, workdir, read_only=True)
  example = {k: v[None] for k, v in _global_batch(config, 16).items()}
  state = run.restore_state(example, run.checkpointer.latest_step())
  run.checkpointer.close()
  return state


def test_resumed_run_equals_uninterrupted_run(tmp_path, digits_run):
  # The uninterrupted run is conftest.py's (checkpoints and evaluations at
  # 3 and 6, which do not change the parameters); this one saves at 3 only
  # because it stops there.
  config = _runlocal_config(num_steps=6, checkpoint_every_steps=100,
                            eval_every_steps=100, log_every_steps=100)
  straight = digits_run[0]
  resumed = tmp_path / 'resumed'
  loop.train_and_evaluate(config, str(resumed), stop_after_steps=3)
  assert checkpoint_lib.Checkpointer(
      str(resumed / 'checkpoints'), read_only=True).all_steps() == [3]
  loop.train_and_evaluate(config, str(resumed))

  a = _params_of_last_checkpoint(str(straight), config)
  b = _params_of_last_checkpoint(str(resumed), config)
  assert int(a.step) == int(b.step) == 6
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-6),
               a.params, b.params)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-6),
               a.opt_state, b.opt_state)


class _CountingData:
  """A dataset of 37 examples whose label is stored in the 'image'."""

  NUM = 37

  @staticmethod
  def num_examples(split, config):
    del split, config
    return _CountingData.NUM

  @staticmethod
  def load(split, *, is_training, batch_dims, config, seed=0, start_step=0):
    del split, is_training, config, seed, start_step
    labels = np.arange(_CountingData.NUM, dtype=np.int32) % 4
    # Examples 0..9 hold a wrong 'prediction'; the rest the right one.
    predicted = labels.copy()
    predicted[:10] = (labels[:10] + 1) % 4
    return in_memory.eval_batches(
        {'image': predicted, 'label': labels}, batch_dims=batch_dims)


def test_evaluator_counts_every_example_once():
  config = _runlocal_config()
  config.data.num_classes = 4
  # A fake model: logits are one-hot of the 'prediction' in the batch.
  apply_fn = lambda params, rng, batch, is_training: jax.nn.one_hot(
      batch['image'], 4) * 10.0
  evaluator = evaluators.ClassificationEvaluator(
      config=config, apply_fn=apply_fn, data_module=_CountingData,
      batch_dims=(8, 1))  # 37 examples in batches of 8: 5 batches, 3 padded.
  metrics = evaluator.run(parallel.replicate({}))
  assert list(metrics) == list(evaluator.metric_names(config))
  assert metrics['num_examples'] == 37
  assert metrics['top1'] == pytest.approx(27 / 37)
  # Wrong predictions rank the true class second of four: all in the top 4.
  assert metrics['top4'] == pytest.approx(1.0)
  # Loss by hand: right rows -log(e^10/(e^10+3)), wrong rows
  # -log(1/(e^10+3)).
  right = -np.log(np.exp(10) / (np.exp(10) + 3))
  wrong = -np.log(1 / (np.exp(10) + 3))
  assert metrics['loss'] == pytest.approx((27 * right + 10 * wrong) / 37,
                                          rel=1e-5)


def test_evaluator_respects_max_examples():
  config = _runlocal_config()
  config.data.num_classes = 4
  config.evaluator.max_examples = 13
  apply_fn = lambda params, rng, batch, is_training: jax.nn.one_hot(
      batch['image'], 4)
  evaluator = evaluators.ClassificationEvaluator(
      config=config, apply_fn=apply_fn, data_module=_CountingData,
      batch_dims=(8, 1))
  metrics = evaluator.run(parallel.replicate({}))
  assert metrics['num_examples'] == 13
  assert metrics['top1'] == pytest.approx(3 / 13)


def test_config_typo_fails_naming_the_key(tmp_path):
  result = command_utils.run_module('experiments.train',
                                    '--config=configs/digits.py:runlocal',
                                    '--config.train.batch_sise=32',
                                    f'--workdir={tmp_path}')
  assert result.returncode == 2
  assert result.stderr.strip() == (
      'error: Unknown config field in an override: \'batch_sise\' Did you '
      'mean "batch_size" instead of "batch_sise"? (--traceback for details)')
  assert not os.path.exists(tmp_path / 'checkpoints')
  # The same when the override is of the default config (loaded while the
  # flag is defined, before the command line is parsed).
  result = command_utils.run_module(
      'experiments.train', '--config.train.batch_sise=32',
      f'--workdir={tmp_path}')
  assert result.returncode == 2
  assert result.stderr.strip().startswith(
      "error: Unknown config field in an override: 'batch_sise'")


def test_unknown_config_flag_fails_naming_it():
  with pytest.raises(ValueError, match="'runlokal'"):
    digits_config.get_config('runlokal')


def test_end_to_end_train_checkpoint_evaluate(tmp_path):
  workdir = tmp_path / 'run'
  train = command_utils.run_module('experiments.train',
                                   '--config=configs/digits.py:runlocal',
                                   f'--workdir={workdir}')
  assert train.returncode == 0, train.stderr[-3000:]
  assert 'step 6/6' in train.stdout
  assert 'eval test at step 6' in train.stdout
  config = json.loads((workdir / 'config.json').read_text())
  assert config['task'] == 'digits'
  records = [json.loads(line) for line in
             (workdir / 'metrics.jsonl').read_text().splitlines()]
  final_eval = [r for r in records if 'test/top1' in r][-1]
  assert final_eval['step'] == 6
  assert final_eval['test/num_examples'] == 360
  assert os.listdir(workdir / 'tensorboard')

  checkpoints = workdir / 'checkpoints'
  before = sorted(os.listdir(checkpoints))
  evaluate = command_utils.run_module('experiments.evaluate',
                                      f'--workdir={workdir}')
  assert evaluate.returncode == 0, evaluate.stderr[-3000:]
  result = json.loads(evaluate.stdout.strip().splitlines()[-1])
  assert result['step'] == 6
  assert result['num_examples'] == 360
  assert result['top1'] == pytest.approx(final_eval['test/top1'], abs=1e-6)
  assert sorted(os.listdir(checkpoints)) == before  # Nothing written there.
  assert (workdir / 'evaluations' / 'test-step6.json').exists()

  # A run written before the encoder fields moved to config.model.encoder
  # (its config.json made here from this one) still reads and evaluates the
  # same: the parameter names did not change.
  new_layout = json.loads((workdir / 'config.json').read_text())
  old_layout = json.loads(json.dumps(new_layout))
  encoder = old_layout['model'].pop('encoder')
  old_fields = ('num_blocks', 'num_self_attends_per_block',
                'num_cross_attends', 'cross_attend_placement',
                'share_weights', 'num_latents', 'num_latent_channels',
                'num_cross_heads', 'num_self_heads', 'widening_factor',
                'dropout', 'attention_impl', 'reuse_shared_keys_values',
                'absorb_cross_attend_projections', 'scan_blocks',
                'precision', 'remat')  # Those of runs before 2026-12.
  old_layout['model'].update({k: encoder[k] for k in old_fields})
  for added in ('head', 'decoder'):  # With the Perceiver IO decoder.
    del old_layout['model'][added]
  (workdir / 'config.json').write_text(json.dumps(old_layout))
  upgraded = run_config.read(str(workdir))
  # The fields added since take the defaults the older code computed with.
  assert upgraded.model.encoder.to_dict() == encoder
  assert upgraded.model.head == 'mean_linear'
  assert set(upgraded.model) == set(new_layout['model']) - {'decoder'}
  metrics = loop.evaluate_checkpoint(upgraded, str(checkpoints))
  assert metrics['step'] == 6
  assert metrics['top1'] == pytest.approx(result['top1'], abs=1e-6)
