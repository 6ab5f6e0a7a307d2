"""The encoder's options for other Perceivers' checkpoints (EncoderConfig:
`mlp_activation`, per-kind widening factors, `qk_channels`/`v_channels`,
`cross_attend_query_residual`), against a float64 numpy model written out
here, on every execution path of the cross-attend."""

import functools
import json

import haiku as hk
import jax
import numpy as np
import pytest

from tests.helpers import command_utils
from configs import digits
from perceiver_jax.model import attention
from perceiver_jax.model import encoder_config
from perceiver_jax.model import factory
from perceiver_jax.model import perceiver
from tests.helpers.model_test_utils import f64
from tests.helpers.model_test_utils import jit
from tests.helpers.model_test_utils import np_attention
from tests.helpers.model_test_utils import np_gelu_erf
from tests.helpers.model_test_utils import np_linear
from tests.helpers.model_test_utils import np_norm
from tests.helpers.model_test_utils import random_params

B, M, C, N, D = 2, 5, 6, 3, 8
OPTIONS = dict(
    num_blocks=2, num_self_attends_per_block=1, num_cross_attends=1,
    cross_attend_placement='start', share_weights=True, num_latents=N,
    num_latent_channels=D, num_cross_heads=1, num_self_heads=2,
    mlp_activation='gelu', cross_attend_widening_factor=2,
    self_attend_widening_factor=3, qk_channels=4, v_channels=6,
    cross_attend_query_residual=False)


def encoder(**overrides):
  config = encoder_config.EncoderConfig(**dict(OPTIONS, **overrides))
  return hk.transform(lambda x: perceiver.Perceiver(config)(
      x, is_training=False))


def np_attend(params, prefix, x_q, x_kv, heads):
  def split(x):
    return x.reshape(*x.shape[:2], heads, -1)
  out = np_attention(split(np_linear(params[f'{prefix}/query'], x_q)),
                     split(np_linear(params[f'{prefix}/key'], x_kv)),
                     split(np_linear(params[f'{prefix}/value'], x_kv)))
  return np_linear(params[f'{prefix}/output'], out.reshape(*out.shape[:2], -1))


def np_mlp_erf(params, prefix, z):
  hidden = np_gelu_erf(np_linear(params[f'{prefix}/hidden'], z))
  return np_linear(params[f'{prefix}/output'], hidden)


def np_encoder(params, x):
  """One cross-attend without the query residual, then the shared
  self-attend layer twice; exact GELU everywhere."""
  z = np.broadcast_to(f64(params['perceiver']['latents']), (B, N, D))
  cross = 'perceiver/cross_attend_0'
  z = np_attend(params, f'{cross}/attention',
                np_norm(params, f'{cross}/query_norm', z),
                np_norm(params, f'{cross}/input_norm', x), 1)  # No residual.
  z = z + np_mlp_erf(params, f'{cross}/mlp',
                     np_norm(params, f'{cross}/mlp_norm', z))
  layer = 'perceiver/latent_transformer_0/self_attend_0'
  for _ in range(2):
    normed = np_norm(params, f'{layer}/attention_norm', z)
    z = z + np_attend(params, f'{layer}/attention', normed, normed, 2)
    z = z + np_mlp_erf(params, f'{layer}/mlp',
                       np_norm(params, f'{layer}/mlp_norm', z))
  return z


@functools.lru_cache(maxsize=None)
def _params():
  shapes = jax.eval_shape(encoder().init, jax.random.PRNGKey(0),
                          jax.ShapeDtypeStruct((B, M, C), np.float32))
  return random_params(shapes, seed=3, scale=0.4)


def test_parameter_shapes_follow_the_options():
  p = _params()
  cross = 'perceiver/cross_attend_0'
  layer = 'perceiver/latent_transformer_0/self_attend_0'
  assert p[f'{cross}/attention/query']['w'].shape == (D, 4)
  assert p[f'{cross}/attention/key']['w'].shape == (C, 4)
  assert p[f'{cross}/attention/value']['w'].shape == (C, 6)
  assert p[f'{cross}/attention/output']['w'].shape == (6, D)
  assert p[f'{cross}/mlp/hidden']['w'].shape == (D, 2 * D)
  assert p[f'{layer}/attention/key']['w'].shape == (D, 4)
  assert p[f'{layer}/attention/output']['w'].shape == (6, D)
  assert p[f'{layer}/mlp/hidden']['w'].shape == (D, 3 * D)


