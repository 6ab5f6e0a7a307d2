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
  """What every evaluator shares: its split, the data and the batch count."""

  def __init__(self, *, config: ml_collections.ConfigDict, data_module: Any,
               batch_dims: Sequence[int], split: Optional[str]):
    self._config = config
    self._data = data_module
    self._batch_dims = tuple(batch_dims)
    self.split = split or config.evaluator.split

  def _num_examples(self) -> int:
    """Examples in the split (all hosts)."""
    return self._data.num_examples(self.split, self._config.data)

  def _padded_batches(self, rows_per_example: int = 1) -> Iterator[Batch]:
    """`_batches()` padded to the longest host's count; counted on stderr
    when `show_progress` is on (host 0)."""
    total = num_batches(
        self._num_examples(),
        max_examples=self._config.evaluator.get('max_examples'),
        batch_size=int(np.prod(self._batch_dims)),
        rows_per_example=rows_per_example)
    batches = _padded_to(self._batches(), total)
    if not _progress['shown'] or jax.process_index() != 0:
      return batches
    return progress.track(batches, f'evaluating {self.split}', total=total,
                          unit='batches')

  def _load(self) -> Iterator[Batch]:
    return self._data.load(self.split, is_training=False,
                           batch_dims=self._batch_dims,
                           config=self._config.data)

  def _host_budget(self) -> Optional[int]:
    """This host's share of `config.evaluator.max_examples` (None: all)."""
    max_examples = self._config.evaluator.get('max_examples')
    return None if max_examples is None else math.ceil(
        max_examples / jax.process_count())


class ClassificationEvaluator(_SplitEvaluator):
  """Top-1 and top-5 accuracy and mean cross-entropy (no label smoothing)."""

  @staticmethod
  def metric_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The keys of `run`'s result for `config`."""
    return ('top1', f'top{_top_k(config.data.num_classes)}', 'loss',
            'num_examples')

  def __init__(self, *, config: ml_collections.ConfigDict, apply_fn: ApplyFn,
               data_module: Any, batch_dims: Sequence[int],
               split: Optional[str] = None):
    super().__init__(config=config, data_module=data_module,
                     batch_dims=batch_dims, split=split)
    self._top_k = _top_k(config.data.num_classes)

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

  def _batches(self) -> Iterator[Batch]:
    batches = self._load()
    budget = self._host_budget()
    if budget is None:
      yield from batches
      return
    # Keep the first examples of this host's share of `max_examples`.
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
    for batch in self._padded_batches():
      sums = self._eval_step(params, parallel.shard(batch))
      # np.asarray first: indexing a device array would dispatch a gather.
      sums = jax.tree.map(lambda x: float(np.asarray(x)[0]), sums)
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


def _gather_hosts(tree: Any) -> Any:
  """Stacks every host's copy of `tree` (same shapes): leaves `[hosts, ...]`."""
  if jax.process_count() == 1:
    return jax.tree.map(lambda x: np.asarray(x)[None], tree)
  return multihost_utils.process_allgather(tree, tiled=False)


