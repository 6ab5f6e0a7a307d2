"""Tests of the Perceiver encoder, its schedule and sharing, and the head."""

import functools

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from perceiver_jax.model import encoder_config
from perceiver_jax.model import perceiver
from perceiver_jax.model import schedule
from tests.helpers.model_test_utils import f64
from tests.helpers.model_test_utils import jit
from tests.helpers.model_test_utils import np_classifier
from tests.helpers.model_test_utils import random_params

BATCH, POSITIONS, CHANNELS, CLASSES = 2, 7, 6, 5
# A tiny model with the paper's structure: 3 blocks, a cross-attend before
# each, shared weights (cross-attend 0 alone, 1 and 2 share; one latent
# Transformer for all 3 blocks).
TINY = dict(num_blocks=3, num_self_attends_per_block=1, num_cross_attends=3,
            cross_attend_placement='interleaved', share_weights=True,
            num_latents=4, num_latent_channels=8, num_cross_heads=1,
            num_self_heads=2)
TINY_STEPS = ['C0', 'L0', 'C1', 'L0', 'C1', 'L0']


def schedule_of(**fields) -> list[schedule.Step]:
  """The schedule of an encoder config with `fields`."""
  return schedule.schedule(encoder_config.EncoderConfig(**fields))


def classifier(**overrides) -> hk.Transformed:
  """`fn(x, mask, is_training) -> logits` of TINY with `overrides`."""
  kwargs = dict(TINY, **overrides)

  def fn(x, mask=None, is_training=False):
    model = perceiver.PerceiverClassifier(
        CLASSES, encoder_config.EncoderConfig(**kwargs))
    return model(x, input_mask=mask, is_training=is_training)

  return hk.transform(fn)


@functools.lru_cache(maxsize=None)
def _compiled(overrides: tuple[tuple[str, object], ...]):
  """One jitted apply per configuration, shared by the tests that use it."""
  return jit(classifier(**dict(overrides)).apply, static_argnums=4)


def apply(params, x, mask=None, *, rng=None, is_training=False, **overrides):
  return _compiled(tuple(sorted(overrides.items())))(params, rng, x, mask,
                                                      is_training)


def init_shapes(x=None, **overrides):
  if x is None:
    x = jax.ShapeDtypeStruct((BATCH, POSITIONS, CHANNELS), jnp.float32)
  return jax.eval_shape(classifier(**overrides).init, jax.random.PRNGKey(0),
                        x)


def inputs(seed=0):
  rng = np.random.default_rng(seed)
  return rng.standard_normal((BATCH, POSITIONS, CHANNELS)).astype(np.float32)


@functools.lru_cache(maxsize=None)
def tiny_params(seed=1):
  # Random values everywhere, the zero-initialised head included, so that
  # the logits depend on everything.
  return random_params(init_shapes(), seed=seed, scale=0.3)


def sets(params):
  """Names of the cross-attend and latent Transformer weight sets."""
  def names(prefix):
    return sorted({m.split('/')[1] for m in params
                   if m.startswith(f'perceiver/{prefix}')})
  return names('cross_attend_'), names('latent_transformer_')


def steps_text(steps):
  return [f'{"C" if s.kind == "cross_attend" else "L"}{s.weight_set}'
          for s in steps]


# ----------------------------------------------------------------------------
# Schedule.


def test_schedule_headline_steps():
  steps = schedule_of(num_blocks=8, num_self_attends_per_block=6,
                             num_cross_attends=8,
                             cross_attend_placement='interleaved',
                             share_weights=True)
  expected = []
  for b in range(8):
    expected.append(schedule.Step('cross_attend', b, 0 if b == 0 else 1))
    expected.append(schedule.Step('latent_transformer', b, 0))
  assert steps == expected


