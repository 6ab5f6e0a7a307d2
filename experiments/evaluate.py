r"""Evaluates a checkpoint: `python -m experiments.evaluate --workdir=DIR`.

Reads the run's `config.json` and its newest checkpoint (or `--checkpoint`,
a step directory such as `DIR/checkpoints/1500`), evaluates `--split`
(default: the config's evaluation split), prints the metrics as one JSON
line and writes them to `DIR/evaluations/<split>-step<N>.json` (or
`--output`). The checkpoint directory is opened read-only.

A damaged checkpoint (the newest, or the one asked for) is refused with one
line naming it and the newest intact one; `--fallback` evaluates that intact
one instead, and the JSON records it under 'step' and the damaged ones
under 'skipped_steps'.
"""

import json
import os

from absl import flags
from absl import logging

from perceiver_jax.train import launch

_WORKDIR = flags.DEFINE_string('workdir', None, 'The run directory.',
                               required=True)
_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', None, 'A checkpoint step directory (default: the newest '
    'in WORKDIR/checkpoints).')
_SPLIT = flags.DEFINE_string('split', None, 'The split to evaluate.')
_OUTPUT = flags.DEFINE_string('output', None, 'Where to write the JSON.')
_FALLBACK = flags.DEFINE_bool(
    'fallback', False, 'When the checkpoint is damaged, evaluate the newest '
    'intact one before it instead of refusing.')


def main(argv):
  if len(argv) > 1:
    raise ValueError(f'Unexpected arguments: {argv[1:]}')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
    # Orbax warns that the directory is read-only: we opened it so.
    logging.get_absl_logger().addFilter(
        lambda record: not (record.filename == 'checkpoint_manager.py' and
                            'read' in record.getMessage().lower()))
  launch.initialize_distributed()
  # pylint: disable=g-import-not-at-top
  import jax
  from perceiver_jax.train import loop
  from perceiver_jax.train import run_config
  from perceiver_jax.train import runtime
  from perceiver_jax.train import writers
  # pylint: enable=g-import-not-at-top
  runtime.enable_compilation_cache()
  workdir = _WORKDIR.value
  config = run_config.read(workdir)
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
                                     split=_SPLIT.value,
                                     fallback=_FALLBACK.value)
  split = _SPLIT.value or config.evaluator.split
  result = {'split': split, 'checkpoint': os.path.join(
      checkpoint_dir, str(metrics['step'])), **metrics}
  output = _OUTPUT.value or os.path.join(
      workdir, 'evaluations', f'{split}-step{metrics["step"]}.json')
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    writers.write_json(output, result)
    print(json.dumps(result, sort_keys=True), flush=True)


if __name__ == '__main__':
  launch.run(main)
