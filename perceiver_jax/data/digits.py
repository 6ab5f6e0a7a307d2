"""scikit-learn's 1,797 8x8 handwritten digits: the embedded default dataset.

Split into 'train' and 'test' by a seeded stratified shuffle. Batches:
'image' float32 `[*batch_dims, 8, 8, 1]` in [0, 1], 'label' int32, 'mask';
training images move by up to `config.max_shift` pixels per axis.
"""

import functools
from typing import Any, Iterator, Mapping, Sequence

import jax
import numpy as np
from sklearn import datasets as sk_datasets
from sklearn import model_selection

from perceiver_jax.data import in_memory

SPLITS = ('train', 'test')


@functools.lru_cache(maxsize=4)
def _split_arrays(test_fraction: float, split_seed: int
                  ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  digits = sk_datasets.load_digits()
  # Pixel values are counts 0..16 of an underlying 32x32 bitmap.
  images = (digits.images.astype(np.float32) / 16.0)[..., None]
  labels = digits.target.astype(np.int32)
  train_x, test_x, train_y, test_y = model_selection.train_test_split(
      images, labels, test_size=test_fraction, random_state=split_seed,
      stratify=labels)
  return {'train': (train_x, train_y), 'test': (test_x, test_y)}


def _arrays(split: str, config: Mapping[str, Any]):
  if split not in SPLITS:
    raise ValueError(f'Unknown digits split {split!r}; choose one of '
                     f'{list(SPLITS)}.')
  return _split_arrays(float(config['test_fraction']),
                       int(config['split_seed']))[split]


def random_shift(images: np.ndarray, rng: np.random.Generator,
                 max_shift: int) -> np.ndarray:
  """Moves each image `[b, H, W, C]` by its own uniform offset in
  `[-max_shift, max_shift]` per axis, filling with zeros."""
  if max_shift < 0:
    raise ValueError(f'max_shift must be >= 0, got {max_shift}.')
  batch, height, width, _ = images.shape
  offsets = rng.integers(-max_shift, max_shift + 1, size=(2, batch))
  padded = np.pad(images, ((0, 0), (max_shift, max_shift),
                           (max_shift, max_shift), (0, 0)))
  # Output pixel (r, c) of image i reads input pixel (r - dy_i, c - dx_i).
  rows = np.arange(height)[None] + max_shift - offsets[0][:, None]
  cols = np.arange(width)[None] + max_shift - offsets[1][:, None]
  return padded[np.arange(batch)[:, None, None], rows[:, :, None],
                cols[:, None, :]]


def num_examples(split: str, config: Mapping[str, Any]) -> int:
  """Examples in the whole split."""
  return len(_arrays(split, config)[1])


def load(split: str, *, is_training: bool, batch_dims: Sequence[int],
         config: Mapping[str, Any], seed: int = 0,
         start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
  """Batches of the split (the data API; keys and shapes above)."""
  images, labels = _arrays(split, config)
  examples = {'image': images, 'label': labels}
  process_index, process_count = jax.process_index(), jax.process_count()
  if is_training:
    # 1,797 small images: every host holds them all, so the global batches
    # do not depend on how many hosts share them.
    max_shift = int(config.get('max_shift', 0) or 0)

    def augment(batch, rng):
      batch['image'] = random_shift(batch['image'], rng, max_shift)
      return batch

    return in_memory.replicated_train_batches(
        examples, batch_dims=batch_dims, seed=seed, start_step=start_step,
        process_index=process_index, process_count=process_count,
        augment=augment if max_shift else None)
  shard = in_memory.host_shard(len(labels), process_index, process_count)
  return in_memory.shard_batches(
      {k: v[shard] for k, v in examples.items()}, total_examples=len(labels),
      is_training=False, batch_dims=batch_dims, seed=seed,
      start_step=start_step, process_index=process_index,
      process_count=process_count)
