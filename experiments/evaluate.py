r"""Evaluates checkpoints: `python -m experiments.evaluate --workdir=DIR`.

Evaluates the newest checkpoint (or `--checkpoint=DIR/checkpoints/N`) on
`--split` (default: the config's), prints one JSON line and writes it to
`DIR/evaluations/<split>-step<N>.json` (or `--output`), reading only.
`--checkpoint=all` evaluates every kept one into a table with the best step
(`<split>-all.json`). Only `--config.evaluator.{split,batch_size,
max_examples}` may be overridden. A damaged checkpoint is refused naming the
newest intact one; `--fallback` evaluates that one (or, with `all`, skips
the damaged ones), listed under 'skipped_steps'.
"""

import json
import os
import sys

from absl import flags
from absl import logging

from perceiver_jax import host_memory
from perceiver_jax import cli
from perceiver_jax.train import evaluation
from perceiver_jax.train import launch

_WORKDIR = flags.DEFINE_string('workdir', None, 'The run directory.',
                               required=True)
_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', None, "A checkpoint step directory, or 'all' for every "
    'kept checkpoint (default: the newest in WORKDIR/checkpoints).')
_SPLIT = flags.DEFINE_string('split', None, 'The split to evaluate.')
_OUTPUT = flags.DEFINE_string('output', None, 'Where to write the JSON.')
_FALLBACK = flags.DEFINE_bool(
    'fallback', False, 'When the checkpoint is damaged, evaluate the newest '
    'intact one before it instead of refusing (with --checkpoint=all: skip '
    'the damaged ones and list them).')


def evaluate_all(config, workdir: str, split: str | None,
                 overrides: list[str], fallback: bool) -> tuple[dict, str]:
  """Evaluates every kept checkpoint: the summary and its table.

  A damaged checkpoint ends it (`loop.DamagedCheckpointError`) unless
  `fallback`, which lists it under 'skipped_steps'.
  """
  # pylint: disable=g-import-not-at-top
  from perceiver_jax.train import loop
  from perceiver_jax.train import writers
  # pylint: enable=g-import-not-at-top
  checkpoint_dir = os.path.join(workdir, 'checkpoints')
  evaluated = loop.evaluate_checkpoints(config, checkpoint_dir, split=split,
                                        fallback=fallback)
  results = [r for r in evaluated if 'damaged' not in r]
  skipped = [r['step'] for r in evaluated if 'damaged' in r]
  if not results:
    raise loop.DamagedCheckpointError(
        f'Every checkpoint in {checkpoint_dir} is damaged: {evaluated}.')
  if skipped:
    writers.warn(f'damaged checkpoint(s) skipped: steps '
                 f'{", ".join(map(str, skipped))}.')
  split = split or config.evaluator.split
  metric, mode = config.evaluator.metric, config.evaluator.metric_mode
  best = evaluation.best_step(results, metric, mode)
  summary = {'split': split, 'metric': metric, 'metric_mode': mode,
             'best_step': best['step'], 'best': best[metric],
             'checkpoint_dir': checkpoint_dir, 'skipped_steps': skipped,
             'config_overrides': overrides, 'evaluations': results}
  return summary, (evaluation.results_table(results, metric) +
                   f'\nBest: step {best["step"]} ({split} {metric} '
                   f'{best[metric]:.4f}; {mode} is best).')


def main(argv):
  host_memory.keep_freed_memory()  # Process-wide, before JAX allocates.
  cli.no_arguments(argv)
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
    # Orbax warns that the directory is read-only: we opened it so.
    logging.get_absl_logger().addFilter(
        lambda record: not (record.filename == 'checkpoint_manager.py' and
                            'read' in record.getMessage().lower()))
  evaluation.check_workdir(_WORKDIR.value, _CHECKPOINT.value)
  launch.initialize_distributed()
  # pylint: disable=g-import-not-at-top
  import jax
  from perceiver_jax.train import evaluators
  from perceiver_jax.train import loop
  from perceiver_jax.train import run_config
  from perceiver_jax.train import writers
  # pylint: enable=g-import-not-at-top
  launch.enable_compilation_cache()
  evaluators.show_progress()
  workdir = _WORKDIR.value
  config = run_config.read(workdir)
  evaluation.apply_overrides(config, _OVERRIDES)
  split = _SPLIT.value or config.evaluator.split
  if _CHECKPOINT.value == 'all':
    result, text = evaluate_all(config, workdir, _SPLIT.value, _OVERRIDES,
                                _FALLBACK.value)
    output = _OUTPUT.value or os.path.join(workdir, 'evaluations',
                                           f'{split}-all.json')
    text += f' Written to {output}'
  else:
    checkpoint_dir, step = os.path.join(workdir, 'checkpoints'), None
    if _CHECKPOINT.value:
      # A step directory whose name is a step (`evaluation.check_workdir`).
      checkpoint = os.path.abspath(_CHECKPOINT.value.rstrip('/'))
      checkpoint_dir, step = (os.path.dirname(checkpoint),
                              int(os.path.basename(checkpoint)))
    metrics = loop.evaluate_checkpoint(config, checkpoint_dir, step=step,
                                       split=_SPLIT.value,
                                       fallback=_FALLBACK.value)
    result = {'split': split, 'checkpoint': os.path.join(
        checkpoint_dir, str(metrics['step'])), **metrics}
    text = json.dumps(result, sort_keys=True)
    output = _OUTPUT.value or os.path.join(
        workdir, 'evaluations', f'{split}-step{metrics["step"]}.json')
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    writers.write_json(output, result)
    print(text, flush=True)


_OVERRIDES: list[str] = []

if __name__ == '__main__':
  sys.argv, _OVERRIDES = cli.guard(evaluation.take_config_overrides,
                                   sys.argv)
  cli.run(main)