@pytest.mark.parametrize('placement, cross, share, expected', [
    ('interleaved', 1, True, 'C0 L0 L0 L0 L0 L0 L0 L0 L0'),
    ('interleaved', 2, True, 'C0 L0 L0 L0 L0 C1 L0 L0 L0 L0'),
    ('interleaved', 4, True, 'C0 L0 L0 C1 L0 L0 C1 L0 L0 C1 L0 L0'),
    ('interleaved', 8, True,
     'C0 L0 C1 L0 C1 L0 C1 L0 C1 L0 C1 L0 C1 L0 C1 L0'),
    ('interleaved', 3, True, 'C0 L0 L0 C1 L0 L0 L0 C1 L0 L0 L0'),
    ('interleaved', 1, False, 'C0 L0 L1 L2 L3 L4 L5 L6 L7'),
    ('interleaved', 2, False, 'C0 L0 L1 L2 L3 C1 L4 L5 L6 L7'),
    ('interleaved', 4, False, 'C0 L0 L1 C1 L2 L3 C2 L4 L5 C3 L6 L7'),
    ('interleaved', 8, False,
     'C0 L0 C1 L1 C2 L2 C3 L3 C4 L4 C5 L5 C6 L6 C7 L7'),
    ('start', 1, True, 'C0 L0 L0 L0 L0 L0 L0 L0 L0'),
    ('start', 2, True, 'C0 C1 L0 L0 L0 L0 L0 L0 L0 L0'),
    ('start', 4, True, 'C0 C1 C1 C1 L0 L0 L0 L0 L0 L0 L0 L0'),
    ('start', 4, False, 'C0 C1 C2 C3 L0 L1 L2 L3 L4 L5 L6 L7'),
    ('start', 8, True, 'C0 C1 C1 C1 C1 C1 C1 C1 L0 L0 L0 L0 L0 L0 L0 L0'),
])
def test_schedule_order(placement, cross, share, expected):
  steps = schedule_of(num_blocks=8, num_self_attends_per_block=6,
                             num_cross_attends=cross,
                             cross_attend_placement=placement,
                             share_weights=share)
  assert ' '.join(steps_text(steps)) == expected
  # Steps of each kind are numbered 0, 1, 2, ... in execution order.
  for kind, count in (('cross_attend', cross), ('latent_transformer', 8)):
    assert [s.index for s in steps if s.kind == kind] == list(range(count))


@pytest.mark.parametrize('placement', ['interleaved', 'start'])
@pytest.mark.parametrize('cross, share, expected', [
    (4, False, 'C0 C1 C2 C3'),
    (12, False, 'C0 C1 C2 C3 C4 C5 C6 C7 C8 C9 C10 C11'),
    (4, True, 'C0 C1 C1 C1'),
])
def test_schedule_cross_attends_only(placement, cross, share, expected):
  steps = schedule_of(num_blocks=8, num_self_attends_per_block=0,
                             num_cross_attends=cross,
                             cross_attend_placement=placement,
                             share_weights=share)
  assert ' '.join(steps_text(steps)) == expected


@pytest.mark.parametrize('kwargs, match', [
    (dict(cross_attend_placement='middle'), "'middle'"),
    (dict(num_cross_attends=9), 'num_cross_attends=9.*num_blocks=8'),
    (dict(num_cross_attends=0), 'num_cross_attends.* 0'),
    (dict(num_blocks=0), 'num_blocks.* 0'),
    (dict(num_self_attends_per_block=-1), 'num_self_attends_per_block.*-1'),
    (dict(share_weights='yes'), "share_weights.*'yes'"),
])
def test_schedule_rejects_bad_values(kwargs, match):
  args = dict(num_blocks=8, num_self_attends_per_block=6, num_cross_attends=8,
              cross_attend_placement='interleaved', share_weights=True)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    schedule_of(**args)


def test_more_cross_attends_than_blocks_at_start_is_fine():
  steps = schedule_of(num_blocks=2, num_self_attends_per_block=1,
                             num_cross_attends=3,
                             cross_attend_placement='start',
                             share_weights=False)
  assert steps_text(steps) == ['C0', 'C1', 'C2', 'L0', 'L1']


# ----------------------------------------------------------------------------
# Shapes and parameter trees, for every schedule (no compilation).


def traced_shapes(batch_shape, **overrides):
  """(parameter shapes, logits shape) from a single trace of the init."""
  kwargs = dict(TINY, **overrides)
  seen = []

  def fn(x):
    logits = perceiver.PerceiverClassifier(
        CLASSES, encoder_config.EncoderConfig(**kwargs))(x, is_training=False)
    seen.append(logits.shape)  # Recorded while tracing.
    return logits

  shapes = jax.eval_shape(hk.transform(fn).init, jax.random.PRNGKey(0),
                          jax.ShapeDtypeStruct(batch_shape, jnp.float32))
  return shapes, seen[0]


