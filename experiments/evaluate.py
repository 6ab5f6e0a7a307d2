r"""Evaluates checkpoints: `python -m experiments.evaluate --workdir=DIR`.

Reads the run's `config.json` and its newest checkpoint (or `--checkpoint`,
a step directory such as `DIR/checkpoints/1500`), evaluates `--split`
(default: the config's evaluation split), prints the metrics as one JSON
line and writes them to `DIR/evaluations/<split>-step<N>.json` (or
`--output`). The checkpoint directory is opened read-only.

`--checkpoint=all` evaluates every kept checkpoint, oldest first, prints
one table (a row per step) and the best step by the config's metric
(`config.evaluator.metric`, `metric_mode`), and writes them to
`DIR/evaluations/<split>-all.json` (or `--output`).

Fields that change only the evaluation may be overridden as in training,
`--config.evaluator.batch_size=64`, `--config.evaluator.split=validation`,
`--config.evaluator.max_examples=1000` (at most this many examples; clips
for AudioSet); any other `--config.` override is refused, since the
checkpoint was trained with the run's config.
"""

import json
import os
import sys

from absl import flags
from absl import logging

from perceiver_jax import cli
from perceiver_jax.train import launch

_WORKDIR = flags.DEFINE_string('workdir', None, 'The run directory.',
                               required=True)
_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', None, "A checkpoint step directory, or 'all' for every "
    'kept checkpoint (default: the newest in WORKDIR/checkpoints).')
_SPLIT = flags.DEFINE_string('split', None, 'The split to evaluate.')
_OUTPUT = flags.DEFINE_string('output', None, 'Where to write the JSON.')

# `--config.<field>=value` overrides this command accepts: they change what
# is evaluated and how, never the model the checkpoint holds.
EVALUATION_FIELDS = ('evaluator.split', 'evaluator.batch_size',
                     'evaluator.max_examples')


def take_config_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
  """(argv without `--config.` overrides, the overrides 'field=value').

  Raises:
    cli.UsageError: an override of a field outside `EVALUATION_FIELDS`, or
      one without a value.
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


def apply_overrides(config, overrides: list[str]) -> None:
  """Sets each 'field=value' in `config`, parsed by the field's type."""
  # pylint: disable=g-import-not-at-top
  from perceiver_jax import sweep
  # pylint: enable=g-import-not-at-top
  for override in overrides:
    field, _, text = override.partition('=')
    value = sweep.parse_override(config, 'config.' + field, text)
    parent = config
    for part in field.split('.')[:-1]:
      parent = parent[part]
    parent[field.split('.')[-1]] = value


def check_workdir(workdir: str, checkpoint: str | None) -> None:
  """Refuses a workdir that holds no run, or a step that does not exist."""
  # pylint: disable=g-import-not-at-top
  from perceiver_jax.train import run_config
  # pylint: enable=g-import-not-at-top
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


def best_step(results: list[dict], metric: str, mode: str) -> dict:
  """The result with the best `metric` ('max' or 'min'); the first on ties."""
  pick = max if mode == 'max' else min
  return pick(results, key=lambda r: r[metric])


def results_table(results: list[dict], metric: str) -> str:
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


def evaluate_all(config, workdir: str, split: str | None,
                 output: str | None) -> dict:
  """Evaluates every kept checkpoint; prints the table, writes the JSON."""
  # pylint: disable=g-import-not-at-top
  import jax
  from perceiver_jax.train import loop
  from perceiver_jax.train import writers
  # pylint: enable=g-import-not-at-top
  checkpoint_dir = os.path.join(workdir, 'checkpoints')
  results = loop.evaluate_checkpoints(config, checkpoint_dir, split=split)
  split = split or config.evaluator.split
  metric, mode = config.evaluator.metric, config.evaluator.metric_mode
  best = best_step(results, metric, mode)
  summary = {'split': split, 'metric': metric, 'metric_mode': mode,
             'best_step': best['step'], 'best': best[metric],
             'checkpoint_dir': checkpoint_dir, 'evaluations': results}
  output = output or os.path.join(workdir, 'evaluations', f'{split}-all.json')
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    writers.write_json(output, summary)
    print(results_table(results, metric) +
          f'\nBest: step {best["step"]} ({split} {metric} '
          f'{best[metric]:.4f}; {mode} is best). Written to {output}',
          flush=True)
  return summary


def main(argv):
  cli.no_arguments(argv)
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
    # Orbax warns that the directory is read-only: we opened it so.
    logging.get_absl_logger().addFilter(
        lambda record: not (record.filename == 'checkpoint_manager.py' and
                            'read' in record.getMessage().lower()))
  check_workdir(_WORKDIR.value, _CHECKPOINT.value)
  launch.initialize_distributed()
  # pylint: disable=g-import-not-at-top
  import jax
  from perceiver_jax.train import evaluators
  from perceiver_jax.train import loop
  from perceiver_jax.train import run_config
  from perceiver_jax.train import runtime
  from perceiver_jax.train import writers
  # pylint: enable=g-import-not-at-top
  runtime.enable_compilation_cache()
  evaluators.show_progress()
  workdir = _WORKDIR.value
  config = run_config.read(workdir)
  apply_overrides(config, _OVERRIDES)
  if _CHECKPOINT.value == 'all':
    evaluate_all(config, workdir, _SPLIT.value, _OUTPUT.value)
    return
  if _CHECKPOINT.value:
    checkpoint = os.path.abspath(_CHECKPOINT.value.rstrip('/'))
    checkpoint_dir = os.path.dirname(checkpoint)
    try:
      step = int(os.path.basename(checkpoint))
    except ValueError:
      raise ValueError(f'--checkpoint must be a step directory such as '
                       f'{workdir}/checkpoints/1000, got {checkpoint}.'
                       ) from None
  else:
    checkpoint_dir, step = os.path.join(workdir, 'checkpoints'), None
  metrics = loop.evaluate_checkpoint(config, checkpoint_dir, step=step,
                                     split=_SPLIT.value)
  split = _SPLIT.value or config.evaluator.split
  result = {'split': split, 'checkpoint': os.path.join(
      checkpoint_dir, str(metrics['step'])), **metrics}
  output = _OUTPUT.value or os.path.join(
      workdir, 'evaluations', f'{split}-step{metrics["step"]}.json')
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    writers.write_json(output, result)
    print(json.dumps(result, sort_keys=True), flush=True)


_OVERRIDES: list[str] = []

if __name__ == '__main__':
  sys.argv, _OVERRIDES = cli.guard(take_config_overrides, sys.argv)
  launch.run(main)
