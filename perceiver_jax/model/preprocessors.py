"""Image preprocessors of DeepMind's released Perceiver IO ImageNet models.

Images are `[B, H, W, 3]` (channels last). Besides the paper's pixels +
Fourier features (`adapters.GridAdapter`, which already orders channels as
those models do: pixels, then positions, sines, cosines), the released
classifiers use:

- `Conv1x1LearnedAdapter` (the "learned" model): a 1x1 convolution of the
  pixels to `out_channels`, concatenated with trainable position embeddings
  `[H * W, position_channels]` passed through a Linear.
- `ConvStemAdapter` (the "conv" model): a 7x7 stride-2 convolution (no bias),
  batch normalisation, ReLU and a 3x3 stride-2 max pool (4x fewer positions
  per axis), then Fourier features of the pooled grid concatenated.

The conv stem's batch normalisation uses fixed statistics (`mean`, `var`
parameters, the checkpoint's running averages; the training loop keeps no
Haiku state): no gradient reaches them and weight decay skips them, so
fine-tuning keeps them as imported (as "frozen" batch norm does); its scale
and offset train.
"""

from typing import Optional, Sequence

import haiku as hk
import jax
import jax.numpy as jnp

from perceiver_jax import checks
from perceiver_jax.model import position_encoding as pe

BATCH_NORM_EPS = 1e-5  # torch.nn.BatchNorm2d's default, the checkpoints'.


def _check_images(x: jax.Array, image_shape: tuple[int, int, int]) -> None:
  if x.ndim != 4 or tuple(x.shape[1:]) != image_shape:
    raise ValueError(f'Expected images of shape [batch, '
                     f'{", ".join(map(str, image_shape))}], got {x.shape}.')


