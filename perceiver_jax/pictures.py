"""Pictures of runs: cross-attention maps over the input grid, and curves.

Attention weights come without touching the model: a Haiku interceptor
records each cross-attend's `query` and `key` Linear outputs and the softmax
is recomputed here as `attention.scaled_dot_product_attention` forms it. A
shared cross-attend's queries pair with the newest keys of its weight set.
"""

import math
import os
import re
from typing import Any, Mapping, Optional, Sequence

import haiku as hk
import jax
import matplotlib
import numpy as np

matplotlib.use('Agg')  # Files only, no display.
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from perceiver_jax import checks  # pylint: disable=g-bad-import-order
from perceiver_jax.train import run_config  # pylint: disable=g-bad-import-order
from perceiver_jax.train import writers  # pylint: disable=g-bad-import-order

_CROSS_LINEAR = re.compile(r'(?:^|/)(cross_attend_\d+)/attention/(query|key)$')
CELL_INCHES = 1.6  # Each panel of an attention-map figure.
DPI = 100


def cross_attention_weights(forward: hk.Transformed, params: hk.Params,
                            batch: Mapping[str, Any], *,
                            num_heads: int = 1) -> list[np.ndarray]:
  """Each cross-attend's weights `[B, heads, N, M]`, in execution order.

  `forward` is a classifier built with `absorb_cross_attend_projections=
  False`, so that the keys are projected (and recorded).
  """
  keys_of_set: dict[str, jax.Array] = {}
  pairs: list[tuple[jax.Array, jax.Array]] = []

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    # Only the module's own `__call__`: a subclass (FlatLinear) calls its
    # parent's on flattened inputs, which is intercepted too.
    if (context.method_name == '__call__' and
        isinstance(context.module, hk.Linear) and
        context.orig_class is type(context.module)):
      match = _CROSS_LINEAR.search(context.module.module_name)
      if match:
        if isinstance(out, jax.core.Tracer):
          raise NotImplementedError(
              'The cross-attends run inside a JAX transformation (e.g. '
              'hk.scan), so their queries and keys cannot be recorded.')
        weight_set, kind = match.groups()
        if kind == 'key':
          keys_of_set[weight_set] = out
        else:
          pairs.append((out, keys_of_set[weight_set]))
    return out

  with hk.intercept_methods(record):
    forward.apply(params, None, batch, is_training=False)
  if not pairs:
    raise ValueError(
        'No cross-attend key Linear ran: is it a Perceiver, built with '
        'absorb_cross_attend_projections=False?')
  maps = []
  for queries, keys in pairs:
    q = np.asarray(queries, np.float32)  # [B, N, C]
    k = np.asarray(keys, np.float32)  # [B, M, C]
    if q.shape[-1] % num_heads:
      raise ValueError(f'num_heads={num_heads} does not divide the '
                       f'cross-attend width {q.shape[-1]}.')
    q = q.reshape(*q.shape[:2], num_heads, -1)
    k = k.reshape(*k.shape[:2], num_heads, -1)
    logits = np.einsum('bnhd,bmhd->bhnm', q, k) / math.sqrt(q.shape[-1])
    logits -= logits.max(axis=-1, keepdims=True)
    weights = np.exp(logits)
    maps.append(weights / weights.sum(axis=-1, keepdims=True))
  return maps


def to_grid(weights: np.ndarray, index_dims: Sequence[int],
            permutation: Optional[np.ndarray] = None) -> np.ndarray:
  """Weights over the byte array `[..., M]` laid out on the grid.

  Input position i of a permuted run holds pixel `permutation[i]`, so its
  weight is put back there. Returns `[..., *index_dims]`.
  """
  index_dims = tuple(int(n) for n in index_dims)
  if weights.shape[-1] != math.prod(index_dims):
    raise ValueError(f'weights over {weights.shape[-1]} inputs do not fit '
                     f'the grid {index_dims}.')
  if permutation is not None:
    unpermuted = np.empty_like(weights)
    unpermuted[..., np.asarray(permutation)] = weights
    weights = unpermuted
  return weights.reshape(*weights.shape[:-1], *index_dims)


def attention_map_figure(image: np.ndarray, maps: Sequence[np.ndarray],
                         latents: Sequence[int], *,
                         title: str = '') -> plt.Figure:
  """An image `[H, W, C]` beside, per cross-attend (rows), the maps
  `[N, H, W]` of the chosen latents (columns)."""
  rows, cols = len(maps), 1 + len(latents)
  fig, axes = plt.subplots(rows, cols, squeeze=False,
                           figsize=(cols * CELL_INCHES, rows * CELL_INCHES),
                           dpi=DPI)
  shown = image[..., 0] if image.shape[-1] == 1 else np.clip(image, 0, 1)
  for r, grid in enumerate(maps):
    axes[r, 0].imshow(shown, cmap='gray_r' if shown.ndim == 2 else None)
    axes[r, 0].set_title(f'cross-attend {r}', fontsize=7)
    for c, latent in enumerate(latents, start=1):
      axes[r, c].imshow(grid[latent], cmap='viridis')
      axes[r, c].set_title(f'latent {latent}', fontsize=7)
  for ax in axes.flat:
    ax.set(xticks=[], yticks=[])
  if title:
    fig.suptitle(title, fontsize=8)
  return fig


