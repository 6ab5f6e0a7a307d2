"""The encoder's execution modes: scanned blocks, remat and bfloat16.

Each mode must keep the parameter tree (names and shapes) and give the plain
path's outputs and gradients: exactly up to float32 rounding for the scan
and remat, within bfloat16's precision for bfloat16.
"""

import functools

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_jax.model import encoder_config
from perceiver_jax.model import layers
from perceiver_jax.model import perceiver
from perceiver_jax.model import schedule
from tests.helpers.model_test_utils import jit
from tests.helpers.model_test_utils import nested_equations
from tests.helpers.model_test_utils import random_params

BATCH, POSITIONS, CHANNELS, CLASSES = 2, 7, 6, 5
# Four interleaved blocks with shared weights: C0 L0 C1 L0 C1 L0 C1 L0, so
# (L0 C1) repeats three times and runs as a scan.
SMALL = dict(num_blocks=4, num_self_attends_per_block=1, num_cross_attends=4,
             cross_attend_placement='interleaved', share_weights=True,
             num_latents=4, num_latent_channels=8, num_cross_heads=1,
             num_self_heads=2)


def classifier(**overrides) -> hk.Transformed:
  kwargs = dict(SMALL, **overrides)

  def fn(x, mask=None):
    model = perceiver.PerceiverClassifier(
        CLASSES, encoder_config.EncoderConfig(**kwargs))
    return model(x, input_mask=mask, is_training=False)

  return hk.transform(fn)


def shapes(**overrides):
  x = jax.ShapeDtypeStruct((BATCH, POSITIONS, CHANNELS), jnp.float32)
  return jax.eval_shape(classifier(**overrides).init, jax.random.PRNGKey(0),
                        x)


@functools.lru_cache(maxsize=None)
def params():
  return random_params(shapes(), seed=3, scale=0.3)


def inputs(seed=0):
  rng = np.random.default_rng(seed)
  return rng.standard_normal((BATCH, POSITIONS, CHANNELS)).astype(np.float32)


MASK = np.array([[1, 1, 0, 1, 0, 1, 1], [0, 1, 1, 1, 1, 1, 0]], bool)


@functools.lru_cache(maxsize=None)
def _value_and_grad(overrides):
  model = classifier(**dict(overrides))

  def loss(p, x, mask):
    logits = model.apply(p, None, x, mask)
    return jnp.sum(jnp.sin(logits)), logits

  return jit(jax.value_and_grad(loss, has_aux=True))


def run(**overrides):
  """(logits, gradients of a scalar of the logits) with MASK."""
  (_, logits), grads = _value_and_grad(tuple(sorted(overrides.items())))(
      params(), inputs(), MASK)
  return np.asarray(logits, np.float64), jax.tree.map(np.asarray, grads)


def max_abs(tree):
  return max(float(np.abs(x).max()) for x in jax.tree.leaves(tree))


def max_diff(a, b):
  return max(float(np.abs(np.asarray(x, np.float64) - y).max())
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def steps_text(steps):
  return ' '.join(f'{"C" if s.kind == "cross_attend" else "L"}{s.weight_set}'
                  for s in steps)


# ----------------------------------------------------------------------------
# Runs of identical blocks (what scan_blocks scans).


@pytest.mark.parametrize('placement, cross, share, expected', [
    ('interleaved', 8, True, '[C0 L0] [C1 L0]x7'),
    ('interleaved', 4, True,
     '[C0 L0] [L0] [C1 L0] [L0] [C1 L0] [L0] [C1 L0] [L0]'),
    ('interleaved', 1, True, '[C0 L0] [L0]x7'),
    ('start', 4, True, '[C0 C1 C1 C1 L0] [L0]x7'),
    ('interleaved', 8, False,
     '[C0 L0] [C1 L1] [C2 L2] [C3 L3] [C4 L4] [C5 L5] [C6 L6] [C7 L7]'),
])
def test_runs_of_identical_blocks(placement, cross, share, expected):
  steps = schedule.schedule(encoder_config.EncoderConfig(
      num_blocks=8, num_self_attends_per_block=6, num_cross_attends=cross,
      cross_attend_placement=placement, share_weights=share))
  runs = schedule.runs(steps)
  text = ' '.join(f'[{steps_text(block)}]' + (
      f'x{repeats}' if repeats > 1 else '') for block, repeats in runs)
  assert text == expected
  # Blocks repeated and concatenated give the schedule back, step for step.
  flat = [step for block, repeats in runs for _ in range(repeats)
          for step in block]
  assert steps_text(flat) == steps_text(steps)


def test_cross_attends_only_are_blocks_of_their_own():
  steps = schedule.schedule(encoder_config.EncoderConfig(
      num_blocks=8, num_self_attends_per_block=0, num_cross_attends=3,
      share_weights=True))
  assert [(steps_text(b), r) for b, r in schedule.runs(steps)] == [
      ('C0', 1), ('C1', 2)]


# ----------------------------------------------------------------------------
# Same parameters in every mode.


@pytest.mark.parametrize('overrides', [
    dict(scan_blocks=True), dict(remat='block'), dict(precision='bfloat16'),
    dict(scan_blocks=True, remat='block', precision='bfloat16',
         reuse_shared_keys_values=False),
])
def test_modes_keep_parameter_names_shapes_and_dtypes(overrides):
  plain = shapes()
  other = shapes(**overrides)
  assert jax.tree.structure(other) == jax.tree.structure(plain)
  assert sorted(other) == sorted(plain)
  for a, b in zip(jax.tree.leaves(other), jax.tree.leaves(plain)):
    assert (a.shape, a.dtype) == (b.shape, b.dtype)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(other))


# ----------------------------------------------------------------------------
# Same outputs and gradients.