@pytest.mark.parametrize('share', [True, False])
@pytest.mark.parametrize('placement', ['interleaved', 'start'])
@pytest.mark.parametrize('cross', [1, 2, 4, 8])
def test_shapes_and_weight_sets(cross, placement, share):
  shapes, logits = traced_shapes(
      (BATCH, POSITIONS, CHANNELS), num_blocks=8, num_cross_attends=cross,
      cross_attend_placement=placement, share_weights=share)
  assert logits == (BATCH, CLASSES)
  cross_sets, latent_sets = sets(shapes)
  num_cross_sets = min(cross, 2) if share else cross
  assert cross_sets == [f'cross_attend_{i}' for i in range(num_cross_sets)]
  num_latent_sets = 1 if share else 8
  assert latent_sets == [
      f'latent_transformer_{i}' for i in range(num_latent_sets)]
  assert shapes['perceiver']['latents'].shape == (4, 8)
  assert shapes['perceiver/cross_attend_0/attention/key']['w'].shape == (
      CHANNELS, CHANNELS)
  assert shapes['classification_head/logits']['w'].shape == (8, CLASSES)


@pytest.mark.parametrize('share', [True, False])
@pytest.mark.parametrize('cross', [4, 8, 12])
def test_shapes_cross_attends_only(cross, share):
  shapes, logits = traced_shapes(
      (3, 11, CHANNELS), num_blocks=8, num_self_attends_per_block=0,
      num_cross_attends=cross, share_weights=share)
  cross_sets, latent_sets = sets(shapes)
  assert len(cross_sets) == (2 if share else cross)
  assert latent_sets == []
  assert logits == (3, CLASSES)


def test_encoder_output_shape():
  f = hk.transform(lambda x: perceiver.Perceiver(
      encoder_config.EncoderConfig(**TINY))(x, is_training=False))
  x = jax.ShapeDtypeStruct((BATCH, POSITIONS, CHANNELS), jnp.float32)
  shapes = jax.eval_shape(f.init, jax.random.PRNGKey(0), x)
  latents = jax.eval_shape(f.apply, shapes, None, x)
  assert latents.shape == (BATCH, 4, 8)


def test_headline_parameter_tree_has_two_cross_attend_sets_and_one_latent():
  headline = dict(num_blocks=8, num_self_attends_per_block=6,
                  num_cross_attends=8, share_weights=True)
  shapes, _ = traced_shapes((BATCH, POSITIONS, CHANNELS), **headline)
  assert sets(shapes) == (['cross_attend_0', 'cross_attend_1'],
                          ['latent_transformer_0'])
  layers = sorted({m.split('/')[2] for m in shapes
                   if m.startswith('perceiver/latent_transformer_0/')})
  assert layers == [f'self_attend_{i}' for i in range(6)]

  # Without sharing, 8 and 8 sets, each holding the same arrays as the
  # shared one (one layer per block here, to keep the trace short).
  headline['num_self_attends_per_block'] = 1
  shared, _ = traced_shapes((BATCH, POSITIONS, CHANNELS), **headline)
  unshared, _ = traced_shapes((BATCH, POSITIONS, CHANNELS),
                              **dict(headline, share_weights=False))
  assert sets(unshared) == ([f'cross_attend_{i}' for i in range(8)],
                            [f'latent_transformer_{i}' for i in range(8)])

  def arrays(params, prefix):
    return sorted((m[len(prefix):], n, v.shape) for m, leaves in params.items()
                  if m.startswith(prefix + '/') for n, v in leaves.items())
  for i in range(8):
    assert (arrays(unshared, f'perceiver/cross_attend_{i}') ==
            arrays(shared, 'perceiver/cross_attend_1'))
    assert (arrays(unshared, f'perceiver/latent_transformer_{i}') ==
            arrays(shared, 'perceiver/latent_transformer_0'))


# ----------------------------------------------------------------------------
# Values.