def draw_attention_maps(workdir: str, out_dir: str, *, num_images: int = 4,
                        num_latents: int = 4,
                        step: Optional[int] = None) -> list[str]:
  """Writes `out_dir/image_<i>.png` of a grid-input Perceiver's checkpoint
  (default the newest) on the first evaluation images; returns the paths.
  Latents are spread evenly over N."""
  # pylint: disable=g-import-not-at-top
  from perceiver_jax.model import factory
  from perceiver_jax.model import inputs as model_inputs
  from perceiver_jax.train import loop
  # pylint: enable=g-import-not-at-top
  checks.positive_int(num_images, 'num_images')
  checks.positive_int(num_latents, 'num_latents')
  config = run_config.read(workdir)
  input_config = config.model.input
  if config.model.get('architecture', 'perceiver') != 'perceiver' or (
      input_config.type != 'grid'):
    raise ValueError('Attention maps need a Perceiver with a grid input; '
                     f'{workdir} has architecture '
                     f'{config.model.get("architecture", "perceiver")!r} and '
                     f'input {input_config.type!r}.')
  run = loop.Run(config, workdir, read_only=True)
  try:
    step = run.checkpointer.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'No checkpoint in {run.checkpointer.directory}.')
    example = run.eval_batch()
    state = run.restore_state(example, step)
  finally:
    run.checkpointer.close()
  flat = {k: np.asarray(v).reshape(-1, *np.shape(v)[len(run.batch_dims):])
          for k, v in example.items()}
  count = min(num_images, int(flat['mask'].sum()))
  batch = {k: v[:count] for k, v in flat.items()}
  # The recorder reads the key Linears' outputs, so the keys are projected
  # from the inputs (same parameters and weights as the absorbed path).
  model_config = config.model.copy_and_resolve_references()
  with model_config.unlocked():
    model_config.encoder.absorb_cross_attend_projections = False
  forward = factory.transform_classifier(model_config,
                                         config.data.num_classes)
  maps = cross_attention_weights(forward, state.params, batch,
                                 num_heads=config.model.encoder.num_cross_heads)
  permutation = model_inputs.input_permutation(input_config)
  grids = [to_grid(m.mean(axis=1), input_config.index_dims, permutation)
           for m in maps]  # Each [B, N, H, W].
  num_all = grids[0].shape[1]
  latents = [int(i) for i in np.linspace(0, num_all - 1, min(
      num_latents, num_all)).round()]
  os.makedirs(out_dir, exist_ok=True)
  paths = []
  images = np.asarray(batch[input_config.key])
  for i in range(count):
    label = f", label {int(batch['label'][i])}" if 'label' in batch else ''
    fig = attention_map_figure(
        images[i], [g[i] for g in grids], latents,
        title=f'{os.path.basename(os.path.normpath(workdir))} step {step}'
        f'{label}')
    path = os.path.join(out_dir, f'image_{i}.png')
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    paths.append(path)
  return paths


PLOT_SIZE = (10.0, 4.0)  # Inches: training loss | evaluation metric.


def plot_runs(workdirs: Sequence[str], out: str, *,
              labels: Optional[Sequence[str]] = None) -> str:
  """Training loss (log scale, left) and evaluation metric (right) of runs."""
  if not workdirs:
    raise ValueError('plot_runs needs at least one run directory.')
  labels = list(labels or [os.path.basename(os.path.normpath(w))
                           for w in workdirs])
  if len(labels) != len(workdirs):
    raise ValueError(f'{len(labels)} labels for {len(workdirs)} runs.')
  fig, (loss_ax, eval_ax) = plt.subplots(1, 2, figsize=PLOT_SIZE, dpi=DPI)
  eval_names = set()
  for workdir, label in zip(workdirs, labels):
    records = writers.read_metrics(workdir)
    if run_config.exists(workdir):
      evaluator = run_config.read(workdir).evaluator
      key = f'{evaluator.split}/{evaluator.metric}'
    else:
      key = next((k for r in records for k in r if k.endswith('/top1')), '')
    for ax, name, marker in ((loss_ax, 'train/loss', None),
                             (eval_ax, key, 'o')):
      # A resumed run's repeated steps keep the latest value.
      values = {r['step']: r[name] for r in records if name in r}
      if values:
        steps = sorted(values)
        ax.plot(steps, [values[s] for s in steps], marker=marker, label=label)
        if ax is eval_ax:
          eval_names.add(name)
  loss_ax.set(yscale='log', xlabel='step', ylabel='training loss')
  eval_ax.set(xlabel='step',
              ylabel=' / '.join(sorted(eval_names)) or 'evaluation')
  for ax in (loss_ax, eval_ax):
    ax.grid(alpha=0.3)
    if ax.lines:
      ax.legend(fontsize=7)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  fig.savefig(out, dpi=DPI)
  plt.close(fig)
  return out
