"""Evaluators by `config.evaluator.type`: `run(params) -> {name: value}`
with replicated `params`. Every example counts exactly once: the last
partial batch is padded and masked.
"""

import math
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np

from perceiver_jax import checks
from perceiver_jax import progress
from perceiver_jax.train import losses
from perceiver_jax.train import metrics as metrics_lib
from perceiver_jax.train import parallel

Batch = Mapping[str, np.ndarray]
ApplyFn = Callable[..., jax.Array]  # apply(params, rng, batch, is_training=)


def _padded_to(batches: Iterator[Batch], num_batches: int) -> Iterator[Batch]:
  """`num_batches` batches: the data's, then all-masked ones, so that every
  host runs as many collective steps.
  """
  last, count = None, 0
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


def examples_per_host(num_examples: int,
                      max_examples: Optional[int] = None) -> int:
  """The most examples one host evaluates (its share, rounded up)."""
  if max_examples is not None:
    num_examples = min(num_examples, max_examples)
  return math.ceil(num_examples / jax.process_count())


def num_batches(num_examples: int, *, max_examples: Optional[int],
                batch_size: int, rows_per_example: int = 1) -> int:
  """Evaluation batches every host runs (the longest host's count);
  `rows_per_example` is e.g. AudioSet's 16 windows per clip.
  """
  per_host = examples_per_host(num_examples, max_examples)
  return math.ceil(per_host * rows_per_example / batch_size)


_progress = {'shown': False}


def show_progress(enabled: bool = True) -> None:
  """Makes evaluations report their batches (off in training logs)."""
  _progress['shown'] = enabled


def _top_k(num_classes: int) -> int:
  """The k of the second accuracy: 5, or every class when there are fewer."""
  return min(5, num_classes)


class _SplitEvaluator:
  """What every evaluator shares: the split, its batches cut to
  `max_examples`, and the subclass's `_eval_step(params, batch)` run on
  every device."""

  _windows = 1  # Rows per example (clip).

  def __init__(self, *, config: ml_collections.ConfigDict, apply_fn: ApplyFn,
               data_module: Any, batch_dims: Sequence[int],
               split: Optional[str] = None):
    self._config = config
    self._apply = apply_fn
    self._data = data_module
    self._batch_dims = tuple(batch_dims)
    self._num_classes = config.data.num_classes
    self._max_examples = config.evaluator.get('max_examples')
    self.split = split or config.evaluator.split
    self._pmapped_step = jax.pmap(self._eval_step, axis_name=parallel.AXIS)

  def _num_examples(self) -> int:
    return self._data.num_examples(self.split, self._config.data)

  def _step(self, params: Any, batch: Batch) -> Any:
    """`_eval_step` on the devices; `clip_index` stays on the host."""
    return self._pmapped_step(params, parallel.shard(
        {k: v for k, v in batch.items() if k != 'clip_index'}))

  def _padded_batches(self) -> Iterator[Batch]:
    """`_batches()` padded to the longest host's count; counted on stderr
    when `show_progress` is on (host 0)."""
    total = num_batches(self._num_examples(),
                        max_examples=self._max_examples,
                        batch_size=math.prod(self._batch_dims),
                        rows_per_example=self._windows)
    batches = _padded_to(self._batches(), total)
    if not _progress['shown'] or jax.process_index() != 0:
      return batches
    return progress.track(batches, f'evaluating {self.split}', total=total,
                          unit='batches')

  def _batches(self) -> Iterator[Batch]:
    """The data's batches with `clip_index` [*batch_dims], masked to this
    host's share of `max_examples` clips (a clip is one row by default)."""
    budget = None if self._max_examples is None else math.ceil(
        self._max_examples / jax.process_count())
    accepted: set[int] = set()
    rows_seen = 0
    for batch in self._data.load(self.split, is_training=False,
                                 batch_dims=self._batch_dims,
                                 config=self._config.data):
      batch = dict(batch)
      mask = batch['mask'].reshape(-1) > 0
      if 'clip_index' in batch:
        clips = batch['clip_index'].reshape(-1).astype(np.int64)
      elif self._windows == 1:
        # One row per example: number real rows, uniquely over hosts.
        order = rows_seen + np.cumsum(mask) - 1
        clips = order * jax.process_count() + jax.process_index()
        rows_seen += int(mask.sum())
        batch['clip_index'] = clips.reshape(batch['mask'].shape)
      else:
        raise ValueError(f'windows_per_clip={self._windows} needs '
                         "batch['clip_index'] to group windows into clips.")
      if budget is None:
        yield batch
        continue
      keep = np.zeros_like(mask)
      for i in np.flatnonzero(mask):
        clip = int(clips[i])
        if clip not in accepted and len(accepted) < budget:
          accepted.add(clip)
        keep[i] = clip in accepted
      if not keep.any():
        return
      batch['mask'] = (batch['mask'].reshape(-1) * keep).reshape(
          batch['mask'].shape)
      yield batch
      if (mask & ~keep).any():
        # Windows of a clip are consecutive: every later row is a later
        # clip, outside the budget.
        return


