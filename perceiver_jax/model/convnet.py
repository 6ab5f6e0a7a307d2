"""A small convolutional baseline for the miniature ablations.

It relies on the pixels' neighbourhoods, so a fixed pixel permutation hurts
it while the Perceiver does not care (the paper's Table 2 at small scale,
docs/sweeps_and_results.md): 3x3 convolutions with ReLU, 2x2 max pools
while both sides are even and at least 4, the mean over positions and a
Linear. No normalisation, so no state.
"""

from typing import Optional, Sequence

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from perceiver_jax import checks


class ConvNet(hk.Module):
  """Maps images `[B, H, W, C]` to logits `[B, num_classes]`; a
  `permutation` `[H * W]` reorders the pixels first."""

  def __init__(self, num_classes: int, *,
               channels: Sequence[int] = (32, 64, 128),
               permutation: Optional[np.ndarray] = None,
               name: Optional[str] = 'convnet'):
    super().__init__(name=name)
    self._num_classes = checks.positive_int(num_classes, 'num_classes')
    channels = tuple(channels)
    if not channels or any(
        isinstance(c, bool) or not isinstance(c, int) or c < 1
        for c in channels):
      raise ValueError('config.model.convnet.channels must be a non-empty '
                       f'sequence of positive integers, got {channels!r}.')
    self._channels = channels
    self._permutation = (None if permutation is None else
                         np.asarray(permutation))

  def __call__(self, images: jax.Array) -> jax.Array:
    if images.ndim != 4:
      raise ValueError(f'ConvNet images must have rank 4 [batch, height, '
                       f'width, channels], got shape {images.shape}.')
    batch, height, width, num_channels = images.shape
    x = images
    if self._permutation is not None:
      if self._permutation.shape != (height * width,):
        raise ValueError(
            f'permutation has shape {self._permutation.shape}; expected '
            f'({height * width},) for images of shape {images.shape}.')
      x = x.reshape(batch, height * width, num_channels)[:, self._permutation]
      x = x.reshape(batch, height, width, num_channels)
    for i, out_channels in enumerate(self._channels):
      x = hk.Conv2D(out_channels, kernel_shape=3, padding='SAME',
                    name=f'conv_{i}')(x)
      x = jax.nn.relu(x)
      h, w = x.shape[1:3]
      if i + 1 < len(self._channels) and h % 2 == 0 and w % 2 == 0 and min(
          h, w) >= 4:
        x = hk.max_pool(x, window_shape=(1, 2, 2, 1), strides=(1, 2, 2, 1),
                        padding='VALID')
    pooled = jnp.mean(x, axis=(1, 2))  # [B, channels[-1]]
    return hk.Linear(self._num_classes, name='logits')(pooled)
