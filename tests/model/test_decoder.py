"""The Perceiver IO classification decoder (`model/decoder.py`) against a
numpy transcription of its definition, and its settings' checks."""

import math

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_jax.model import decoder


def _layer_norm(x, p):
  mean = x.mean(-1, keepdims=True)
  var = x.var(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + 1e-5) * p['scale'] + p['offset']


def _linear(x, p):
  return x @ p['w'] + p['b']


def _gelu_erf(x):
  return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


@pytest.mark.parametrize('query_residual', [True, False])
def test_decoder_equals_numpy(query_residual):
  """E=6 query channels over D=4 latents, 2 heads, widening 2, exact GELU."""
  rng = np.random.default_rng(0)
  latents = rng.normal(size=(3, 5, 4)).astype(np.float32)  # [B, N, D]
  forward = hk.transform(lambda z: decoder.ClassificationDecoder(
      7, num_heads=2, widening_factor=2, query_residual=query_residual,
      num_query_channels=6, mlp_activation='gelu')(z, is_training=False))
  params = forward.init(jax.random.key(0), latents)
  params = jax.tree.map(
      lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
  ours = np.asarray(forward.apply(params, None, latents))

  p = {k.replace('classification_decoder/', '').replace(
      'classification_decoder', 'top'): {n: np.asarray(v, np.float64)
                                         for n, v in d.items()}
       for k, d in params.items()}
  query = np.broadcast_to(p['top']['query'], (3, 1, 6))  # [B, 1, E]
  q = _linear(_layer_norm(query, p['cross_attend/query_norm']),
              p['cross_attend/attention/query'])  # [B, 1, 4]
  kv_in = _layer_norm(latents.astype(np.float64),
                      p['cross_attend/input_norm'])
  k = _linear(kv_in, p['cross_attend/attention/key'])  # [B, N, 4]
  v = _linear(kv_in, p['cross_attend/attention/value'])
  heads = []
  for h in range(2):
    qh, kh, vh = (t[..., 2 * h:2 * h + 2] for t in (q, k, v))
    logits = np.einsum('bqd,bnd->bqn', qh, kh) / math.sqrt(2)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    heads.append(np.einsum('bqn,bnd->bqd', weights, vh))
  attended = _linear(np.concatenate(heads, -1),
                     p['cross_attend/attention/output'])  # [B, 1, E]
  z = query + attended if query_residual else attended
  hidden = _gelu_erf(_linear(_layer_norm(z, p['cross_attend/mlp_norm']),
                             p['cross_attend/mlp/hidden']))
  z = z + _linear(hidden, p['cross_attend/mlp/output'])
  expected = _linear(z[:, 0], p['logits'])  # [B, 7]
  assert ours.shape == (3, 7)
  np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)


def test_settings_are_checked():
  with pytest.raises(ValueError, match=r"unknown fields \['heads'\]"):
    decoder.decoder_settings({'decoder': {'heads': 2}})
  assert decoder.decoder_settings({})['num_heads'] == 1
  bad = hk.transform(lambda z: decoder.ClassificationDecoder(
      3, num_heads=3)(z, is_training=False))
  with pytest.raises(ValueError, match='num_heads=3 does not divide'):
    bad.init(jax.random.key(0), np.zeros((1, 2, 4), np.float32))
  with pytest.raises(ValueError, match='mlp_activation'):
    hk.transform(lambda: decoder.ClassificationDecoder(
        3, mlp_activation='relu')).init(jax.random.key(0))


def _fourier_queries(index_dims, num_bands):
  """Positions in [-1, 1] per axis ('ij' grid, row-major), then sin and cos
  of pi f_k x for f_k = linspace(1, n/2, K), axis-major: by hand."""
  axes = [np.linspace(-1.0, 1.0, n) for n in index_dims]
  grid = np.stack(np.meshgrid(*axes, indexing='ij'), -1).reshape(
      -1, len(index_dims))  # [O, d]
  freqs = np.stack([np.linspace(1.0, n / 2, num_bands) for n in index_dims])
  angles = np.pi * (grid[:, :, None] * freqs[None]).reshape(len(grid), -1)
  return np.concatenate([grid, np.sin(angles), np.cos(angles)], -1)


def test_fourier_position_queries_equal_numpy():
  """A 3x4 grid of outputs queried by their Fourier features (K=2: E =
  2 * 5 = 10 channels), one head, exact GELU, over D=6 latents."""
  rng = np.random.default_rng(1)
  latents = rng.normal(size=(2, 5, 6)).astype(np.float32)  # [B, N, D]
  forward = hk.transform(lambda z: decoder.PerceiverIODecoder(
      3, output_index_dims=(3, 4), query_type='fourier', query_num_bands=2,
      mlp_activation='gelu')(z, is_training=False))
  params = forward.init(jax.random.key(0), latents)
  assert 'perceiver_io_decoder' not in params  # Nothing trained in queries.
  params = jax.tree.map(
      lambda p: jnp.asarray(rng.normal(size=p.shape) * 0.3, jnp.float32),
      params)
  ours = np.asarray(forward.apply(params, None, latents))

  p = {k.replace('perceiver_io_decoder/', ''): {
      n: np.asarray(v, np.float64) for n, v in d.items()}
       for k, d in params.items()}
  query = np.broadcast_to(_fourier_queries((3, 4), 2), (2, 12, 10))
  q = _linear(_layer_norm(query, p['cross_attend/query_norm']),
              p['cross_attend/attention/query'])  # [B, 12, 6]
  kv_in = _layer_norm(latents.astype(np.float64),
                      p['cross_attend/input_norm'])
  k = _linear(kv_in, p['cross_attend/attention/key'])
  v = _linear(kv_in, p['cross_attend/attention/value'])
  logits = np.einsum('bqd,bnd->bqn', q, k) / math.sqrt(6)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  z = query + _linear(np.einsum('bqn,bnd->bqd', weights, v),
                      p['cross_attend/attention/output'])  # [B, 12, 10]
  hidden = _gelu_erf(_linear(_layer_norm(z, p['cross_attend/mlp_norm']),
                             p['cross_attend/mlp/hidden']))
  z = z + _linear(hidden, p['cross_attend/mlp/output'])
  expected = _linear(z, p['outputs'])  # [B, 12, 3]
  assert ours.shape == (2, 12, 3)
  np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)


def test_query_settings_are_checked():
  def build(**kwargs):
    return hk.transform(lambda: decoder.PerceiverIODecoder(
        3, **kwargs)).init(jax.random.key(0))
  with pytest.raises(ValueError, match="query_type.*'sine'"):
    build(query_type='sine')
  with pytest.raises(ValueError, match='num_query_channels must be None'):
    build(query_type='fourier', num_query_channels=8)
  with pytest.raises(ValueError, match='query_num_bands'):
    build(query_type='fourier', query_num_bands=0)
  with pytest.raises(ValueError, match='one output query'):
    hk.transform(lambda: decoder.ClassificationDecoder(
        3, output_index_dims=(2,))).init(jax.random.key(0))