class ClassificationEvaluator(_SplitEvaluator):
  """Top-1 and top-5 accuracy and mean cross-entropy (no label smoothing)."""

  @staticmethod
  def metric_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The keys of `run`'s result for `config`."""
    return ('top1', f'top{_top_k(config.data.num_classes)}', 'loss',
            'num_examples')

  def _eval_step(self, params: Any, batch: Batch) -> dict[str, jax.Array]:
    logits = self._apply(params, None, batch, is_training=False)
    mask = batch['mask']
    labels = batch['label']
    if labels.ndim == logits.ndim:  # Soft labels: score the argmax.
      labels = jnp.argmax(labels, axis=-1)
    loss = losses.per_example_loss(logits, labels, loss_type='softmax_xent')
    # Rank of the true class's logit, ties broken against it.
    true_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
    rank = jnp.sum(logits >= true_logit, axis=-1) - 1
    top_k = _top_k(self._num_classes)
    sums = {
        'top1': jnp.sum(mask * (rank < 1)),
        f'top{top_k}': jnp.sum(mask * (rank < top_k)),
        'loss': jnp.sum(mask * loss),
        'num_examples': jnp.sum(mask),
    }
    return jax.lax.psum(sums, parallel.AXIS)

  def run(self, params: Any) -> dict[str, float]:
    """Evaluates replicated `params` on the split."""
    totals = dict.fromkeys(self.metric_names(self._config), 0.0)
    for batch in self._padded_batches():
      sums = self._step(params, batch)
      for name, value in sums.items():
        # np.asarray first: indexing a device array would dispatch a gather.
        totals[name] += float(np.asarray(value)[0])
    count = totals.pop('num_examples')
    if count == 0:
      raise ValueError(f'The {self.split!r} split has no examples to '
                       'evaluate.')
    return {**{name: total / count for name, total in totals.items()},
            'num_examples': int(round(count))}


def _gather_hosts(tree: Any) -> Any:
  """Stacks every host's copy of `tree` (same shapes): leaves `[hosts, ...]`."""
  if jax.process_count() == 1:
    return jax.tree.map(lambda x: np.asarray(x)[None], tree)
  return multihost_utils.process_allgather(tree, tiled=False)


