"""The flag-free parts of `experiments.evaluate`: the workdir and step
checks, the `--config.` overrides it accepts, the `--checkpoint=all` table.
"""

import os
from typing import Any, Optional

import ml_collections

from perceiver_jax import cli
from perceiver_jax.train import run_config

# `--config.<field>=value` overrides this command accepts: they change what
# is evaluated and how, never the model the checkpoint holds.
EVALUATION_FIELDS = ('evaluator.split', 'evaluator.batch_size',
                     'evaluator.max_examples')


def take_config_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
  """(argv without `--config.` overrides, the overrides 'field=value');
  cli.UsageError for a field outside `EVALUATION_FIELDS` or no value.
  """
  rest, overrides = [], []
  for arg in argv:
    if not arg.startswith('--config.'):
      rest.append(arg)
      continue
    field, equals, _ = arg[len('--config.'):].partition('=')
    if field not in EVALUATION_FIELDS:
      raise cli.UsageError(
          f'{arg.partition("=")[0]} cannot be overridden when evaluating '
          "(the checkpoint was trained with the run's config); evaluation "
          f'accepts --config.{{{",".join(EVALUATION_FIELDS)}}}.')
    if not equals:
      raise cli.UsageError(f'{arg} needs a value: {arg}=VALUE.')
    overrides.append(arg[len('--config.'):])
  return rest, overrides


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: list[str]) -> None:
  """Sets each 'field=value' in `config`, parsed by the field's type."""
  for override in overrides:
    field, _, text = override.partition('=')
    config.update_from_flattened_dict(
        {field: cli.parse_override(config, 'config.' + field, text)})


def check_workdir(workdir: str, checkpoint: Optional[str]) -> None:
  """Refuses a workdir that holds no run, or a step that does not exist."""
  if not os.path.isdir(workdir):
    raise cli.UsageError(
        f'--workdir={workdir} is '
        f'{"a file" if os.path.exists(workdir) else "missing"}; give the run '
        'directory that experiments.train wrote.')
  if not run_config.exists(workdir):
    raise cli.UsageError(
        f'--workdir={workdir} holds no run (no {run_config.FILE_NAME}); give '
        'the run directory that experiments.train wrote.')
  checkpoints = os.path.join(workdir, 'checkpoints')
  steps = sorted(int(d) for d in (os.listdir(checkpoints) if os.path.isdir(
      checkpoints) else []) if d.isdigit())
  if not steps:
    raise cli.UsageError(f'{checkpoints} holds no checkpoint; train the run '
                         'first (experiments.train --workdir=...).')
  if checkpoint in (None, 'all'):
    return
  path = checkpoint.rstrip('/')
  if not os.path.basename(path).isdigit():
    raise cli.UsageError(
        f"--checkpoint={checkpoint} is neither 'all' nor a step directory "
        f'such as {checkpoints}/{steps[-1]}.')
  if not os.path.isdir(path):
    raise cli.UsageError(
        f'--checkpoint={checkpoint} does not exist; the kept steps are '
        f'{", ".join(map(str, steps))} (e.g. --checkpoint={checkpoints}/'
        f'{steps[-1]}, or --checkpoint=all).')


def best_step(results: list[dict[str, Any]], metric: str,
              mode: str) -> dict[str, Any]:
  """The result with the best `metric` ('max' or 'min'); the first on ties."""
  pick = max if mode == 'max' else min
  return pick(results, key=lambda r: r[metric])


def results_table(results: list[dict[str, Any]], metric: str) -> str:
  """A Markdown table: a row per step, the metric first."""
  names = [metric] + sorted(k for k in results[0] if k not in (
      'step', metric))
  lines = ['| step | ' + ' | '.join(names) + ' |',
           '|---|' + '---|' * len(names)]
  for r in results:
    cells = [f'{r[n]:.4f}' if isinstance(r[n], float) else str(r[n])
             for n in names]
    lines.append(f'| {r["step"]} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'
