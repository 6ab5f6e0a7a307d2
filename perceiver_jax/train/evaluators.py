"""Evaluators, chosen by `config.evaluator.type`.

Each evaluator is built once per run and has `run(params) -> {name: value}`,
where `params` are replicated over the local devices. Every example of the
split is counted exactly once: the data's last partial batch is padded and
masked, and masked rows add nothing to any sum.
"""

import math
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from perceiver_jax.train import losses
from perceiver_jax.train import parallel

Batch = Mapping[str, np.ndarray]
ApplyFn = Callable[..., jax.Array]  # apply(params, rng, batch, is_training=)


def _padded_to(batches: Iterator[Batch], num_batches: int) -> Iterator[Batch]:
  """Yields `num_batches` batches: the data's, then all-masked copies.

  Every host must run the same number of collective steps; a host whose
  shard is shorter pads with batches that count nothing.
  """
  last = None
  count = 0
  for batch in batches:
    if count == num_batches:
      raise ValueError(f'The evaluation data yielded more than the expected '
                       f'{num_batches} batches.')
    last = batch
    count += 1
    yield batch
  if last is None and count < num_batches:
    raise ValueError('The evaluation data yielded no batch on this host.')
  for _ in range(num_batches - count):
    yield {k: np.zeros_like(v) for k, v in last.items()}


class ClassificationEvaluator:
  """Top-1 and top-5 accuracy and mean cross-entropy (no label smoothing)."""

  def __init__(self, *, config: ml_collections.ConfigDict, apply_fn: ApplyFn,
               data_module: Any, batch_dims: Sequence[int],
               split: Optional[str] = None):
    self._config = config
    self._data = data_module
    self._batch_dims = tuple(batch_dims)
    self.split = split or config.evaluator.split
    num_classes = config.data.num_classes
    self._top_k = min(5, num_classes)

    def eval_step(params, batch):
      logits = apply_fn(params, None, batch, is_training=False)
      mask = batch['mask']
      labels = batch['label']
      if labels.ndim == logits.ndim:  # Soft labels: score the argmax.
        labels = jnp.argmax(labels, axis=-1)
      loss = losses.per_example_loss(logits, labels,
                                     loss_type='softmax_xent')
      # Rank of the true class's logit, ties broken against it.
      true_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
      rank = jnp.sum(logits >= true_logit, axis=-1) - 1
      sums = {
          'correct_top1': jnp.sum(mask * (rank < 1)),
          f'correct_top{self._top_k}': jnp.sum(mask * (rank < self._top_k)),
          'loss_sum': jnp.sum(mask * loss),
          'num_examples': jnp.sum(mask),
      }
      return jax.lax.psum(sums, parallel.AXIS)

    self._eval_step = jax.pmap(eval_step, axis_name=parallel.AXIS)

  def _num_batches(self) -> int:
    examples = self._data.num_examples(self.split, self._config.data)
    max_examples = self._config.evaluator.get('max_examples')
    if max_examples is not None:
      examples = min(examples, max_examples)
    per_host = math.ceil(examples / jax.process_count())
    return math.ceil(per_host / int(np.prod(self._batch_dims)))

  def _batches(self) -> Iterator[Batch]:
    batches = self._data.load(self.split, is_training=False,
                              batch_dims=self._batch_dims,
                              config=self._config.data)
    max_examples = self._config.evaluator.get('max_examples')
    if max_examples is None:
      yield from batches
      return
    # Keep the first examples of this host's share of `max_examples`.
    budget = math.ceil(max_examples / jax.process_count())
    for batch in batches:
      if budget <= 0:
        return
      flat_mask = batch['mask'].reshape(-1)
      keep = np.cumsum(flat_mask) <= budget
      budget -= int(flat_mask.sum())
      batch = dict(batch)
      batch['mask'] = (flat_mask * keep).reshape(batch['mask'].shape)
      yield batch

  def run(self, params: Any) -> dict[str, float]:
    """Evaluates replicated `params` on the split."""
    totals = None
    for batch in _padded_to(self._batches(), self._num_batches()):
      sums = self._eval_step(params, parallel.shard(batch))
      sums = jax.tree.map(lambda x: float(x[0]), sums)
      totals = sums if totals is None else jax.tree.map(
          lambda a, b: a + b, totals, sums)
    count = totals['num_examples']
    if count == 0:
      raise ValueError(f'The {self.split!r} split has no examples to '
                       'evaluate.')
    return {
        'top1': float(totals['correct_top1'] / count),
        f'top{self._top_k}': float(
            totals[f'correct_top{self._top_k}'] / count),
        'loss': float(totals['loss_sum'] / count),
        'num_examples': int(round(count)),
    }


EVALUATORS = {
    'classification': ClassificationEvaluator,
}


def make_evaluator(config: ml_collections.ConfigDict, **kwargs):
  """The evaluator `config.evaluator.type` names."""
  kind = config.evaluator.type
  if kind not in EVALUATORS:
    raise ValueError(f'config.evaluator.type must be one of '
                     f'{sorted(EVALUATORS)}, got {kind!r}.')
  return EVALUATORS[kind](config=config, **kwargs)