class MultilabelMapEvaluator(_SplitEvaluator):
  """mAP over classes, each clip (`windows_per_clip` rows sharing
  `batch['clip_index']`) scored by its windows' mean sigmoid probability, so
  that one confident window cannot outvote the rest; `max_examples` counts
  clips. The metrics (`metric_names`; 'loss' per window) agree on all hosts.
  """

  @staticmethod
  def metric_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The keys of `run`'s result."""
    del config
    return ('map', 'loss', 'num_examples', 'num_windows',
            'num_classes_without_positives')

  def __init__(self, **kwargs: Any):
    super().__init__(**kwargs)
    self._windows = checks.positive_int(
        self._config.evaluator.get('windows_per_clip', 1),
        'config.evaluator.windows_per_clip')

  def _eval_step(self, params: Any, batch: Batch) -> tuple[jax.Array, ...]:
    logits = self._apply(params, None, batch, is_training=False)
    loss = losses.per_example_loss(logits, batch['label'],
                                   loss_type='sigmoid_xent')
    return jax.nn.sigmoid(logits.astype(jnp.float32)), loss

  def run(self, params: Any) -> dict[str, Any]:
    """Evaluates replicated `params` on the split."""
    num_classes = self._num_classes
    # Per clip: float64 sums of its windows' probabilities [K], its window
    # count, its labels [K].
    sums: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    clip_labels: dict[int, np.ndarray] = {}
    loss_sum = 0.0
    num_windows = 0
    for batch in self._padded_batches():
      labels = batch['label']
      if labels.shape != (*batch['mask'].shape, num_classes):
        raise ValueError(
            f"batch['label'] must be multi-hot [..., {num_classes}] "
            f"matching batch['mask'] {batch['mask'].shape}, got "
            f'{labels.shape}.')
      # Every host runs every batch (the same number of steps), even one
      # that is all padding.
      probs, loss = self._step(params, batch)
      real = batch['mask'].reshape(-1) > 0
      probs = np.asarray(probs).reshape(-1, num_classes)[real]
      labels = labels.reshape(-1, num_classes)[real]
      loss_sum += float(np.asarray(loss).reshape(-1)[real].sum(
          dtype=np.float64))
      num_windows += int(real.sum())
      unique, inverse = np.unique(batch['clip_index'].reshape(-1)[real],
                                  return_inverse=True)
      for k, clip in enumerate(unique.tolist()):
        rows = inverse == k
        first = clip_labels.setdefault(clip, labels[rows][0].copy())
        if not np.all(labels[rows] == first):
          raise ValueError(f'The windows of clip {clip} have different '
                           'labels; a clip has one label set.')
        sums[clip] = sums.get(clip, 0.0) + probs[rows].sum(
            axis=0, dtype=np.float64)
        counts[clip] = counts.get(clip, 0) + int(rows.sum())

    # Every host sends `bound` rows; rows past its clips have clip -1.
    bound = examples_per_host(self._num_examples(), self._max_examples)
    if len(counts) > bound:
      raise ValueError(f'This host evaluated {len(counts)} clips, more than '
                       f'its share of at most {bound}.')
    local = dict(clips=np.full([bound], -1, np.int32),
                 means=np.zeros([bound, num_classes], np.float32),
                 labels=np.zeros([bound, num_classes], np.int32),
                 counts=np.zeros([bound], np.int32))
    for row, clip in enumerate(sorted(counts)):
      local['clips'][row] = clip
      local['counts'][row] = counts[clip]
      local['means'][row] = sums[clip] / counts[clip]
      local['labels'][row] = clip_labels[clip]
    gathered = _gather_hosts(dict(local, loss_sum=np.float32(loss_sum),
                                  num_windows=np.int32(num_windows)))
    flat = lambda x: np.asarray(x).reshape(-1, *np.shape(x)[2:])
    real = flat(gathered['clips']) >= 0
    clips, counts, means, labels = (flat(gathered[k])[real] for k in (
        'clips', 'counts', 'means', 'labels'))
    if clips.size == 0:
      raise ValueError(f'The {self.split!r} split has no examples to '
                       'evaluate.')
    if np.unique(clips).size != clips.size:
      raise ValueError('Two hosts evaluated the same clip_index; clip '
                       'indices must be unique over hosts.')
    wrong = counts != self._windows
    if wrong.any():
      raise ValueError(
          f'Expected {self._windows} windows per clip '
          f'(config.evaluator.windows_per_clip), but clips '
          f'{clips[wrong][:10].tolist()} have '
          f'{counts[wrong][:10].tolist()} windows.')
    total_windows = int(np.sum(gathered['num_windows']))
    result = metrics_lib.mean_average_precision(means, labels)
    return {
        'map': result['map'],
        'loss': float(np.sum(gathered['loss_sum'], dtype=np.float64) /
                      total_windows),
        'num_examples': int(clips.size),
        'num_windows': total_windows,
        'num_classes_without_positives': result[
            'num_classes_without_positives'],
    }


EVALUATORS = {
    'classification': ClassificationEvaluator,
    'multilabel_map': MultilabelMapEvaluator,
}


def make_evaluator(config: ml_collections.ConfigDict, **kwargs):
  """The evaluator `config.evaluator.type` names."""
  return EVALUATORS[config.evaluator.type](config=config, **kwargs)
