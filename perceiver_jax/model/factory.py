"""Builds a classifier's forward function from `config.model`.

`config.model` holds the encoder fields (see `perceiver.ENCODER_FIELDS`) and
`config.model.input`, which describes the adapter:

- `type`: which adapter turns the batch into the byte array ('grid', ...).
- `key`: the batch entry the adapter reads (for single-input adapters).
- `index_dims`, `raw_channels`: the grid and its channels per position.
- position encoding fields: `position_encoding`, `num_bands`,
  `max_resolution`, `learned_position_channels`,
  `learned_position_init_scale`, `permutation_seed` (None: no permutation).

Type 'points' (point clouds, `batch[key]` `[B, P, 3]`): `num_bands`,
`max_resolution` (mu per axis, 3 values) and `num_points` (P, which only
`example_points_batch` uses; the adapter takes any P).

Each modality registers its adapter builder in `ADAPTER_BUILDERS`.
"""

from typing import Any, Callable, Mapping, Optional

import haiku as hk
import jax
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


class _PointsInput:
  """Reads `batch[key]` `[B, P, 3]` through a `PointCloudAdapter`."""

  def __init__(self, input_config: Mapping[str, Any]):
    self._key = input_config['key']
    self._adapter = adapters.PointCloudAdapter(
        num_bands=input_config.get('num_bands', 64),
        max_resolution=tuple(input_config['max_resolution']))

  @property
  def num_channels(self) -> int:
    return self._adapter.num_channels

  def __call__(self, batch: Batch, *, is_training: bool):
    del is_training  # Augmentation happens in the data pipeline.
    return self._adapter(batch[self._key]), None


def example_points_batch(input_config: Mapping[str, Any],
                         batch_size: int) -> dict[str, np.ndarray]:
  """A zero batch shaped like the data of a 'points' input (for `init`).

  Returns:
    `{key: float32 [batch_size, num_points, 3]}`.
  """
  if input_config.get('type') != 'points':
    raise ValueError(f'example_points_batch needs an input of type '
                     f"'points', got {input_config.get('type')!r}.")
  num_points = input_config.get('num_points')
  if num_points is None or num_points < 1 or batch_size < 1:
    raise ValueError(f'Need positive batch_size and input num_points, got '
                     f'{batch_size} and {num_points!r}.')
  return {input_config['key']: np.zeros((batch_size, int(num_points), 3),
                                        np.float32)}


# Adapter type -> builder taking `config.model.input`, returning an object
# with `num_channels` (C) that maps (batch, is_training=...) to
# (inputs [B, M, C], mask [B, M] or None). Built inside a Haiku transform.
ADAPTER_BUILDERS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    'grid': _GridInput,
    'points': _PointsInput,
}


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

  def forward(batch: Batch, *, is_training: bool) -> jax.Array:
    adapter = make_adapter(model_config['input'])
    inputs, mask = adapter(batch, is_training=is_training)
    classifier = perceiver.PerceiverClassifier(
        num_classes, input_channels=adapter.num_channels, **encoder_kwargs)
    return classifier(inputs, input_mask=mask, is_training=is_training)

  return forward


def transform_classifier(model_config: Mapping[str, Any],
                         num_classes: int) -> hk.Transformed:
  """`hk.transform` of `classifier_forward`."""
  return hk.transform(classifier_forward(model_config, num_classes))
