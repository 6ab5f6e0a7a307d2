r"""Imports a transformers Perceiver checkpoint as a perceiver_jax workdir.

  python -m experiments.import_checkpoint --from=DIR --workdir=WORKDIR

DIR is a transformers checkpoint directory (`config.json` and
`model.safetensors`, e.g. `deepmind/vision-perceiver-fourier` downloaded with
huggingface_hub). WORKDIR (new or empty) receives what a training run would
leave there: `config.json` (configs/imagenet.py with `config.model` replaced
by the checkpoint's architecture) and an orbax checkpoint of step 0 under
`checkpoints/`, so that `experiments.evaluate --workdir=WORKDIR` and
`experiments.attention_maps` read it unchanged. The image size comes from
DIR's `preprocessor_config.json` when present (default 224).

Supported: `perceiver_jax.interop.transformers_format.ARCHITECTURES` (the
three ImageNet classifiers). A bad checkpoint (unreadable or truncated
weights, another architecture, a tensor with no place or a shape that does
not fit, pickle-only weights) is refused with one `error:` line, exit
status 2, and nothing is written.
"""

import json
import os
import sys

from absl import flags

from perceiver_jax.train import launch

_FROM = flags.DEFINE_string('from', None, 'The transformers checkpoint '
                            'directory.', required=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'The workdir to create.',
                               required=True)
_CONFIG = flags.DEFINE_string('config_arg', '', 'The argument string of '
                              'configs/imagenet.py (data settings).')

_PICKLE_FILES = ('pytorch_model.bin', 'model.bin', 'pytorch_model.pt')


class ImportFailure(Exception):
  """A refused checkpoint: printed as one line, exit status 2."""


def _read_json(path: str, what: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise ImportFailure(f'{what} not found: {path}') from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ImportFailure(f'{path} is not valid JSON ({e}).') from None


def _weights(directory: str) -> dict:
  """The checkpoint's tensors, read without pickle."""
  import safetensors  # pylint: disable=g-import-not-at-top
  import safetensors.numpy  # pylint: disable=g-import-not-at-top
  path = os.path.join(directory, 'model.safetensors')
  if not os.path.exists(path):
    pickles = [n for n in _PICKLE_FILES
               if os.path.exists(os.path.join(directory, n))]
    if pickles:
      raise ImportFailure(
          f'{directory} holds only {pickles[0]}, a pickle file, which this '
          'command does not load (unpickling runs code). Convert it once '
          'where you trust it: python -c "import transformers; transformers.'
          f'AutoModel.from_pretrained(\'{directory}\').save_pretrained('
          f'\'{directory}\', safe_serialization=True)" (writes '
          'model.safetensors).')
    raise ImportFailure(f'no model.safetensors in {directory}.')
  try:
    return safetensors.numpy.load_file(path)
  except Exception as e:  # pylint: disable=broad-except
    # safetensors raises its own error types (SafetensorError, and
    # OSError-like ones) for truncated or malformed files.
    raise ImportFailure(f'cannot read {path}: {" ".join(str(e).split())} '
                        '(truncated or not a safetensors file?)') from None


def _image_size(directory: str) -> tuple[int, int]:
  path = os.path.join(directory, 'preprocessor_config.json')
  if not os.path.exists(path):
    return (224, 224)
  size = _read_json(path, 'preprocessor_config.json').get('size') or {}
  return (int(size.get('height', 224)), int(size.get('width', 224)))


def import_checkpoint(source: str, workdir: str, config_arg: str = '') -> str:
  """Writes `workdir` from the checkpoint in `source`; returns the summary.

  Raises:
    ImportFailure: the checkpoint is refused (nothing written).
  """
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  import ml_collections
  import numpy as np
  from configs import imagenet
  from perceiver_jax.interop import transformers_format as tf_format
  from perceiver_jax.model import factory
  from perceiver_jax.train import checkpoint as checkpoint_lib
  from perceiver_jax.train import optim
  from perceiver_jax.train import run_config
  from perceiver_jax.train import state as state_lib

  if os.path.exists(workdir) and os.listdir(workdir):
    raise ImportFailure(f'--workdir {workdir} exists and is not empty.')
  hf_config = _read_json(os.path.join(source, 'config.json'), 'config.json')
  try:
    architecture = tf_format.architecture_of(hf_config)
    if tf_format.ARCHITECTURES[architecture] is None:
      raise tf_format.CheckpointError(
          f'{architecture} has no classifier to evaluate; supported here: '
          + ', '.join(a for a, t in tf_format.ARCHITECTURES.items() if t))
    model = tf_format.model_config(hf_config,
                                   image_size=_image_size(source))
    state = _weights(source)
    num_classes = int(hf_config.get('num_labels') or len(
        hf_config.get('id2label') or {}) or 1000)
    forward = factory.transform_classifier(model, num_classes)
    example = factory.example_batch(model['input'], 1)
    example = {k: jnp.zeros(v.shape, v.dtype) for k, v in example.items()}
    expected = jax.eval_shape(forward.init, jax.random.key(0), example,
                              is_training=False)
    params = tf_format.to_params(state, hf_config, expected)
  except tf_format.CheckpointError as e:
    raise ImportFailure(str(e)) from None
  config = imagenet.get_config(config_arg)
  with config.unlocked():
    config.model = ml_collections.ConfigDict(model)
    config.data.num_classes = num_classes
  theirs = sum(int(np.prod(v.shape)) for k, v in state.items()
               if not k.endswith(tf_format.IGNORED_SUFFIXES))
  ours = tf_format.count(params)
  params = jax.tree.map(jnp.asarray, params)
  optimizer = optim.make_optimizer(config.optimizer, lambda step: 0.0)
  train_state = state_lib.TrainState(
      params=params, opt_state=optimizer.init(params),
      step=jnp.zeros([], jnp.int32),
      rng=jax.random.PRNGKey(config.seed),
      num_skipped=jnp.zeros([], jnp.int32))
  os.makedirs(workdir, exist_ok=True)
  run_config.write(workdir, config)
  checkpointer = checkpoint_lib.Checkpointer(
      os.path.join(workdir, 'checkpoints'), keep=config.checkpoint.keep)
  checkpointer.save(0, jax.tree.map(np.asarray, train_state))
  checkpointer.close()
  return (f'{architecture}: transformers {theirs:,} values in '
          f'{len(state)} tensors; perceiver_jax {ours:,} parameters; '
          f'written to {workdir}')


def main(argv):
  if len(argv) > 1:
    raise ValueError(f'Unexpected arguments: {argv[1:]}')
  try:
    print(import_checkpoint(_FROM.value, _WORKDIR.value, _CONFIG.value))
  except ImportFailure as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    sys.exit(2)


if __name__ == '__main__':
  launch.run(main)
