"""Tests of perceiver_jax.pictures and the attention-map and plot commands."""

import json
import os
import subprocess
import sys

import haiku as hk
import jax
import numpy as np
from PIL import Image
import pytest

from configs import digits as digits_config
from perceiver_jax import pictures
from perceiver_jax.model import factory
from perceiver_jax.model import inputs as model_inputs
from perceiver_jax.train import loop
from tests.helpers.command_utils import REPO



@pytest.fixture(scope='module')
def trained_run(tmp_path_factory):
  """A runlocal digits run of 6 steps, as in train/test_loop.py."""
  workdir = str(tmp_path_factory.mktemp('pictures') / 'run')
  config = digits_config.get_config('runlocal')
  config.train.update(num_steps=6, checkpoint_every_steps=100,
                      eval_every_steps=3, log_every_steps=2)
  loop.train_and_evaluate(config, workdir)
  return workdir


def _layer_norm(x, p):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + 1e-5) * p['scale'] + p['offset']


def test_first_cross_attend_weights_match_a_hand_computation():
  config = digits_config.get_config('runlocal')
  config.model.encoder.num_cross_heads = 1
  config.model.encoder.absorb_cross_attend_projections = False  # Keys recorded.
  forward = factory.transform_classifier(config.model, 10)
  rng = np.random.default_rng(0)
  batch = {'image': rng.uniform(0, 1, (3, 8, 8, 1)).astype(np.float32)}
  params = forward.init(jax.random.PRNGKey(1), batch, is_training=False)
  maps = pictures.cross_attention_weights(forward, params, batch)
  assert len(maps) == config.model.encoder.num_cross_attends == 2
  for m in maps:
    assert m.shape == (3, 1, 8, 64)  # [B, heads, N latents, M pixels].
    np.testing.assert_allclose(m.sum(-1), 1.0, rtol=1e-5)

  # By hand, from the parameters: the first cross-attend's queries come
  # from the learned latents, its keys from the adapter's byte array.
  adapter = hk.transform(lambda b: model_inputs.make(config.model.input)(
      b, is_training=False)[0])
  inputs = np.asarray(adapter.apply({}, None, batch))  # [3, 64, C]
  p = {k: {n: np.asarray(v) for n, v in d.items()}
       for k, d in params.items()}
  prefix = 'perceiver/cross_attend_0/'
  keys = _layer_norm(inputs, p[prefix + 'input_norm']) @ p[
      prefix + 'attention/key']['w'] + p[prefix + 'attention/key']['b']
  latents = p['perceiver']['latents']
  queries = _layer_norm(latents, p[prefix + 'query_norm']) @ p[
      prefix + 'attention/query']['w'] + p[prefix + 'attention/query']['b']
  logits = np.einsum('nc,bmc->bnm', queries, keys) / np.sqrt(keys.shape[-1])
  expected = np.exp(logits - logits.max(-1, keepdims=True))
  expected /= expected.sum(-1, keepdims=True)
  np.testing.assert_allclose(maps[0][:, 0], expected, rtol=1e-4, atol=1e-6)
  # The second cross-attend sees updated latents: a different map.
  assert np.abs(maps[1] - maps[0]).max() > 1e-4


def test_to_grid_undoes_the_permutation():
  weights = np.array([[0.1, 0.2, 0.3, 0.4, 0.0, 0.0]])
  # Input 0 holds pixel 5, input 1 pixel 0, ...
  permutation = np.array([5, 0, 1, 2, 3, 4])
  grid = pictures.to_grid(weights, (2, 3), permutation)
  np.testing.assert_allclose(grid, [[[0.2, 0.3, 0.4], [0.0, 0.0, 0.1]]])
  np.testing.assert_allclose(pictures.to_grid(weights, (3, 2)),
                             weights.reshape(1, 3, 2))
  with pytest.raises(ValueError, match='do not fit the grid'):
    pictures.to_grid(weights, (2, 2))


def test_attention_maps_of_a_checkpoint_are_pngs(trained_run, tmp_path):
  out = tmp_path / 'maps'
  paths = pictures.draw_attention_maps(trained_run, str(out), num_images=2,
                                       num_latents=3)
  assert paths == [str(out / 'image_0.png'), str(out / 'image_1.png')]
  for path in paths:
    with Image.open(path) as image:
      assert image.format == 'PNG'
      # (image + 3 latents) panels wide, 2 cross-attends high.
      assert image.size == (4 * 160, 2 * 160)
      pixels = np.asarray(image.convert('L'))
      assert pixels.std() > 10  # Not a blank canvas.
  with pytest.raises(ValueError, match='num_images'):
    pictures.draw_attention_maps(trained_run, str(out), num_images=0)


def test_attention_maps_reject_a_convnet_run(tmp_path):
  (tmp_path / 'config.json').write_text(json.dumps(dict(
      model=dict(architecture='convnet', input=dict(type='grid')))))
  with pytest.raises(ValueError, match="architecture 'convnet'"):
    pictures.draw_attention_maps(str(tmp_path), str(tmp_path / 'out'))


def test_plot_command_draws_several_runs(trained_run, tmp_path):
  other = tmp_path / 'other'
  other.mkdir()
  # A second run's metrics, written by hand.
  with open(other / 'metrics.jsonl', 'w') as f:
    for step, loss in ((2, 2.0), (4, 1.0), (6, 0.5)):
      f.write(json.dumps({'step': step, 'train/loss': loss}) + '\n')
    f.write(json.dumps({'step': 6, 'test/top1': 0.5}) + '\n')
  out = tmp_path / 'curves.png'
  env = dict(os.environ, PYTHONPATH=REPO)
  result = subprocess.run(
      [sys.executable, '-m', 'experiments.plot', f'--workdir={trained_run}',
       str(other), f'--out={out}'], cwd=REPO, env=env, capture_output=True,
      text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip() == str(out)
  with Image.open(out) as image:
    assert image.format == 'PNG'
    assert image.size == (1000, 400)
  with pytest.raises(FileNotFoundError, match='metrics.jsonl'):
    pictures.plot_runs([str(tmp_path / 'missing')], str(out))