def test_classifier_matches_numpy():
  """The whole model, wired by hand: schedule, sharing, mean, head."""
  params = tiny_params()
  x = inputs()
  expected = np_classifier(params, f64(x), TINY_STEPS, num_layers=1,
                           cross_heads=1, self_heads=2)
  np.testing.assert_allclose(apply(params, x), expected, atol=1e-4,
                             rtol=1e-4)


def test_permuting_input_and_position_pairs_leaves_logits_unchanged():
  params = tiny_params()
  x = inputs()
  logits = apply(params, x)
  assert np.abs(logits).max() > 0.1  # Not trivially equal.
  perm = np.random.default_rng(2).permutation(POSITIONS)
  np.testing.assert_allclose(apply(params, x[:, perm]), logits, atol=1e-5)
  # Permuting only part of each position's channels (say the pixels, not
  # their position features) does change them: the check can fail.
  mixed = np.concatenate([x[:, perm, :3], x[:, :, 3:]], axis=-1)
  assert np.abs(apply(params, mixed) - logits).max() > 1e-3


def test_reusing_shared_keys_values_gives_identical_outputs():
  params = tiny_params()
  x = inputs()
  assert jax.tree.structure(init_shapes(reuse_shared_keys_values=False)) == (
      jax.tree.structure(params))
  np.testing.assert_allclose(
      apply(params, x, reuse_shared_keys_values=False), apply(params, x),
      atol=1e-6, rtol=1e-6)

  # And reuse does skip work: 4 fewer key/value projections (cross-attends 1
  # and 2 share one set, computed once instead of twice... per K and V).
  def num_matmuls(reuse):
    # Projections of the inputs (the absorbed path has none to reuse).
    fn = functools.partial(
        classifier(reuse_shared_keys_values=reuse,
                   absorb_cross_attend_projections=False).apply,
        params, None, x)
    return sum(eqn.primitive.name == 'dot_general'
               for eqn in jax.make_jaxpr(fn)().jaxpr.eqns)
  assert num_matmuls(False) - num_matmuls(True) == 2


def test_absorbed_cross_attend_projections_give_identical_outputs():
  """TINY's one-head cross-attends with K/V projections on the query side
  (the default) against the plain path: same parameters, same logits with
  and without a key mask, with and without K/V reuse."""
  params = tiny_params()
  x = inputs()
  assert jax.tree.structure(
      init_shapes(absorb_cross_attend_projections=False)) == (
          jax.tree.structure(params))
  mask = np.array([[1, 1, 0, 1, 0, 1, 1], [0, 1, 1, 1, 1, 1, 0]], bool)
  for m in (None, mask):
    for reuse in (True, False):
      np.testing.assert_allclose(
          apply(params, x, m, reuse_shared_keys_values=reuse),
          apply(params, x, m, reuse_shared_keys_values=reuse,
                absorb_cross_attend_projections=False),
          atol=1e-5, rtol=1e-5)


def test_attention_implementations_agree_with_a_key_mask():
  params = tiny_params()
  x = inputs()
  mask = np.array([[1, 1, 0, 1, 0, 1, 1], [0, 1, 1, 1, 1, 1, 0]], bool)
  einsum = apply(params, x, mask)
  dot_product = apply(params, x, mask, attention_impl='dot_product')
  np.testing.assert_allclose(dot_product, einsum, atol=1e-5, rtol=1e-5)
  expected = np_classifier(params, f64(x), TINY_STEPS, num_layers=1,
                           cross_heads=1, self_heads=2, mask=mask)
  np.testing.assert_allclose(einsum, expected, atol=1e-4, rtol=1e-4)
  # Masked inputs get no weight: anything there leaves the logits unchanged.
  junk = np.where(mask[..., None], x, 1e3)
  np.testing.assert_allclose(apply(params, junk, mask, attention_impl=
                                   'dot_product'), dot_product, atol=1e-5)
  assert np.abs(einsum - apply(params, x)).max() > 1e-3


def test_dropout_changes_outputs_only_in_training():
  params = tiny_params()
  x = inputs()
  reference = apply(params, x)
  np.testing.assert_allclose(apply(params, x, dropout=0.3), reference,
                             atol=1e-6)
  train1 = apply(params, x, rng=jax.random.PRNGKey(0), is_training=True,
                 dropout=0.3)
  train2 = apply(params, x, rng=jax.random.PRNGKey(1), is_training=True,
                 dropout=0.3)
  assert np.abs(train1 - reference).max() > 1e-3
  assert np.abs(train1 - train2).max() > 1e-3


