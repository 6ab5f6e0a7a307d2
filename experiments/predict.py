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


def image_files(paths: list[str]) -> list[str]:
  """`paths`, with each folder replaced by its image files (sorted)."""
  from perceiver_jax.data import images  # pylint: disable=g-import-not-at-top
  files = []
  for path in paths:
    if not os.path.isdir(path):
      files.append(path)
      continue
    for folder, _, names in sorted(os.walk(path)):
      files += [os.path.join(folder, n) for n in sorted(names)
                if n.lower().endswith(images.IMAGE_SUFFIXES)]
  return files


def preprocess_fn(data):
  """The run's evaluation preprocessing: encoded bytes -> [H, W, C]."""
  # pylint: disable=g-import-not-at-top
  from perceiver_jax.data import imagenet
  from perceiver_jax.data import images
  if 'normalization' in data:  # configs/images.py
    return lambda encoded: images.eval_image(encoded, data)
  if 'eval_crop_fraction' not in data:
    raise cli.UsageError('predict reads image runs (configs/images.py, '
                         'configs/imagenet.py); this run is not one.')
  preprocess = imagenet.EVAL_PREPROCESSING[
      data.get('eval_preprocessing', 'paper')]
  return lambda encoded: preprocess(
      encoded, image_shape=tuple(data.image_shape),
      crop_fraction=float(data.eval_crop_fraction))


def predict(workdir: str, paths: list[str], top: int = 5):
  """Yields (file, [(name, probability)] best first) or (file, error)."""
  # pylint: disable=g-import-not-at-top
  import jax
  import numpy as np
  import tensorflow as tf
  from perceiver_jax.train import loop
  from perceiver_jax.train import run_config
  config = run_config.read(workdir)
  names = list(config.data.get('label_names') or ())
  names += [str(i) for i in range(len(names), config.data.num_classes)]
  preprocess = preprocess_fn(config.data)
  run = loop.Run(config, workdir, read_only=True)
  params = None
  for path in image_files(paths):
    try:
      with open(path, 'rb') as f:
        image = preprocess(tf.constant(f.read())).numpy()
    except (OSError, tf.errors.OpError, ValueError) as e:
      yield path, ' '.join(str(e).split())[:200]
      continue
    batch = {'image': image[None]}
    if params is None:
      target = run.host_target({'image': image[None, None]})
      params = run.checkpointer.restore_newest(
          target, set_aside=False).state.params
      apply = jax.jit(lambda p, b: jax.nn.softmax(
          run.forward.apply(p, None, b, is_training=False)))
    probs = np.asarray(apply(params, batch))[0]
    best = np.argsort(-probs, kind='stable')[:top]
    yield path, [(names[i], float(probs[i])) for i in best]


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
  failed = 0
  for path, result in predict(_WORKDIR.value, paths, _TOP.value):
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
