"""A fake windowed multi-label dataset with known scores, for evaluator tests.

Clip `c` has `WINDOWS` windows whose 'logits' entry is the fake model's
output for that window; its labels are multi-hot over `NUM_CLASSES`, and
class `EMPTY_CLASS` has no positive clip. Host `p` of `P` owns the clips
`c` with `c % P == p` (so `clip_index = c` is unique over hosts), like the
AudioSet loader's `local_clip * P + p`.
"""

from typing import Iterator, Sequence

import numpy as np
from sklearn import metrics as sk_metrics

NUM_CLASSES = 5
WINDOWS = 3
EMPTY_CLASS = 3


def clip_logits_and_labels(num_clips: int, seed: int = 0
                           ) -> tuple[np.ndarray, np.ndarray]:
  """Window logits `[clips, WINDOWS, K]` and clip labels `[clips, K]`."""
  rng = np.random.default_rng(seed)
  # Wide logits: averaging probabilities and averaging logits then rank
  # clips differently, so the test can tell which one the evaluator does.
  logits = rng.normal(0.0, 4.0, (num_clips, WINDOWS, NUM_CLASSES))
  labels = (rng.random((num_clips, NUM_CLASSES)) < 0.4).astype(np.float32)
  labels[:, EMPTY_CLASS] = 0.0
  for k in range(NUM_CLASSES):
    if k != EMPTY_CLASS:
      labels[k % num_clips, k] = 1.0  # Every other class has a positive.
  return logits.astype(np.float32), labels


def apply_fn(params, rng, batch, is_training):
  """The fake model: the window's stored logits."""
  del params, rng, is_training
  return batch['logits']


class WindowData:
  """The data API (`load`, `num_examples`) over the fake clips."""

  def __init__(self, num_clips: int, *, process_index: int = 0,
               process_count: int = 1, seed: int = 0):
    self.num_clips = num_clips
    self.logits, self.labels = clip_logits_and_labels(num_clips, seed)
    self._process_index = process_index
    self._process_count = process_count

  def num_examples(self, split: str, config) -> int:
    del split, config
    return self.num_clips

  def load(self, split: str, *, is_training: bool, batch_dims: Sequence[int],
           config, seed: int = 0, start_step: int = 0
           ) -> Iterator[dict[str, np.ndarray]]:
    del split, is_training, config, seed, start_step
    clips = np.arange(self._process_index, self.num_clips,
                      self._process_count)
    rows = np.repeat(clips, WINDOWS)  # A clip's windows are consecutive.
    windows = np.tile(np.arange(WINDOWS), clips.size)
    values = {
        'logits': self.logits[rows, windows],
        'label': self.labels[rows],
        'clip_index': rows.astype(np.int32),
    }
    batch_size = int(np.prod(batch_dims))
    for first in range(0, rows.size, batch_size):
      real = min(batch_size, rows.size - first)
      batch = {}
      for key, array in values.items():
        fill = -1 if key == 'clip_index' else 0
        padded = np.full((batch_size, *array.shape[1:]), fill, array.dtype)
        padded[:real] = array[first:first + real]
        batch[key] = padded.reshape(*batch_dims, *array.shape[1:])
      mask = np.zeros(batch_size, np.float32)
      mask[:real] = 1.0
      batch['mask'] = mask.reshape(tuple(batch_dims))
      yield batch


def expected_metrics(logits: np.ndarray, labels: np.ndarray) -> dict:
  """mAP (scikit-learn, probabilities averaged per clip) and the loss."""
  probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
  scores = probs.mean(axis=1)  # [clips, K]
  has_positive = labels.sum(axis=0) > 0
  aps = [sk_metrics.average_precision_score(labels[:, k], scores[:, k])
         for k in np.flatnonzero(has_positive)]
  # Sigmoid cross-entropy per window, summed over classes, averaged over
  # windows: -y log p - (1 - y) log(1 - p).
  y = labels[:, None, :]
  xent = -(y * np.log(probs) + (1 - y) * np.log1p(-probs))
  return {
      'map': float(np.mean(aps)),
      'loss': float(xent.sum(axis=-1).mean()),
      'num_classes_without_positives': int((~has_positive).sum()),
      'logit_average_map': float(np.mean([
          sk_metrics.average_precision_score(
              labels[:, k], logits.mean(axis=1)[:, k])
          for k in np.flatnonzero(has_positive)])),
  }
