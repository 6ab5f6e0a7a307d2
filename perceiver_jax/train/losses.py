"""Losses, averaged over the real (unmasked) examples of a batch."""

from typing import Mapping

import jax
import jax.numpy as jnp
import optax

LOSSES = ('softmax_xent', 'sigmoid_xent')


def targets(labels: jax.Array, num_classes: int,
            label_smoothing: float = 0.0) -> jax.Array:
  """Class distributions `[B, K]` from int labels `[B]` or soft `[B, K]`."""
  if labels.ndim == 1:
    labels = jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    labels = optax.smooth_labels(labels, label_smoothing)
  return labels


def per_example_loss(logits: jax.Array, labels: jax.Array, *, loss_type: str,
                     label_smoothing: float = 0.0) -> jax.Array:
  """Loss `[B]` for logits `[B, K]` and labels: int `[B]` or distributions
  `[B, K]` (softmax_xent, with `label_smoothing`), multi-hot (sigmoid_xent,
  summed over classes).
  """
  logits = logits.astype(jnp.float32)
  if loss_type == 'softmax_xent':
    dist = targets(labels, logits.shape[-1], label_smoothing)
    return optax.softmax_cross_entropy(logits, dist)
  if loss_type == 'sigmoid_xent':
    return optax.sigmoid_binary_cross_entropy(
        logits, labels.astype(jnp.float32)).sum(axis=-1)
  raise ValueError(f'config.loss.type must be one of {LOSSES}, got '
                   f'{loss_type!r}.')


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of `values [B]` over entries where `mask [B]` is nonzero."""
  mask = mask.astype(values.dtype)
  return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def batch_loss(logits: jax.Array, batch: Mapping[str, jax.Array], *,
               loss_type: str, label_smoothing: float = 0.0) -> jax.Array:
  """The mean loss over the batch's real examples."""
  losses = per_example_loss(logits, batch['label'], loss_type=loss_type,
                            label_smoothing=label_smoothing)
  return masked_mean(losses, batch['mask'])
