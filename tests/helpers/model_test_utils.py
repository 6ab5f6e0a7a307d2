"""Helpers shared by the model tests: numpy references and fast compiles.

The numpy functions are written out from docs/paper.md section 1 (float64,
plain loops over batch and heads), independently of the code under test.
They read Haiku parameter dicts by module name, e.g.
`params['layer/attention/query'] = {'w': [in, out], 'b': [out]}`.
"""

import math
from typing import Any, Callable, Iterator, Optional

import jax
from jax.extend import core as jax_core
import jax.numpy as jnp
import numpy as np

# These models are tiny: compiling them costs far more than running them, and
# XLA's CPU backend optimisations buy nothing here. Turning them off (and the
# newer fusion emitters) cuts the compile time about four times for a
# backward pass, and changes no result beyond float rounding.
_FAST_COMPILE = {
    'xla_backend_optimization_level': 0,
    'xla_llvm_disable_expensive_passes': True,
    'xla_cpu_use_fusion_emitters': False,
}


def jit(fn: Callable[..., Any], **kwargs) -> Callable[..., Any]:
  """`jax.jit` with cheap compilation, for the tests' tiny models."""
  return jax.jit(fn, compiler_options=_FAST_COMPILE, **kwargs)


def random_params(params_or_shapes, seed: int = 0, scale: float = 0.3):
  """Random values for every parameter, shaped like `params_or_shapes`.

  LayerNorm scales are drawn around 1, everything else around 0; accepts
  arrays or `jax.ShapeDtypeStruct`s (from `jax.eval_shape` of an init), so no
  initialiser needs to be compiled.
  """
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    base = 1.0 if jax.tree_util.keystr(path).endswith("['scale']") else 0.0
    return jnp.asarray(base + scale * rng.standard_normal(leaf.shape),
                       jnp.float32)

  return jax.tree_util.tree_map_with_path(draw, params_or_shapes)


def f64(x) -> np.ndarray:
  return np.asarray(x, np.float64)


def np_layer_norm(x, scale, offset, eps=1e-5):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean)**2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * scale + offset


def np_gelu_tanh(x):
  return 0.5 * x * (1.0 + np.tanh(
      math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def np_gelu_erf(x):
  erf = np.vectorize(math.erf)
  return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def np_softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def np_attention(q, k, v, mask=None):
  """q `[B, N, H, D]`, k `[B, M, H, D]`, v `[B, M, H, Dv]` -> `[B, N, H, Dv]`.

  `mask`: optional `[B, M]` booleans, True for keys that may be attended.
  """
  batch, n, heads, depth = q.shape
  out = np.zeros((batch, n, heads, v.shape[-1]))
  for b in range(batch):
    for h in range(heads):
      logits = q[b, :, h] @ k[b, :, h].T / math.sqrt(depth)  # [N, M]
      if mask is not None:
        logits = np.where(np.asarray(mask[b], bool)[None, :], logits, -np.inf)
      out[b, :, h] = np_softmax(logits) @ v[b, :, h]
  return out


def np_linear(p, x):
  return x @ f64(p['w']) + f64(p['b'])


def np_norm(params, name, x):
  return np_layer_norm(x, f64(params[name]['scale']),
                       f64(params[name]['offset']))


def np_attention_module(params, prefix, x_q, x_kv, heads, mask=None):
  """Separate Q/K/V/output Linears around `np_attention`."""
  def split(x):
    return x.reshape(*x.shape[:2], heads, -1)
  q = split(np_linear(params[f'{prefix}/query'], x_q))
  k = split(np_linear(params[f'{prefix}/key'], x_kv))
  v = split(np_linear(params[f'{prefix}/value'], x_kv))
  out = np_attention(q, k, v, mask)
  return np_linear(params[f'{prefix}/output'],
                   out.reshape(*out.shape[:2], -1))


def np_mlp(params, prefix, x):
  hidden = np_gelu_tanh(np_linear(params[f'{prefix}/hidden'], x))
  return np_linear(params[f'{prefix}/output'], hidden)


def np_self_attend_layer(params, prefix, z, heads):
  """`z += Attn(LN(z), LN(z))`, `z += MLP(LN(z))`."""
  normed = np_norm(params, f'{prefix}/attention_norm', z)
  z = z + np_attention_module(params, f'{prefix}/attention', normed, normed,
                              heads)
  return z + np_mlp(params, f'{prefix}/mlp',
                    np_norm(params, f'{prefix}/mlp_norm', z))


def np_cross_attend_block(params, prefix, z, x, heads, mask=None):
  """`z += Attn(q=LN(z), kv=LN(x))`, `z += MLP(LN(z))`."""
  z = z + np_attention_module(
      params, f'{prefix}/attention', np_norm(params, f'{prefix}/query_norm', z),
      np_norm(params, f'{prefix}/input_norm', x), heads, mask)
  return z + np_mlp(params, f'{prefix}/mlp',
                    np_norm(params, f'{prefix}/mlp_norm', z))


def np_classifier(params, x, steps: list[str], *, num_layers: int,
                  cross_heads: int, self_heads: int,
                  mask: Optional[np.ndarray] = None) -> np.ndarray:
  """The whole classifier for a schedule written as ['C0', 'L0', 'C1', ...].

  'Ck' runs cross-attend weight set k, 'Lk' latent Transformer set k.
  """
  latents = f64(params['perceiver']['latents'])
  z = np.broadcast_to(latents, (x.shape[0], *latents.shape))
  for step in steps:
    kind, weight_set = step[0], int(step[1:])
    if kind == 'C':
      z = np_cross_attend_block(params, f'perceiver/cross_attend_{weight_set}',
                                z, x, cross_heads, mask)
    else:
      for i in range(num_layers):
        z = np_self_attend_layer(
            params, f'perceiver/latent_transformer_{weight_set}/'
            f'self_attend_{i}', z, self_heads)
  return np_linear(params['classification_head/logits'], z.mean(axis=1))


# Parameter counts by hand (docs/paper.md section 1): every Linear has a bias,
# every LayerNorm a scale and an offset.


def linear_params(fan_in: int, fan_out: int) -> int:
  return fan_in * fan_out + fan_out  # Weights and bias.


def layer_norm_params(channels: int) -> int:
  return 2 * channels  # Scale and offset.


def cross_attend_params(c: int, d: int, w: int = 1) -> int:
  """Q/K/V of width C (inputs C, latents D), output back to D, MLP on D."""
  return (layer_norm_params(c) + layer_norm_params(d) +  # inputs, latents
          linear_params(d, c) + 2 * linear_params(c, c) +  # Q; K and V
          linear_params(c, d) +  # output
          layer_norm_params(d) + linear_params(d, w * d) +
          linear_params(w * d, d))  # MLP


def self_attend_params(d: int, w: int = 1) -> int:
  """Q/K/V/output of width D, MLP on D."""
  return (layer_norm_params(d) + 4 * linear_params(d, d) +
          layer_norm_params(d) + linear_params(d, w * d) +
          linear_params(w * d, d))


def nested_equations(
    jaxpr: jax_core.Jaxpr) -> Iterator[jax_core.JaxprEqn]:
  """Every equation of `jaxpr` and of the jaxprs nested in its equations
  (custom_vjp, scan, remat bodies...), depth first."""
  for eqn in jaxpr.eqns:
    yield eqn
    for sub in jax_core.jaxprs_in_params(eqn.params):
      yield from nested_equations(sub)