def test_shared_weight_gradient_is_the_sum_of_per_use_gradients():
  """d loss / d shared weight == sum over its uses of d loss / d (own copy).

  The unshared model (C0 L0 C1 L1 C2 L2) given copies of the shared model's
  weights (C0 L0 C1 L0 C1 L0) computes the same function; each of its
  copies receives the gradient of one use.
  """
  shared = tiny_params()
  shapes = init_shapes(share_weights=False)
  assert sets(shapes) == (['cross_attend_0', 'cross_attend_1',
                           'cross_attend_2'],
                          ['latent_transformer_0', 'latent_transformer_1',
                           'latent_transformer_2'])
  source = {'cross_attend_0': 'cross_attend_0', 'cross_attend_1':
            'cross_attend_1', 'cross_attend_2': 'cross_attend_1',
            'latent_transformer_0': 'latent_transformer_0',
            'latent_transformer_1': 'latent_transformer_0',
            'latent_transformer_2': 'latent_transformer_0'}

  def shared_name(module):
    parts = module.split('/')
    if parts[0] == 'perceiver' and len(parts) > 1:
      parts[1] = source[parts[1]]
    return '/'.join(parts)

  unshared = {m: dict(shared[shared_name(m)]) for m in shapes}
  x = inputs()
  targets = np.random.default_rng(3).standard_normal((BATCH, CLASSES))

  def loss_fn(share):
    f = classifier(share_weights=share)
    return lambda p: jnp.sum(f.apply(p, None, x) * targets)

  loss_shared, grad_shared = jit(jax.value_and_grad(loss_fn(True)))(shared)
  loss_unshared, grad_unshared = jit(jax.value_and_grad(loss_fn(False)))(
      unshared)
  np.testing.assert_allclose(loss_unshared, loss_shared, rtol=1e-5)

  summed = jax.tree.map(np.zeros_like, dict(grad_shared))
  for module, leaves in grad_unshared.items():
    for name, g in leaves.items():
      summed[shared_name(module)][name] = (
          summed[shared_name(module)][name] + np.asarray(g))
  for module, leaves in grad_shared.items():
    for name, g in leaves.items():
      np.testing.assert_allclose(g, summed[module][name], atol=1e-5,
                                 rtol=1e-4, err_msg=f'{module}/{name}')
  # Every use contributes: no use's gradient is zero, and a shared gradient
  # differs from any single use's.
  g1 = grad_unshared['perceiver/latent_transformer_1/self_attend_0/mlp/hidden']
  assert np.abs(g1['w']).max() > 1e-3
  np.testing.assert_raises(
      AssertionError, np.testing.assert_allclose, g1['w'],
      grad_shared['perceiver/latent_transformer_0/self_attend_0/mlp/hidden'][
          'w'], atol=1e-5)


def test_initial_parameters():
  f = classifier(num_latents=64, num_latent_channels=32, num_self_heads=4,
                 num_blocks=1, num_cross_attends=1)
  params = jit(f.init)(jax.random.PRNGKey(0), inputs())
  latents = np.asarray(params['perceiver']['latents'])
  assert latents.shape == (64, 32)
  # Haiku's TruncatedNormal(0.02): a normal of stddev 0.02 cut at +-0.04,
  # whose own standard deviation is 0.02 * 0.8796.
  assert abs(latents.std() - 0.02 * 0.87962566) < 0.02 * 0.05
  assert np.abs(latents).max() <= 0.04 + 1e-7
  assert np.abs(latents).max() > 0.03
  head = params['classification_head/logits']
  np.testing.assert_array_equal(head['w'], np.zeros((32, CLASSES)))
  np.testing.assert_array_equal(head['b'], np.zeros(CLASSES))
  for module, leaves in params.items():
    for name, value in leaves.items():
      if name in ('b', 'offset'):
        np.testing.assert_array_equal(value, 0.0, err_msg=module)
      elif name == 'scale':
        np.testing.assert_array_equal(value, 1.0, err_msg=module)


# ----------------------------------------------------------------------------
# Bad configurations and inputs.