@pytest.mark.parametrize('overrides', [
    dict(scan_blocks=True),
    dict(scan_blocks=True, remat='block', reuse_shared_keys_values=False),
    dict(remat='block', attention_impl='dot_product'),
])
def test_scan_and_remat_match_the_plain_path(overrides):
  logits, grads = run()
  assert np.abs(logits).max() > 0.1
  other_logits, other_grads = run(**overrides)
  np.testing.assert_allclose(other_logits, logits, atol=1e-5, rtol=1e-5)
  assert max_diff(other_grads, grads) <= 1e-5 * max(1.0, max_abs(grads))
  # Every parameter gets a gradient (the scanned shared sets included),
  # except the cross-attends' key biases: the softmax cancels them, so their
  # gradient is zero (exactly so with the K/V projections absorbed into the
  # queries, the default for one head; see test_attention.py).
  for module, leaves in other_grads.items():
    for name, g in leaves.items():
      if not (name == 'b' and module.endswith('/attention/key') and
              '/cross_attend_' in module):
        assert np.abs(g).max() > 0, f'{module}/{name}'


def test_scan_program_does_not_grow_with_depth():
  x = inputs()

  def num_equations(num_blocks, scan):
    model = classifier(num_blocks=num_blocks, num_cross_attends=num_blocks,
                       scan_blocks=scan)
    p = random_params(shapes(num_blocks=num_blocks,
                             num_cross_attends=num_blocks))
    jaxpr = jax.make_jaxpr(functools.partial(model.apply, p, None))(x)
    return len(jaxpr.jaxpr.eqns)

  assert num_equations(8, scan=True) == num_equations(4, scan=True)
  assert num_equations(8, scan=False) > num_equations(4, scan=False) + 50


def test_remat_recomputes_in_the_backward_pass():
  def has_remat(remat):
    model = classifier(remat=remat)
    fn = jax.grad(lambda p: jnp.sum(model.apply(p, None, inputs())))
    jaxpr = str(jax.make_jaxpr(fn)(params()))
    return 'remat' in jaxpr or 'checkpoint' in jaxpr
  assert has_remat('block') and not has_remat('none')


# Tolerance of bfloat16 relative to the float32 result's largest value:
# bfloat16 keeps 8 significant bits (relative rounding 2^-8, about 0.4%),
# and a few dozen roundings accumulate along this model's path.
BF16_RTOL = 3e-2


def test_bfloat16_is_close_to_float32():
  logits, grads = run()
  bf16_logits, bf16_grads = run(precision='bfloat16')
  assert np.abs(bf16_logits - logits).max() <= BF16_RTOL * np.abs(
      logits).max()
  # Gradients, relative to the largest (some are zero in exact arithmetic,
  # such as the key biases', to which the softmax is invariant).
  scale = max_abs(grads)
  for g, g16 in zip(jax.tree.leaves(grads), jax.tree.leaves(bf16_grads)):
    assert g16.dtype == np.float32  # Gradients of float32 parameters.
    assert np.abs(g16 - g).max() <= 2 * BF16_RTOL * scale
  # ... and it does compute in bfloat16 (so the check above can fail).
  assert not np.array_equal(bf16_logits, logits)
  model = classifier(precision='bfloat16')
  jaxpr = jax.make_jaxpr(functools.partial(model.apply, params(), None))(
      inputs())
  dots = [e for e in nested_equations(jaxpr.jaxpr)
          if e.primitive.name == 'dot_general']
  # Every encoder matmul multiplies bfloat16 numbers and accumulates in
  # float32 (matmul.py: XLA:CPU's fast bfloat16 kernels need both).
  assert len(dots) > 10 and all(
      [v.aval.dtype for v in e.invars] == [jnp.bfloat16] * 2 and
      e.params['preferred_element_type'] == jnp.float32 for e in dots[:-1])
  # The head (last matmul) and the logits are float32.
  assert dots[-1].invars[0].aval.dtype == jnp.float32
  assert jaxpr.out_avals[0].dtype == jnp.float32


def test_bfloat16_layer_norm_statistics_are_float32():
  # Values with a large common offset and small deviations, the case where
  # bfloat16 statistics would be poor.
  x = (100.0 + np.linspace(-1, 1, 64)).astype(np.float32)[None]
  fn = hk.without_apply_rng(hk.transform(
      lambda v: layers.layer_norm('norm')(v)))
  p = fn.init(jax.random.PRNGKey(0), x)
  x16 = jnp.asarray(x, jnp.bfloat16)
  out = fn.apply(p, x16)
  assert out.dtype == jnp.bfloat16
  # The input is rounded to bfloat16 (spacing 0.5 near 100: five levels),
  # but the normalisation of the rounded values is exact up to the output's
  # own rounding (2^-8 relative).
  rounded = np.asarray(x16, np.float64)
  exact = (rounded - rounded.mean()) / np.sqrt(rounded.var() + 1e-5)
  assert len(np.unique(rounded)) == 5
  np.testing.assert_allclose(np.asarray(out, np.float64), exact, atol=1e-2)
  # Every reduction (mean, variance) runs on float32 values.
  jaxpr = jax.make_jaxpr(functools.partial(fn.apply, p))(x16)
  reductions = [e for e in jaxpr.jaxpr.eqns
                if e.primitive.name.startswith('reduce')]
  assert reductions and all(e.invars[0].aval.dtype == jnp.float32
                            for e in reductions)


@pytest.mark.parametrize('overrides, match', [
    (dict(precision='float16'), "precision.*'float16'"),
    (dict(remat='layer'), "remat.*'layer'"),
    (dict(scan_blocks='yes'), "scan_blocks.*'yes'"),
])
def test_bad_mode_values_raise(overrides, match):
  with pytest.raises(ValueError, match=match):
    shapes(**overrides)
