"""Class probabilities for image files, from a trained or imported run.

The run's own evaluation preprocessing and label names are used
(`config.data.label_names`: TFDS's, the class folders', or an imported
checkpoint's `id2label`; class indices where there are none).
"""

import os
from typing import Iterator, Union

import jax
import ml_collections
import numpy as np
import tensorflow as tf

from perceiver_jax import cli
from perceiver_jax.data import imagenet
from perceiver_jax.data import images
from perceiver_jax.train import checkpoint as checkpoint_lib
from perceiver_jax.train import loop
from perceiver_jax.train import run_config

# (class name, probability) pairs, best first; or the reason a file failed.
Prediction = Union[list[tuple[str, float]], str]


def image_files(paths: list[str]) -> list[str]:
  """`paths`, with each folder replaced by its image files (sorted)."""
  files = []
  for path in paths:
    if not os.path.isdir(path):
      files.append(path)
      continue
    for folder, _, names in sorted(os.walk(path)):
      files += [os.path.join(folder, n) for n in sorted(names)
                if n.lower().endswith(images.IMAGE_SUFFIXES)]
  return files


def preprocess_fn(data: ml_collections.ConfigDict):
  """The run's evaluation preprocessing: encoded bytes -> [H, W, C]."""
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


def predict(workdir: str, paths: list[str],
            top: int = 5) -> Iterator[tuple[str, Prediction]]:
  """Yields (file, prediction) for each image file under `paths`."""
  config = run_config.read(workdir)
  names = list(config.data.get('label_names') or ())
  names += [str(i) for i in range(len(names), config.data.num_classes)]
  preprocess = preprocess_fn(config.data)
  run = loop.Run(config, workdir, read_only=True)
  try:
    yield from _predict(run, preprocess, names, image_files(paths), top)
  finally:
    run.checkpointer.close()


def _predict(run: loop.Run, preprocess, names: list[str], files: list[str],
             top: int) -> Iterator[tuple[str, Prediction]]:
  params = None
  for path in files:
    try:
      with open(path, 'rb') as f:
        image = preprocess(tf.constant(f.read())).numpy()
    except (OSError, tf.errors.OpError, ValueError) as e:
      yield path, ' '.join(str(e).split())[:200]
      continue
    if params is None:  # The model's shapes come from the first image.
      restored = run.checkpointer.restore_newest(
          run.host_target({'image': image[None, None]}), set_aside=False)
      if restored.state is None:
        raise checkpoint_lib.CheckpointReadError(
            f'No checkpoint in {run.checkpointer.directory}.')
      params = restored.state.params
      apply = jax.jit(lambda p, b: jax.nn.softmax(
          run.forward.apply(p, None, b, is_training=False)))
    probs = np.asarray(apply(params, {'image': image[None]}))[0]
    best = np.argsort(-probs, kind='stable')[:top]
    yield path, [(names[i], float(probs[i])) for i in best]
