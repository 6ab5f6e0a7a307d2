"""Builds a classifier's forward function from `config.model`.

`config.model` holds the encoder fields (see `perceiver.ENCODER_FIELDS`) and
`config.model.input`, which describes the adapter:

- `type`: which adapter turns the batch into the byte array ('grid', ...).
- `key`: the batch entry the adapter reads (for single-input adapters).
- `index_dims`, `raw_channels`: the grid and its channels per position.
- position encoding fields: `position_encoding`, `num_bands`,
  `max_resolution`, `learned_position_channels`,
  `learned_position_init_scale`, `permutation_seed` (None: no permutation).

Each modality registers its adapter builder in `ADAPTER_BUILDERS`.
"""

import copy
from typing import Any, Callable, Mapping, Optional

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from perceiver_jax.model import adapters
from perceiver_jax.model import perceiver
from perceiver_jax.model import position_encoding as pe

Batch = Mapping[str, jax.Array]
# An adapter maps the batch to (byte array [B, M, C], mask [B, M] or None).
Adapter = Callable[..., tuple[jax.Array, Optional[jax.Array]]]


def input_permutation(input_config: Mapping[str, Any]) -> Optional[np.ndarray]:
  """The fixed input permutation named by `permutation_seed`, or None."""
  seed = input_config.get('permutation_seed')
  if seed is None:
    return None
  num_positions = int(np.prod(input_config['index_dims']))
  return pe.permutation(num_positions, seed)


class _GridInput:
  """Reads `batch[key]` `[B, *index_dims, C_raw]` through a `GridAdapter`."""

  def __init__(self, input_config: Mapping[str, Any]):
    self._key = input_config['key']
    self._raw_channels = input_config['raw_channels']
    max_resolution = input_config.get('max_resolution')
    self._adapter = adapters.GridAdapter(
        input_config['index_dims'],
        position_encoding=input_config.get('position_encoding', 'fourier'),
        num_bands=input_config.get('num_bands', 64),
        max_resolution=None if max_resolution is None else tuple(
            max_resolution),
        learned_position_channels=input_config.get(
            'learned_position_channels', 128),
        learned_position_init_scale=input_config.get(
            'learned_position_init_scale', 1.0),
        permutation=input_permutation(input_config))

  @property
  def num_channels(self) -> int:
    return self._adapter.num_channels(self._raw_channels)

  def __call__(self, batch: Batch, *, is_training: bool):
    del is_training  # No augmentation in the grid adapter.
    x = batch[self._key]
    if x.shape[-1] != self._raw_channels:
      raise ValueError(
          f'batch[{self._key!r}] has shape {x.shape}; expected '
          f'{self._raw_channels} channels per position.')
    return self._adapter(x), None


# Adapter type -> builder taking `config.model.input`, returning an object
# with `num_channels` (C) that maps (batch, is_training=...) to
# (inputs [B, M, C], mask [B, M] or None). Built inside a Haiku transform.
ADAPTER_BUILDERS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    'grid': _GridInput,
}


def _grid_example_batch(input_config: Mapping[str, Any],
                        batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
  shape = (batch_size, *(int(n) for n in input_config['index_dims']),
           int(input_config['raw_channels']))
  return {input_config['key']: jax.ShapeDtypeStruct(shape, jnp.float32)}


# Adapter type -> function (input_config, batch_size) -> the shapes and dtypes
# of the batch entries the adapter reads. Register one per adapter type, next
# to its `ADAPTER_BUILDERS` entry.
EXAMPLE_BATCH_BUILDERS: dict[
    str, Callable[[Mapping[str, Any], int], dict[str, jax.ShapeDtypeStruct]]
] = {
    'grid': _grid_example_batch,
}


def example_batch(input_config: Mapping[str, Any],
                  batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes of a batch that the adapter of `input_config` accepts.

  For `jax.eval_shape` (initialise without computing) and for lowering the
  forward pass (FLOP counts) without any data. For type 'grid':
  `{key: ShapeDtypeStruct([batch_size, *index_dims, raw_channels], float32)}`.

  Args:
    input_config: `config.model.input`.
    batch_size: leading dimension of every entry.

  Returns:
    Batch key -> `jax.ShapeDtypeStruct`.
  """
  if (isinstance(batch_size, bool) or not isinstance(batch_size, int) or
      batch_size < 1):
    raise ValueError(f'batch_size must be a positive integer, got '
                     f'{batch_size!r}.')
  kind = input_config.get('type')
  if kind not in EXAMPLE_BATCH_BUILDERS:
    raise ValueError(f'config.model.input.type must be one of '
                     f'{sorted(EXAMPLE_BATCH_BUILDERS)}, got {kind!r}.')
  return EXAMPLE_BATCH_BUILDERS[kind](input_config, batch_size)


def make_adapter(input_config: Mapping[str, Any]):
  """Builds the adapter that `input_config.type` names."""
  kind = input_config.get('type')
  if kind not in ADAPTER_BUILDERS:
    raise ValueError(f'config.model.input.type must be one of '
                     f'{sorted(ADAPTER_BUILDERS)}, got {kind!r}.')
  return ADAPTER_BUILDERS[kind](input_config)


def classifier_forward(model_config: Mapping[str, Any],
                       num_classes: int) -> Callable[..., jax.Array]:
  """A function `forward(batch, *, is_training) -> logits [B, num_classes]`.

  Transform it with `hk.transform` (its parameters are then the adapter's,
  `perceiver/...` and `classification_head/...`).
  """
  encoder_kwargs = perceiver.encoder_kwargs(model_config)
  # A snapshot, like the encoder's arguments: the forward function must not
  # change when the caller later edits its config (e.g. to build a variant).
  input_config = copy.deepcopy(model_config['input'])

  def forward(batch: Batch, *, is_training: bool) -> jax.Array:
    adapter = make_adapter(input_config)
    inputs, mask = adapter(batch, is_training=is_training)
    classifier = perceiver.PerceiverClassifier(
        num_classes, input_channels=adapter.num_channels, **encoder_kwargs)
    return classifier(inputs, input_mask=mask, is_training=is_training)

  return forward


def transform_classifier(model_config: Mapping[str, Any],
                         num_classes: int) -> hk.Transformed:
  """`hk.transform` of `classifier_forward`."""
  return hk.transform(classifier_forward(model_config, num_classes))
