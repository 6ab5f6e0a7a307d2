"""scikit-learn's handwritten digits: the embedded default dataset.

1,797 real 8x8 grey images of the digits 0-9 ship inside scikit-learn, so
this dataset needs no download. They are split into 'train' and 'test' by a
stratified shuffle with a fixed seed (`config.split_seed`,
`config.test_fraction`).

Batches: 'image' float32 `[*batch_dims, 8, 8, 1]` in [0, 1], 'label' int32
`[*batch_dims]`, 'mask' float32 `[*batch_dims]`.
"""

import functools
from typing import Any, Iterator, Mapping, Sequence

import jax
import numpy as np
from sklearn import datasets as sk_datasets
from sklearn import model_selection

from perceiver_jax.data import numpy_pipeline

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


def num_examples(split: str, config: Mapping[str, Any]) -> int:
  """Examples in the whole split."""
  return len(_arrays(split, config)[1])


def load(split: str, *, is_training: bool, batch_dims: Sequence[int],
         config: Mapping[str, Any], seed: int = 0,
         start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
  """Batches of the split (see the module docstring for keys and shapes).

  Args:
    split: 'train' or 'test'.
    is_training: an endless shuffled stream (each host its own slice of
      every global batch) if True; else one pass over this host's shard,
      the last batch padded and masked.
    batch_dims: leading dims of every array; their product is this host's
      batch.
    config: `config.data`.
    seed: seeds the shuffle.
    start_step: the first training step to produce (resumption).
  """
  images, labels = _arrays(split, config)
  examples = {'image': images, 'label': labels}
  if is_training:
    return numpy_pipeline.training_batches(
        examples, batch_dims=batch_dims, seed=seed, start_step=start_step,
        process_index=jax.process_index(),
        process_count=jax.process_count())
  return numpy_pipeline.evaluation_batches(
      examples, batch_dims=batch_dims, process_index=jax.process_index(),
      process_count=jax.process_count())