@pytest.mark.parametrize('shape, match', [
    ((BATCH, POSITIONS), r'rank 3.*\(2, 7\)'),
    ((BATCH, POSITIONS, CHANNELS, 1), r'rank 3.*\(2, 7, 6, 1\)'),
    ((0, POSITIONS, CHANNELS), r'non-empty.*\(0, 7, 6\)'),
    ((BATCH, 0, CHANNELS), r'non-empty.*\(2, 0, 6\)'),
])
def test_bad_input_shapes_raise(shape, match):
  f = classifier()
  with pytest.raises(ValueError, match=match):
    jax.eval_shape(f.init, jax.random.PRNGKey(0),
                   jax.ShapeDtypeStruct(shape, jnp.float32))


def test_params_of_another_channel_count_raise():
  wrong = jax.ShapeDtypeStruct((BATCH, POSITIONS, CHANNELS + 1), jnp.float32)
  with pytest.raises(ValueError, match=r'input_norm.*\(6,\).*7'):
    jax.eval_shape(classifier().apply, tiny_params(), None, wrong)


def test_heads_that_do_not_divide_raise():
  def build(**overrides):
    kwargs = dict(TINY, **overrides)
    f = hk.transform(lambda x: perceiver.PerceiverClassifier(
        CLASSES, encoder_config.EncoderConfig(**kwargs))(x, is_training=False))
    return jax.eval_shape(f.init, jax.random.PRNGKey(0), jax.ShapeDtypeStruct(
        (BATCH, POSITIONS, CHANNELS), jnp.float32))

  with pytest.raises(ValueError, match='num_self_heads=3.*=8'):
    build(num_self_heads=3)
  # The call names the inputs' shape.
  with pytest.raises(ValueError, match=r'num_cross_heads=4.*\(2, 7, 6\)'):
    build(num_cross_heads=4)


@pytest.mark.parametrize('overrides, match', [
    (dict(dropout=float('nan')), 'dropout.*nan'),
    (dict(dropout=float('inf')), 'dropout.*inf'),
    (dict(cross_attend_placement='middle'), "'middle'"),
    (dict(num_cross_attends=4), 'num_cross_attends=4.*num_blocks=3'),
    (dict(attention_impl='flash'), "attention_impl.*'flash'"),
    (dict(num_latents=0), 'num_latents.* 0'),
    (dict(num_latent_channels=8.0), 'num_latent_channels.*8.0'),
    (dict(widening_factor=0), 'widening_factor.* 0'),
])
def test_bad_encoder_config_raises(overrides, match):
  kwargs = dict(TINY, **overrides)
  with pytest.raises(ValueError, match=match):
    encoder_config.EncoderConfig(**kwargs)


def test_config_values_are_named_by_their_path():
  model = ml_collections.ConfigDict(dict(encoder=dict(TINY, dropout=0.0)))
  assert encoder_config.EncoderConfig.from_mapping(
      model.encoder) == encoder_config.EncoderConfig(**TINY)
  for value in (float('nan'), float('inf'), -float('inf')):
    model.encoder.dropout = value
    with pytest.raises(ValueError,
                       match=f'config.model.encoder.dropout.*{value}'):
      encoder_config.EncoderConfig.from_mapping(model.encoder)
  with pytest.raises(ValueError, match='config.model.encoder.num_latents.*inf'):
    encoder_config.EncoderConfig.from_mapping(
        dict(TINY, num_latents=float('inf')))
  with pytest.raises(ValueError, match=r"unknown field\(s\) \['num_latent'\]"):
    encoder_config.EncoderConfig.from_mapping(dict(TINY, num_latent=3))


def test_bad_mask_shape_and_num_classes_raise():
  f = classifier()
  x = jax.ShapeDtypeStruct((BATCH, POSITIONS, CHANNELS), jnp.float32)
  mask = jax.ShapeDtypeStruct((BATCH, POSITIONS + 1), jnp.bool_)
  with pytest.raises(ValueError, match=r'input_mask.*\(2, 8\).*\(2, 7\)'):
    jax.eval_shape(f.init, jax.random.PRNGKey(0), x, mask)
  g = hk.transform(lambda: perceiver.ClassificationHead(0))
  with pytest.raises(ValueError, match='num_classes.* 0'):
    g.init(None)
