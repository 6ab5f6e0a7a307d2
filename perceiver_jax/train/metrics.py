"""Mean average precision over classes (numpy): each class's AP ranks
the EXAMPLES by that class's score (not per example over classes).
"""

from typing import Any, Optional

import numpy as np


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
  """One class's AP over examples, `sum_n (R_n - R_{n-1}) P_n` over
  distinct thresholds (scikit-learn's definition, ties enter together).
  """
  order = np.argsort(-scores, kind='stable')
  scores, labels = scores[order], labels[order].astype(np.float64)
  # Last index of each run of equal scores: one threshold per distinct score.
  ends = np.flatnonzero(np.diff(scores) != 0)
  ends = np.append(ends, scores.size - 1)
  true_positives = np.cumsum(labels)[ends]
  predicted_positives = ends + 1.0
  precision = true_positives / predicted_positives
  recall = true_positives / true_positives[-1]
  recall_steps = np.diff(recall, prepend=0.0)
  return float(np.sum(recall_steps * precision))


def mean_average_precision(scores: np.ndarray, labels: np.ndarray,
                           mask: Optional[np.ndarray] = None
                           ) -> dict[str, Any]:
  """Mean AP over the classes with a positive, for finite `scores [N, K]`,
  multi-hot `labels [N, K]` and an optional `mask [N]` (0: ignored row).

  Returns 'map' (NaN without any positive), 'average_precision' `[K]` (NaN
  for a class without positives), 'num_classes_evaluated',
  'num_classes_without_positives' and 'classes_without_positives'.
  """
  scores = np.asarray(scores, np.float64)
  labels = np.asarray(labels)
  if scores.ndim != 2 or scores.shape != labels.shape:
    raise ValueError(f'scores and labels must both be [num_examples, '
                     f'num_classes], got {scores.shape} and {labels.shape}.')
  if not np.all(np.isfinite(scores)):
    raise ValueError('scores must be finite; got NaN or infinity.')
  if not np.all((labels == 0) | (labels == 1)):
    raise ValueError(f'labels must be 0 or 1, got values '
                     f'{np.unique(labels)[:10]}.')
  if mask is not None:
    mask = np.asarray(mask)
    if mask.shape != scores.shape[:1]:
      raise ValueError(f'mask must have shape {scores.shape[:1]}, got '
                       f'{mask.shape}.')
    keep = mask != 0
    scores, labels = scores[keep], labels[keep]
  num_classes = scores.shape[1]
  per_class = np.full(num_classes, np.nan)
  has_positive = labels.sum(axis=0) > 0
  for j in np.flatnonzero(has_positive):
    per_class[j] = average_precision(scores[:, j], labels[:, j])
  without = np.flatnonzero(~has_positive)
  evaluated = int(has_positive.sum())
  return {
      'map': float(np.mean(per_class[has_positive])) if evaluated else
             float('nan'),
      'average_precision': per_class,
      'num_classes_evaluated': evaluated,
      'num_classes_without_positives': int(without.size),
      'classes_without_positives': without.tolist(),
  }