class _ClipScores:
  """Sums of per-window probabilities per clip, on the host."""

  def __init__(self):
    self.sums: dict[int, np.ndarray] = {}  # clip -> float64 [K]
    self.counts: dict[int, int] = {}
    self.labels: dict[int, np.ndarray] = {}  # clip -> [K]

  def add(self, clips: np.ndarray, probs: np.ndarray,
          labels: np.ndarray) -> None:
    """Adds windows: `clips [n]`, `probs [n, K]`, `labels [n, K]`."""
    unique, inverse = np.unique(clips, return_inverse=True)
    for k, clip in enumerate(unique.tolist()):
      rows = inverse == k
      clip_labels = labels[rows]
      first = self.labels.setdefault(clip, clip_labels[0].copy())
      if not np.all(clip_labels == first):
        raise ValueError(f'The windows of clip {clip} have different '
                         'labels; a clip has one label set.')
      self.sums[clip] = self.sums.get(clip, 0.0) + probs[rows].sum(
          axis=0, dtype=np.float64)
      self.counts[clip] = self.counts.get(clip, 0) + int(rows.sum())


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

  def __init__(self, *, config: ml_collections.ConfigDict, apply_fn: ApplyFn,
               data_module: Any, batch_dims: Sequence[int],
               split: Optional[str] = None):
    super().__init__(config=config, data_module=data_module,
                     batch_dims=batch_dims, split=split)
    self._num_classes = config.data.num_classes
    self._windows = checks.positive_int(
        config.evaluator.get('windows_per_clip', 1),
        'config.evaluator.windows_per_clip')

    def eval_step(params, batch):
      logits = apply_fn(params, None, batch, is_training=False)
      loss = losses.per_example_loss(logits, batch['label'],
                                     loss_type='sigmoid_xent')
      return jax.nn.sigmoid(logits.astype(jnp.float32)), loss

    self._eval_step = jax.pmap(eval_step, axis_name=parallel.AXIS)

  def _batches(self) -> Iterator[Batch]:
    """The data's batches, with `clip_index` and the clip budget applied."""
    batches = self._load()
    budget = self._host_budget()
    accepted: set[int] = set()
    rows_seen = 0
    for batch in batches:
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

  def run(self, params: Any) -> dict[str, Any]:
    """Evaluates replicated `params` on the split."""
    scores = _ClipScores()
    loss_sum = 0.0
    num_windows = 0
    for batch in self._padded_batches(rows_per_example=self._windows):
      labels = batch['label']
      if labels.shape != (*batch['mask'].shape, self._num_classes):
        raise ValueError(
            f"batch['label'] must be multi-hot [..., {self._num_classes}] "
            f"matching batch['mask'] {batch['mask'].shape}, got "
            f'{labels.shape}.')
      # Every host runs every batch (the same number of steps), even one
      # that is all padding.
      probs, loss = self._eval_step(
          params, parallel.shard({k: v for k, v in batch.items()
                                  if k != 'clip_index'}))
      real = batch['mask'].reshape(-1) > 0
      if not real.any():
        continue
      probs = np.asarray(probs).reshape(-1, self._num_classes)[real]
      loss = np.asarray(loss).reshape(-1)[real]
      scores.add(batch['clip_index'].reshape(-1)[real],
                 probs, labels.reshape(-1, self._num_classes)[real])
      loss_sum += float(loss.astype(np.float64).sum())
      num_windows += int(real.sum())
    return self._metrics(scores, loss_sum, num_windows)

  def _metrics(self, scores: _ClipScores, loss_sum: float,
               num_windows: int) -> dict[str, Any]:
    """Gathers every host's clips and computes the metrics."""
    bound = examples_per_host(self._num_examples(),
                              self._config.evaluator.get('max_examples'))
    local = len(scores.counts)
    if local > bound:
      raise ValueError(f'This host evaluated {local} clips, more than its '
                       f'share of at most {bound}.')
    clips = np.full([bound], -1, np.int32)
    means = np.zeros([bound, self._num_classes], np.float32)
    labels = np.zeros([bound, self._num_classes], np.int32)
    counts = np.zeros([bound], np.int32)
    for row, clip in enumerate(sorted(scores.counts)):
      clips[row] = clip
      counts[row] = scores.counts[clip]
      means[row] = scores.sums[clip] / scores.counts[clip]
      labels[row] = scores.labels[clip]
    gathered = _gather_hosts(dict(
        clips=clips, means=means, labels=labels, counts=counts,
        loss_sum=np.float32(loss_sum), num_windows=np.int32(num_windows)))
    flat = lambda x: np.asarray(x).reshape(-1, *np.shape(x)[2:])
    real = flat(gathered['clips']) >= 0  # Rows past a host's clips are -1.
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
