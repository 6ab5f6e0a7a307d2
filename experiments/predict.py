r"""Classifies image files with a trained or imported run.

  python -m experiments.predict --workdir=RUN FILE_OR_DIR... [--json]

Prints, for each image (folders are searched for image files), the top-5
class names with their probabilities, using the run's own evaluation
preprocessing and label names (`config.data.label_names`: TFDS's, the class
folders', or an imported checkpoint's `id2label`; class indices if none).
`--json` prints one JSON object per image. A file that cannot be read or
decoded gets one `error:` line on stderr and the others still run (exit
status 1 if any failed).
"""

import json
import os
import sys

from absl import flags
from absl import logging

from perceiver_jax import cli
from perceiver_jax.train import evaluation

_WORKDIR = flags.DEFINE_string('workdir', None, 'The run directory.',
                               required=True)
_JSON = flags.DEFINE_bool('json', False, 'One JSON line per image.')
_TOP = flags.DEFINE_integer('top', 5, 'Classes to print per image.',
                            lower_bound=1)


def main(argv):
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.ERROR)
  paths = argv[1:]
  if not paths:
    raise cli.UsageError('give image files or folders after the flags: '
                         'python -m experiments.predict --workdir=RUN '
                         'FILE_OR_DIR...')
  evaluation.check_workdir(_WORKDIR.value, None)
  missing = [p for p in paths if not os.path.exists(p)]
  if missing:
    raise cli.UsageError(f'not found: {", ".join(missing)}')
  # pylint: disable-next=g-import-not-at-top
  from perceiver_jax.train import prediction  # After flags: --help stays fast.
  failed = 0
  for path, result in prediction.predict(_WORKDIR.value, paths, _TOP.value):
    if isinstance(result, str):
      failed += 1
      print(f'error: cannot read {path}: {result}', file=sys.stderr,
            flush=True)
    elif _JSON.value:
      print(json.dumps({'file': path, 'top': [
          {'label': n, 'probability': p} for n, p in result]}), flush=True)
    else:
      print(path + '\n' + '\n'.join(f'  {p:7.2%}  {n}' for n, p in result),
            flush=True)
  if failed:
    sys.exit(cli.FAILURE_STATUS)


if __name__ == '__main__':
  cli.run(main)
