"""Parameters per module and nominal forward FLOPs of a config's classifier.

Nothing runs at full size: parameters come from `jax.eval_shape` of the
initialiser, FLOPs from XLA's cost analysis of the lowered (unoptimised)
forward for one example. The nominal count, as the paper counts it (a
multiply-add is 2 FLOPs), has every cross-attend compute its own keys and
values; the count with shared K/V reused is reported beside it.
"""

import collections
import functools
import math
from typing import Any, Mapping

import jax
import ml_collections

from perceiver_jax.benchmarking import machine
from perceiver_jax.model import factory
from perceiver_jax.model import schedule


def summarize(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """`params`, `flops_per_example` (nominal), `..._with_kv_reuse`,
  `groups` (row -> (count, shapes)), `uses` (row -> schedule steps),
  `steps`, `input_shape` and `param_list` of `config`'s classifier."""
  num_classes = config.data.num_classes
  model_config = config.model.copy_and_resolve_references()
  with model_config.unlocked():
    # The FLOPs are the model's, whatever its execution mode (XLA's cost
    # analysis counts the body of a scan once); nominal: the paper's
    # computation, K/V projected from the inputs.
    model_config.encoder.update(scan_blocks=False,
                                absorb_cross_attend_projections=False)
    model_config.grid_parts = False
  batch_shapes = factory.example_batch(model_config.input, 1)

  flops = {}
  for reuse in (False, True):
    with model_config.unlocked():
      model_config.encoder.reuse_shared_keys_values = reuse
    model = factory.transform_classifier(model_config, num_classes)
    if not reuse:
      # K/V reuse changes the computation, not the parameters.
      params_shapes = jax.eval_shape(
          functools.partial(model.init, is_training=False),
          jax.random.PRNGKey(0), batch_shapes)
    # XLA's count of the lowered (unoptimised) forward.
    lowered = jax.jit(functools.partial(model.apply, is_training=False)
                      ).lower(params_shapes, None, batch_shapes)
    flops[reuse] = int(machine.xla_cost(lowered)[0])

  # A table row: the encoder's weight sets (`perceiver/cross_attend_0`,
  # ...), or a top-level module.
  groups: dict[str, tuple[int, list[tuple[int, ...]]]] = {}
  for module, name, leaf in _iter_params(params_shapes):
    parts = f'{module}/{name}'.split('/')
    row = '/'.join(parts[:2 if parts[0] == 'perceiver' else 1])
    count, shapes = groups.get(row, (0, []))
    groups[row] = (count + math.prod(leaf.shape), shapes + [leaf.shape])
  groups = {row: groups[row] for row in sorted(groups, key=_row_order)}
  steps = schedule.schedule(factory.encoder_config(model_config))
  return dict(
      params=sum(count for count, _ in groups.values()),
      flops_per_example=flops[False],
      flops_per_example_with_kv_reuse=flops[True],
      groups=groups,
      uses=dict(collections.Counter(
          f'perceiver/{step.kind}_{step.weight_set}' for step in steps)),
      steps=steps,
      input_shape=tuple(next(iter(batch_shapes.values())).shape[1:]),
      param_list=[(f'{m}/{n}', tuple(leaf.shape))
                  for m, n, leaf in _iter_params(params_shapes)],
  )


def _row_order(row: str) -> tuple[int, str, int]:
  """Input side first: adapter, latents, cross-attends, latent
  Transformers, head; weight sets in numeric order."""
  if row.startswith('perceiver/'):
    stem, _, index = row.rpartition('_')
    rank = {'perceiver/cross_attend': 2,
            'perceiver/latent_transformer': 3}.get(stem, 1)
    return (rank, stem if rank > 1 else row,
            int(index) if index.isdigit() else 0)
  return (4 if row == 'classification_head' else 0, row, 0)


def _iter_params(params: Mapping[str, Mapping[str, Any]]):
  for module in sorted(params):
    for name in sorted(params[module]):
      yield module, name, params[module][name]


def format_table(summary: Mapping[str, Any]) -> str:
  """The human-readable report (everything but the JSON line)."""
  total = summary['params']
  rows = [('module', 'uses', 'params', '%', 'arrays: shapes')]
  for row, (count, shapes) in summary['groups'].items():
    # Distinct shapes, largest first: '36x[1024,1024] 60x[1024]'.
    counts = collections.Counter(shapes)
    shapes_text = ' '.join(
        f'{counts[s]}x[{",".join(map(str, s))}]'
        for s in sorted(counts, key=lambda s: (-math.prod(s), s)))
    rows.append((row, str(summary['uses'].get(row, 1)), f'{count:,}',
                 f'{100 * count / total:.2f}',
                 f'{len(shapes)}: {shapes_text}'))
  rows.append(('total', '', f'{total:,}', '100.00', ''))
  widths = [max(len(r[i]) for r in rows) for i in range(4)]
  lines = []
  for i, r in enumerate(rows):
    lines.append('  '.join([r[0].ljust(widths[0]), r[1].rjust(widths[1]),
                            r[2].rjust(widths[2]), r[3].rjust(widths[3]),
                            r[4]]).rstrip())
    if i == 0 or i == len(rows) - 2:
      lines.append('-' * len(lines[0]))
  letter = {'cross_attend': 'C', 'latent_transformer': 'L'}
  nominal = summary['flops_per_example']
  reuse = summary['flops_per_example_with_kv_reuse']
  lines += [
      '',
      f'input per example: {list(summary["input_shape"])}',
      f'schedule (C: cross-attend, L: latent Transformer; digit: weight '
      f'set): ' + ' '.join(f'{letter[s.kind]}{s.weight_set}'
                           for s in summary['steps']),
      f'forward FLOPs per example (nominal, every cross-attend computes its '
      f'own K/V): {nominal:,} ({nominal / 1e9:.2f}e9)',
      f'forward FLOPs per example with shared K/V reused: {reuse:,} '
      f'({reuse / 1e9:.2f}e9, saves {100 * (1 - reuse / nominal):.1f}%)',
  ]
  return '\n'.join(lines)


def nominal_flops_per_example(config: ml_collections.ConfigDict
                              ) -> tuple[int, int]:
  """(parameters, nominal forward FLOPs of one example), counted in float32
  without scan or remat: a property of the model, not of its execution."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.model.encoder.update(scan_blocks=False, remat='none',
                                precision='float32')
  counted = summarize(config)
  return counted['params'], counted['flops_per_example']
