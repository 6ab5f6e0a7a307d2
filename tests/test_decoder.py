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
