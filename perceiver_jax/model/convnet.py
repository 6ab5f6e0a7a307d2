"""A small convolutional baseline for image classification.

Used by the miniature ablations (docs/sweeps_and_results.md) to show the point
of the paper's Table 2 at small scale: a ConvNet relies on the pixels'
spatial neighbourhoods, so a fixed permutation of the pixel grid hurts it,
while a Perceiver whose position features travel with the pixels does not
care.

Architecture: `len(channels)` 3x3 convolutions ('SAME' padding, ReLU), a 2x2
max-pool after each convolution except the last while both spatial sides
are even and at least 4, then the mean over positions and a Linear to the
logits. No normalisation, so the model has no state.
"""

from typing import Optional, Sequence

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np


class ConvNet(hk.Module):
  """Maps images `[B, H, W, C]` to logits `[B, num_classes]`."""

  def __init__(self, num_classes: int, *,
               channels: Sequence[int] = (32, 64, 128),
               permutation: Optional[np.ndarray] = None,
               name: Optional[str] = 'convnet'):
    """Builds the ConvNet.

    Args:
      num_classes: number of logits.
      channels: output channels of each 3x3 convolution (at least one).
      permutation: optional `[H * W]` indices; the image's pixels (in
        row-major order) are reordered by it before the first convolution,
        so the network sees a scrambled image (the same fixed permutation as
        the Perceiver's `permutation_seed`).
      name: module name.
    """
    super().__init__(name=name)
    if (isinstance(num_classes, bool) or not isinstance(num_classes, int) or
        num_classes < 1):
      raise ValueError(
          f'num_classes must be a positive integer, got {num_classes!r}.')
    channels = tuple(channels)
    if not channels or any(
        isinstance(c, bool) or not isinstance(c, int) or c < 1
        for c in channels):
      raise ValueError('config.model.convnet.channels must be a non-empty '
                       f'sequence of positive integers, got {channels!r}.')
    self._num_classes = num_classes
    self._channels = channels
    self._permutation = (None if permutation is None else
                         np.asarray(permutation))

  def __call__(self, images: jax.Array) -> jax.Array:
    """Logits `[B, num_classes]` of images `[B, H, W, C]`."""
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
