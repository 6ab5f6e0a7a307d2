"""A grid's byte array in parts (`grid_byte_array`, `GridAdapter.parts`).

References are float64 numpy on the materialised byte array: the channels
concatenated by hand, the LayerNorm and attention of `model_test_utils`,
independent of the code under test.
"""

import functools

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import digits
from perceiver_jax.model import fast_cross_attend
from perceiver_jax.model import factory
from perceiver_jax.model import grid_byte_array
from perceiver_jax.model import inputs
from perceiver_jax.model import position_encoding as pe
from tests.helpers.model_test_utils import f64
from tests.helpers.model_test_utils import jit
from tests.helpers.model_test_utils import nested_equations
from tests.helpers.model_test_utils import np_cross_attend_block
from tests.helpers.model_test_utils import np_layer_norm
from tests.helpers.model_test_utils import random_params

INDEX_DIMS = (3, 4)
NUM_BANDS = 2
# 2 axes * (2 bands * 2 + 1) feature channels after 3 content channels.
CONTENT, FEATURES = 3, 10


def _features() -> np.ndarray:
  return pe.fourier_grid_features(INDEX_DIMS, NUM_BANDS)  # [12, 10]


def _content(seed=0, batch=2, offset=0.0, spread=1.0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return (offset + spread * rng.standard_normal(
      (batch, int(np.prod(INDEX_DIMS)), CONTENT))).astype(np.float32)


def _parts(content, tables=None) -> grid_byte_array.GridByteArray:
  if tables is None:
    tables = pe.axis_tables(_features().reshape(*INDEX_DIMS, -1))
  return grid_byte_array.GridByteArray(
      jnp.asarray(content), tuple(jnp.asarray(t) for t in tables))


def _dense(content, features=None) -> np.ndarray:
  """The byte array by hand: content, then the grid's features."""
  features = _features() if features is None else features
  batch = content.shape[0]
  return np.concatenate(
      [f64(content), np.broadcast_to(f64(features),
                                     (batch, *features.shape))], axis=-1)


def _standardize(x):
  return np_layer_norm(x, 1.0, 0.0)


# ----------------------------------------------------------------------------
# Per-axis tables.


@pytest.mark.parametrize('index_dims', [(5,), (3, 4), (2, 3, 4)])
def test_axis_tables_sum_to_the_fourier_grid(index_dims):
  features = pe.fourier_grid_features(index_dims, 3)
  grid = features.reshape(*index_dims, -1)
  tables = pe.axis_tables(grid)
  assert [t.shape for t in tables] == [(n, features.shape[-1])
                                       for n in index_dims]
  total = 0
  for a, table in enumerate(tables):
    shape = [1] * len(index_dims) + [features.shape[-1]]
    shape[a] = index_dims[a]
    total = total + table.reshape(shape)
  np.testing.assert_array_equal(total, grid)
  # No channel is in two tables.
  owners = sum((t != 0).any(axis=0).astype(int) for t in tables)
  assert owners.max() == 1


def test_axis_tables_give_each_axis_its_own_channels():
  """The layout of `fourier_features`, by hand, for 2 axes and 2 bands:
  [x_1, x_2, sin(x_1) x2, sin(x_2) x2, cos(x_1) x2, cos(x_2) x2]."""
  tables = pe.axis_tables(_features().reshape(*INDEX_DIMS, -1))
  owned = [np.flatnonzero((t != 0).any(axis=0)).tolist() for t in tables]
  assert owned == [[0, 2, 3, 6, 7], [1, 4, 5, 8, 9]]
  # Axis 0 runs from -1 to 1 over 3 rows.
  np.testing.assert_allclose(tables[0][:, 0], [-1.0, 0.0, 1.0])


def test_axis_tables_reject_features_that_vary_along_two_axes():
  grid = _features().reshape(*INDEX_DIMS, -1).copy()
  rows, cols = np.meshgrid(np.arange(3), np.arange(4), indexing='ij')
  grid[..., 7] = rows * cols  # Depends on both coordinates.
  with pytest.raises(ValueError, match=r'Channels \[7\] .* more than one'):
    pe.axis_tables(grid)


# ----------------------------------------------------------------------------
# The parts against the materialised byte array.


def test_materialize_and_shape():
  content = _content()
  parts = _parts(content)
  assert parts.shape == (2, 12, CONTENT + FEATURES) and parts.ndim == 3
  assert parts.dtype == jnp.float32
  np.testing.assert_allclose(parts.materialize(), _dense(content),
                             atol=1e-6)
  half = parts.astype(jnp.bfloat16)
  assert half.content.dtype == jnp.bfloat16
  assert all(t.dtype == jnp.bfloat16 for t in half.axis_features)


def test_grid_adapter_parts_are_its_byte_array():
  images = _content().reshape(2, *INDEX_DIMS, CONTENT)
  fn = hk.transform(lambda x: (
      inputs.GridAdapter(INDEX_DIMS, num_bands=NUM_BANDS)(x),
      inputs.GridAdapter(INDEX_DIMS, num_bands=NUM_BANDS,
                           name='other').parts(x).materialize()))
  dense, from_parts = fn.apply({}, None, images)
  np.testing.assert_allclose(dense, _dense(_content()), atol=1e-6)
  np.testing.assert_array_equal(from_parts, dense)


@pytest.mark.parametrize('kwargs, match', [
    (dict(position_encoding='learned'), "position_encoding='learned'"),
    (dict(permutation=np.arange(12)[::-1].copy()), 'a permutation'),
])
def test_grid_adapter_parts_need_fourier_features_in_grid_order(kwargs,
                                                               match):
  images = _content().reshape(2, *INDEX_DIMS, CONTENT)
  adapter = lambda: inputs.GridAdapter(INDEX_DIMS, num_bands=NUM_BANDS,
                                         **kwargs)
  assert not hk.transform(lambda: adapter().has_parts).apply({}, None)
  with pytest.raises(ValueError, match=match):
    hk.transform(lambda x: adapter().parts(x)).init(
        jax.random.PRNGKey(0), images)


def _assert_parts_are(parts, s, seed):
  """`parts` (a StandardizedGrid) against the numpy standardised array `s`
  `[B, M, C]`: S itself, `q S^T` and `w S` for random q and w."""
  batch, positions, channels = s.shape
  rng = np.random.default_rng(seed)
  queries = rng.standard_normal((batch, 3, channels)).astype(np.float32)
  weights = rng.uniform(size=(batch, 3, positions)).astype(np.float32)
  np.testing.assert_allclose(parts.dense(), s, atol=2e-5)
  np.testing.assert_allclose(
      parts.logits(jnp.asarray(queries)),
      np.einsum('bnc,bmc->bnm', f64(queries), s), atol=1e-4, rtol=1e-5)
  np.testing.assert_allclose(
      parts.pool(jnp.asarray(weights)),
      np.einsum('bnm,bmc->bnc', f64(weights), s), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize('offset, spread', [(0.0, 1.0), (3.0, 2.0)])
def test_standardized_parts_match_numpy(offset, spread):
  """S, `q S^T` and `w S` from the parts equal the numpy values on the
  materialised, standardised byte array (also for content far from the
  features' scale, where the one-pass variance loses the most)."""
  content = _content(offset=offset, spread=spread)
  s = _standardize(_dense(content))  # [2, 12, 13]
  parts = _parts(content).standardize(1e-5)
  _assert_parts_are(parts, s, seed=1)


@pytest.mark.parametrize('index_dims', [(7,), (2, 3, 2)])
def test_standardized_parts_match_numpy_on_1d_and_3d_grids(index_dims):
  features = pe.fourier_grid_features(index_dims, 2)
  tables = pe.axis_tables(features.reshape(*index_dims, -1))
  positions = features.shape[0]
  rng = np.random.default_rng(11)
  content = rng.standard_normal((2, positions, 2)).astype(np.float32)
  _assert_parts_are(_parts(content, tables).standardize(1e-5),
                    _standardize(_dense(content, features)), seed=12)


def test_parts_that_do_not_fit_are_named():
  content = jnp.zeros((2, 12, CONTENT))
  with pytest.raises(ValueError, match=r'prod\(n_a\) == M'):
    grid_byte_array.GridByteArray(
        content, (jnp.zeros((3, 10)), jnp.zeros((5, 10)))).check()
  with pytest.raises(ValueError, match='with one F'):
    grid_byte_array.GridByteArray(
        content, (jnp.zeros((3, 10)), jnp.zeros((4, 9)))).check()
  grid_byte_array.GridByteArray(
      content, (jnp.zeros((3, 10)), jnp.zeros((4, 10)))).check()


def test_overlapping_tables_are_handled():
  """Tables that share channels (not what `axis_tables` makes): the
  squares' cross terms keep the LayerNorm statistics right."""
  rng = np.random.default_rng(2)
  tables = [rng.standard_normal((n, FEATURES)).astype(np.float32)
            for n in INDEX_DIMS]
  features = (tables[0][:, None] + tables[1][None]).reshape(12, FEATURES)
  content = _content(3)
  _assert_parts_are(_parts(content, tables).standardize(1e-5),
                    _standardize(_dense(content, features)), seed=13)


# ----------------------------------------------------------------------------
# A cross-attend on the parts.


def _block_fn(absorb, dropout=0.0):
  def fn(z, content, mask, dense, is_training=False):
    block = fast_cross_attend.FastCrossAttendBlock(
        input_channels=CONTENT + FEATURES, absorb_projections=absorb,
        dropout=dropout, name='cross')
    if dense:  # By hand, as `_dense` (content is traced here).
      features = jnp.asarray(_features())
      inputs = jnp.concatenate([content, jnp.broadcast_to(
          features, (content.shape[0], *features.shape))], axis=-1)
    else:
      inputs = _parts(content)
    return block(z, inputs, input_mask=mask, is_training=is_training)
  return hk.transform(fn)


def _block_data():
  rng = np.random.default_rng(4)
  z = rng.standard_normal((2, 4, 8)).astype(np.float32)
  mask = rng.uniform(size=(2, 12)) > 0.3
  mask[:, 0] = True
  return z, _content(5), mask


def _block_params(z, content, mask):
  shapes = jax.eval_shape(
      functools.partial(_block_fn(True).init, dense=True),
      jax.random.PRNGKey(0), z, content, mask)
  return random_params(shapes, seed=6, scale=0.5)


@pytest.mark.parametrize('absorb', [True, False])
def test_cross_attend_on_parts_matches_numpy(absorb):
  z, content, mask = _block_data()
  params = _block_params(z, content, mask)
  expected = np_cross_attend_block(params, 'cross', f64(z), _dense(content),
                                   1, mask)
  apply = jit(_block_fn(absorb).apply, static_argnums=5)
  got = apply(params, None, z, content, mask, False)
  np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_cross_attend_on_parts_has_the_dense_gradients():
  z, content, mask = _block_data()
  params = _block_params(z, content, mask)
  weights = np.random.default_rng(7).standard_normal((2, 4, 8))

  def grads(dense):
    f = _block_fn(True)
    return jit(jax.grad(lambda p: jnp.sum(
        f.apply(p, None, z, content, mask, dense) * weights)))(params)

  want, got = grads(True), grads(False)
  for module in want:
    for name in want[module]:
      np.testing.assert_allclose(got[module][name], want[module][name],
                                 atol=2e-4, rtol=2e-4,
                                 err_msg=f'{module}/{name}')


def test_cross_attend_on_parts_falls_back_with_attention_dropout():
  z, content, mask = _block_data()
  params = _block_params(z, content, mask)
  f = _block_fn(True, dropout=0.5)
  run = lambda dense: jit(f.apply, static_argnums=(5, 6))(
      params, jax.random.PRNGKey(8), z, content, mask, dense, True)
  np.testing.assert_allclose(run(False), run(True), atol=1e-5, rtol=1e-5)


def test_cross_attend_on_parts_never_builds_the_byte_array():
  """Neither the forward pass nor the gradient has an array of the byte
  array's size `[B, M, C]` (the dense path has several)."""
  z, content, mask = _block_data()
  params = _block_params(z, content, mask)
  byte_array_size = 2 * 12 * (CONTENT + FEATURES)

  def sizes(dense):
    f = _block_fn(True)
    loss = lambda p: jnp.sum(f.apply(p, None, z, content, mask, dense))
    jaxpr = jax.make_jaxpr(jax.value_and_grad(loss))(params)

    def walk(eqns):
      for eqn in eqns:
        yield from (v.aval.size for v in eqn.outvars)
        for sub in jax.core.jaxprs_in_params(eqn.params):
          yield from walk(sub.eqns)

    return list(walk(jaxpr.jaxpr.eqns))

  assert sizes(True).count(byte_array_size) >= 3
  assert byte_array_size not in sizes(False)


# ----------------------------------------------------------------------------
# Through the factory.


# The digits runlocal byte array: 3 images, 8 x 8 positions, 1 + 2 * (2 * 4
# + 1) channels.
DIGITS_BYTE_ARRAY = (3, 64, 19)


def _digits_loss(grid_parts, permuted=False, scan=False, **model):
  """(loss function of the parameters, parameters) on 3 random digits."""
  config = digits.get_config('runlocal')
  config.model.grid_parts = grid_parts
  config.model.encoder.update(scan_blocks=scan, **model)
  if permuted:
    config.model.input.permutation_seed = 0
  forward = factory.transform_classifier(config.model, 10)
  images = np.random.default_rng(9).uniform(size=(3, 8, 8, 1)).astype(
      np.float32)
  batch = {'image': images}
  shapes = jax.eval_shape(functools.partial(forward.init, is_training=False),
                          jax.random.PRNGKey(0), batch)
  params = random_params(shapes, seed=10, scale=0.3)

  def loss(p):
    logits = forward.apply(p, None, batch, is_training=False)
    return jnp.sum(jnp.sin(logits)), logits

  return loss, params


@functools.lru_cache(maxsize=None)
def _digits_run(grid_parts, permuted=False, scan=False, **model):
  loss, params = _digits_loss(grid_parts, permuted, scan, **model)
  (_, logits), grads = jit(jax.value_and_grad(loss, has_aux=True))(params)
  return np.asarray(logits), grads


def _array_shapes(fn, *args) -> set[tuple[int, ...]]:
  """Shapes of every value in the jaxpr of `fn(*args)`, nested ones too."""
  return {tuple(v.aval.shape)
          for eqn in nested_equations(jax.make_jaxpr(fn)(*args).jaxpr)
          for v in eqn.outvars}


@pytest.mark.parametrize('scan', [False, True])
def test_classifier_with_grid_parts_matches_the_byte_array(scan):
  logits, grads = _digits_run(False, scan=scan)
  assert np.abs(logits).max() > 0.1
  parts_logits, parts_grads = _digits_run(True, scan=scan)
  np.testing.assert_allclose(parts_logits, logits, atol=1e-5, rtol=1e-5)
  scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(grads))
  for got, want in zip(jax.tree.leaves(parts_grads), jax.tree.leaves(grads)):
    np.testing.assert_allclose(got, want, atol=1e-5 * scale)


def test_classifier_with_grid_parts_never_builds_the_byte_array():
  """The factory really hands the parts to the cross-attends: no value of
  the byte array's shape in the gradient's program (the dense one has)."""
  for grid_parts in (True, False):
    loss, params = _digits_loss(grid_parts)
    gradient = jax.grad(lambda p, f=loss: f(p)[0])
    shapes = _array_shapes(gradient, params)
    assert (DIGITS_BYTE_ARRAY in shapes) != grid_parts


def test_grid_parts_in_bfloat16_are_close_to_the_byte_array():
  logits, _ = _digits_run(False, precision='bfloat16')
  parts_logits, _ = _digits_run(True, precision='bfloat16')
  # bfloat16 rounding on both paths (see test_performance_modes.py).
  assert np.abs(parts_logits - logits).max() <= 3e-2 * np.abs(logits).max()


def test_bfloat16_digits_logits_and_gradients_are_close_to_float32():
  """The digits model (grid parts, absorbed cross-attend, bfloat16 products
  accumulated in float32) against float32, at test_performance_modes.py's
  tolerances: 3% of the largest logit, 6% of the largest gradient."""
  logits, grads = _digits_run(True)
  bf16_logits, bf16_grads = _digits_run(True, precision='bfloat16')
  assert not np.array_equal(bf16_logits, logits)  # It computes in bfloat16.
  assert np.abs(bf16_logits - logits).max() <= 3e-2 * np.abs(logits).max()
  scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(grads))
  for got, want in zip(jax.tree.leaves(bf16_grads), jax.tree.leaves(grads)):
    assert got.dtype == np.float32
    assert np.abs(got - want).max() <= 6e-2 * scale


def test_parts_are_materialised_once_where_they_cannot_be_read():
  """With several cross-attend heads (19: C = 19 is prime, so heads of
  width 1) the encoder materialises the byte array: the dense values."""
  logits, grads = _digits_run(False, num_cross_heads=19)
  parts_logits, parts_grads = _digits_run(True, num_cross_heads=19)
  np.testing.assert_allclose(parts_logits, logits, atol=1e-6, rtol=1e-6)
  for got, want in zip(jax.tree.leaves(parts_grads), jax.tree.leaves(grads)):
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-6)


def test_permuted_inputs_use_the_byte_array():
  """A permutation has no parts (`has_parts` False): the same program."""
  logits, _ = _digits_run(False, permuted=True)
  parts_logits, _ = _digits_run(True, permuted=True)
  np.testing.assert_array_equal(parts_logits, logits)


def test_grid_parts_must_be_a_bool():
  # A ConfigDict keeps the field's type; a plain mapping does not.
  model_config = digits.get_config('runlocal').model.to_dict()
  model_config['grid_parts'] = 'yes'
  with pytest.raises(ValueError, match="grid_parts must be a bool, got 'yes'"):
    factory.classifier_forward(model_config, 10)