class Conv1x1LearnedAdapter(hk.Module):
  """Pixels through a 1x1 convolution, with projected learned positions.

  Maps `[B, H, W, C_raw]` to `[B, H * W, out_channels + projected_channels]`.
  Parameters: `conv1x1/{w,b}` (`[C_raw, out_channels]`: a 1x1 convolution is
  a Linear per pixel), `positions/pos_embs` `[H * W, position_channels]`,
  `position_projection/{w,b}`.
  """

  def __init__(self,
               image_shape: Sequence[int],
               *,
               out_channels: int = 256,
               position_channels: int = 256,
               projected_channels: int = 256,
               name: Optional[str] = 'conv1x1_learned_adapter'):
    """Builds the adapter.

    Args:
      image_shape: `(H, W, C_raw)`.
      out_channels: the convolution's output channels.
      position_channels: width of the trainable position embeddings.
      projected_channels: their width after the Linear.
      name: module name.
    """
    super().__init__(name=name)
    self._image_shape = _image_shape(image_shape)
    self._out_channels = checks.positive_int(out_channels, 'out_channels')
    self._position_channels = checks.positive_int(position_channels,
                                        'position_channels')
    self._projected_channels = checks.positive_int(projected_channels,
                                         'projected_channels')

  @property
  def num_channels(self) -> int:
    """C of the byte array."""
    return self._out_channels + self._projected_channels

  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps images `[B, H, W, C_raw]` to the byte array `[B, M, C]`."""
    _check_images(x, self._image_shape)
    batch_size, height, width, raw_channels = x.shape
    pixels = x.reshape(batch_size, height * width, raw_channels)
    content = hk.Linear(self._out_channels, name='conv1x1')(pixels)
    positions = pe.LearnedPositions(
        height * width, self._position_channels, init_scale=0.02,
        name='positions')(batch_size).astype(x.dtype)
    positions = hk.Linear(self._projected_channels,
                          name='position_projection')(positions)
    return jnp.concatenate([content, positions], axis=-1)  # [B, M, C]


def conv_stem_grid(height: int, width: int) -> tuple[int, int]:
  """The grid after `ConvStemAdapter`'s stem for `height x width` images:
  the stride-2 7x7 convolution (3 pixels of zero padding on every side),
  then the stride-2 3x3 max pool without padding."""
  def one(n):
    conv = (n + 2 * 3 - 7) // 2 + 1
    return (conv - 3) // 2 + 1
  return one(height), one(width)


class ConvStemAdapter(hk.Module):
  """Conv (7x7, stride 2) + batch norm + ReLU + max pool, then Fourier
  features of the pooled grid.

  Maps `[B, H, W, C_raw]` to `[B, h * w, out_channels + 2 * (2K + 1)]` with
  `(h, w) = conv_stem_grid(H, W)`. Parameters: `conv/w` `[7, 7, C_raw,
  out_channels]`, `batch_norm/{scale,offset,mean,var}` `[out_channels]`.
  """

  def __init__(self,
               image_shape: Sequence[int],
               *,
               out_channels: int = 64,
               num_bands: int = 64,
               max_resolution: Optional[Sequence[float]] = None,
               name: Optional[str] = 'conv_stem_adapter'):
    """Builds the adapter.

    Args:
      image_shape: `(H, W, C_raw)`, at least 5 x 5 pixels.
      out_channels: the convolution's output channels.
      num_bands: K, Fourier bands per axis.
      max_resolution: mu per axis (default: the pooled grid).
      name: module name.
    """
    super().__init__(name=name)
    self._image_shape = _image_shape(image_shape)
    self._grid = conv_stem_grid(*self._image_shape[:2])
    if min(self._grid) < 1:
      raise ValueError(f'images of {self._image_shape[:2]} pixels are too '
                       'small for the conv stem (at least 5 x 5).')
    self._out_channels = checks.positive_int(out_channels, 'out_channels')
    self._fourier = pe.fourier_grid_features(self._grid, num_bands,
                                             max_resolution)

  @property
  def grid(self) -> tuple[int, int]:
    """`(h, w)` of the pooled grid."""
    return self._grid

  @property
  def num_channels(self) -> int:
    """C of the byte array."""
    return self._out_channels + self._fourier.shape[-1]

  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps images `[B, H, W, C_raw]` to the byte array `[B, M, C]`."""
    _check_images(x, self._image_shape)
    features = hk.Conv2D(
        self._out_channels, kernel_shape=7, stride=2,
        padding=((3, 3), (3, 3)), with_bias=False, name='conv')(x)
    with hk.experimental.name_scope('batch_norm'):
      shape = [self._out_channels]
      # Fixed statistics: no gradient (a step could make `var` negative),
      # and no weight decay (`optim.weight_decay_mask`).
      mean = jax.lax.stop_gradient(
          hk.get_parameter('mean', shape, init=jnp.zeros))
      var = jax.lax.stop_gradient(
          hk.get_parameter('var', shape, init=jnp.ones))
      scale = hk.get_parameter('scale', shape, init=jnp.ones)
      offset = hk.get_parameter('offset', shape, init=jnp.zeros)
    features = ((features - mean) * jax.lax.rsqrt(var + BATCH_NORM_EPS) *
                scale + offset)
    features = jax.nn.relu(features)
    features = hk.max_pool(features, window_shape=(1, 3, 3, 1),
                           strides=(1, 2, 2, 1), padding='VALID')
    batch_size = x.shape[0]
    content = features.reshape(batch_size, -1, self._out_channels)
    positions = jnp.broadcast_to(jnp.asarray(self._fourier, x.dtype),
                                 (batch_size, *self._fourier.shape))
    return jnp.concatenate([content, positions], axis=-1)  # [B, M, C]


def _image_shape(shape: Sequence[int]) -> tuple[int, int, int]:
  shape = tuple(shape)
  if len(shape) != 3:
    raise ValueError(f'image_shape must be (height, width, channels), got '
                     f'{shape!r}.')
  return tuple(checks.positive_int(n, 'image_shape entries') for n in shape)