@pytest.mark.parametrize('reuse, absorb', [
    (False, False), (True, False), (True, True), (False, True)])
def test_every_path_matches_numpy(reuse, absorb):
  x = np.random.default_rng(4).standard_normal((B, M, C)).astype(np.float32)
  got = jit(encoder(reuse_shared_keys_values=reuse,
                    absorb_cross_attend_projections=absorb).apply)(
                        _params(), None, x)
  np.testing.assert_allclose(got, np_encoder(_params(), f64(x)), atol=1e-4,
                             rtol=1e-4)


def test_activation_names_agree_with_the_config():
  assert tuple(attention.ACTIVATIONS) == encoder_config.MLP_ACTIVATIONS
  x = np.linspace(-3, 3, 7)
  np.testing.assert_allclose(attention.ACTIVATIONS['gelu'](x),
                             np_gelu_erf(x), atol=1e-6)
  # The tanh form differs from the exact one by up to about 1e-3 here.
  tanh_form = attention.ACTIVATIONS['gelu_tanh'](x)
  assert 1e-4 < np.abs(tanh_form - np_gelu_erf(x)).max() < 1e-2


@pytest.mark.parametrize('overrides, match', [
    (dict(mlp_activation='relu'), "mlp_activation.*'relu'"),
    (dict(qk_channels=0), 'qk_channels.* 0'),
    (dict(v_channels=2.5), 'v_channels.*2.5'),
    (dict(self_attend_widening_factor=-1), 'self_attend_widening_factor'),
    (dict(cross_attend_query_residual='no'),
     "cross_attend_query_residual.*'no'"),
    (dict(qk_channels=5), 'num_self_heads=2 does not divide qk_channels=5'),
    (dict(v_channels=7), 'num_self_heads=2 does not divide v_channels=7'),
])
def test_bad_options_are_named(overrides, match):
  with pytest.raises(ValueError, match=match):
    encoder_config.EncoderConfig(**dict(OPTIONS, **overrides))


def test_cross_heads_must_divide_qk_channels_not_the_input_width():
  config = encoder_config.EncoderConfig(
      **dict(OPTIONS, num_cross_heads=2, num_self_heads=2))
  config.check_input_channels(7, 'inputs')  # qk 4 and v 6: both split in 2.
  with pytest.raises(ValueError, match='num_cross_heads=3.*qk_channels=4'):
    encoder_config.EncoderConfig(
        **dict(OPTIONS, num_cross_heads=3, num_self_heads=2)
    ).check_input_channels(6, 'inputs')


def test_optional_widths_can_be_set_from_the_command_line():
  """Their default is None, yet `--config.model.encoder.qk_channels=16`
  parses (a typed field) and reaches the model; a non-integer is refused."""
  summary = command_utils.run_module(
      'experiments.model_summary', '--config=configs/digits.py',
      '--config.model.encoder.qk_channels=16')
  assert summary.returncode == 0, summary.stderr[-2000:]
  config = digits.get_config()
  config.model.encoder.qk_channels = 16
  shapes = jax.eval_shape(
      functools.partial(factory.transform_classifier(config.model, 10).init,
                        is_training=False),
      jax.random.PRNGKey(0), factory.example_batch(config.model.input, 1))
  # Digits: C = 1 + 2 * (2 * 8 + 1) = 35 inputs, D = 64 latents.
  assert shapes['perceiver/cross_attend_0/attention/key']['w'].shape == (
      35, 16)
  assert shapes['perceiver/latent_transformer_0/self_attend_0/attention/'
                'query']['w'].shape == (64, 16)
  expected = sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(shapes))
  assert json.loads(summary.stdout.strip().splitlines()[-1])['params'] == (
      expected)
  bad = command_utils.run_module(
      'experiments.model_summary', '--config=configs/digits.py',
      '--config.model.encoder.v_channels=wide')
  assert bad.returncode != 0 and 'v_channels' in bad.stderr
