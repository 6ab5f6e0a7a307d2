"""Workdirs <-> transformers Perceiver checkpoint directories.

`import_checkpoint` writes a workdir (`config.json`, a step-0 checkpoint);
`export_checkpoint` writes `config.json` and `model.safetensors`. Both check
everything before writing anything, and refuse with a `cli.UsageError`.
"""

import json
import os
from typing import Optional

import jax
import ml_collections
import numpy as np
import safetensors.numpy

from perceiver_jax import cli
from perceiver_jax.interop import transformers_format as tf_format
from perceiver_jax.train import checkpoint as checkpoint_lib
from perceiver_jax.train import finetune
from perceiver_jax.train import optim
from perceiver_jax.train import run_config
from perceiver_jax.train import state as state_lib
from perceiver_jax.train import writers

_PICKLE_FILES = ('pytorch_model.bin', 'model.bin', 'pytorch_model.pt')


class ImportFailure(cli.UsageError):
  """A refused checkpoint: one `error:` line, exit status 2 (`cli`)."""


def _read_json(path: str) -> dict:
  try:
    return writers.read_json(path)
  except FileNotFoundError:
    raise ImportFailure(f'{os.path.basename(path)} not found: {path}'
                        ) from None
  except ValueError as e:
    raise ImportFailure(str(e)) from None


def _weights(directory: str, architecture: str) -> dict:
  """The checkpoint's tensors, read without pickle."""
  path = os.path.join(directory, 'model.safetensors')
  if not os.path.exists(path):
    pickles = [n for n in _PICKLE_FILES
               if os.path.exists(os.path.join(directory, n))]
    if pickles:
      raise ImportFailure(
          f'{directory} holds only {pickles[0]}, a pickle file, which this '
          'command does not load (unpickling runs code). Convert it once '
          'where you trust it: python -c "import transformers; transformers.'
          f'{architecture}.from_pretrained(\'{directory}\').save_pretrained('
          f'\'{directory}\')" (writes model.safetensors).')
    raise ImportFailure(f'no model.safetensors in {directory}.')
  try:
    return safetensors.numpy.load_file(path)
  except Exception as e:  # pylint: disable=broad-except
    # safetensors raises its own error types (SafetensorError, and
    # OSError-like ones) for truncated or malformed files.
    raise ImportFailure(f'cannot read {path}: {" ".join(str(e).split())} '
                        '(truncated or not a safetensors file?)') from None


def _image_settings(directory: str) -> tuple[tuple[int, int], float]:
  """`(H, W)` and the centre-crop fraction of `preprocessor_config.json`
  (transformers' defaults without one)."""
  path = os.path.join(directory, 'preprocessor_config.json')
  settings = _read_json(path) if os.path.exists(path) else {}
  size = settings.get('size') or {}
  crop = settings.get('crop_size') or {}
  try:
    height = int(size.get('height', 224))
    width = int(size.get('width', 224))
    fraction = height / int(crop.get('height', 256))
  except (TypeError, ValueError, ZeroDivisionError) as e:
    raise ImportFailure(f'{path}: unreadable size or crop_size ({e}).'
                        ) from None
  if not 0.0 < fraction <= 1.0:
    raise ImportFailure(f'{path}: size {height} over crop_size '
                        f'{crop.get("height")} is not a fraction in (0, 1].')
  return (height, width), fraction


def import_checkpoint(source: str, workdir: str,
                      base_config: ml_collections.ConfigDict) -> str:
  """Writes the new or empty `workdir` from the checkpoint in `source`,
  with `base_config`'s `model` and `data.num_classes` replaced by the
  checkpoint's; returns the summary."""
  if os.path.exists(workdir) and os.listdir(workdir):
    raise ImportFailure(f'--workdir {workdir} exists and is not empty.')
  hf_config = _read_json(os.path.join(source, 'config.json'))
  try:
    architecture = tf_format.architecture_of(hf_config)
    if tf_format.ARCHITECTURES[architecture] is None:
      raise tf_format.CheckpointError(
          f'{architecture} has no classifier to evaluate; supported here: '
          + ', '.join(a for a, t in tf_format.ARCHITECTURES.items() if t))
    image_size, crop_fraction = _image_settings(source)
    model = tf_format.model_config(hf_config, image_size=image_size)
    state = _weights(source, architecture)
    num_classes = int(hf_config.get('num_labels') or len(
        hf_config.get('id2label') or {}) or 1000)
    expected = state_lib.abstract_state(model, num_classes,
                                        base_config.optimizer).params
    params = tf_format.to_params(state, hf_config, expected)
  except tf_format.CheckpointError as e:
    raise ImportFailure(str(e)) from None
  config = base_config.copy_and_resolve_references()
  with config.unlocked():
    tf_format.merge_model_config(config.model, model)
    config.data.num_classes = num_classes
    # Evaluated on the images the checkpoint was trained and evaluated on.
    config.data.image_shape = tuple(model['input']['index_dims'])
    config.data.eval_crop_fraction = crop_fraction
    config.data.eval_preprocessing = 'transformers'
    # Read by experiments.predict.
    id2label = hf_config.get('id2label') or {}
    config.data.label_names = tuple(str(id2label.get(str(i), i))
                                    for i in range(num_classes))
  theirs = sum(int(np.prod(v.shape)) for k, v in state.items()
               if not k.endswith(tf_format.IGNORED_SUFFIXES))
  optimizer = optim.make_optimizer(config.optimizer, lambda step: 0.0)
  train_state = jax.tree.map(np.asarray, state_lib.TrainState(
      params=params, opt_state=optimizer.init(params),
      step=np.zeros([], np.int32), rng=jax.random.PRNGKey(config.seed),
      num_skipped=np.zeros([], np.int32)))

  def build(scratch: str) -> None:
    checkpointer = checkpoint_lib.Checkpointer(
        os.path.join(scratch, 'checkpoints'), keep=config.checkpoint.keep)
    checkpointer.save(0, train_state)
    checkpointer.close()
    run_config.write(scratch, config)

  # All or nothing: a failed save leaves no run without its checkpoint.
  writers.build_directory(workdir, build)
  return (f'{architecture}: transformers {theirs:,} values in '
          f'{len(state)} tensors; perceiver_jax {tf_format.count(params):,} '
          f'parameters; written to {workdir}')


class ExportFailure(cli.UsageError):
  """A refused export: one `error:` line, exit status 2 (`cli`)."""


def export_checkpoint(workdir: str, target: str,
                      step: Optional[int] = None) -> str:
  """Writes `target` from `workdir`'s checkpoint; returns the summary."""
  if os.path.exists(target) and os.listdir(target):
    raise ExportFailure(f'--to {target} exists and is not empty.')
  if not run_config.exists(workdir):
    raise ExportFailure(f'no config.json in {workdir}.')
  config = run_config.read(workdir)
  try:
    num_classes = int(config.data.num_classes)
    config.model.input.type  # pylint: disable=pointless-statement
  except (AttributeError, KeyError):
    raise ExportFailure(f'{workdir}/config.json is not a perceiver_jax run '
                        'config (no data.num_classes or model.input).'
                        ) from None
  try:
    hf_config = tf_format.transformers_config(config.model.to_dict(),
                                              num_classes)
  except tf_format.CheckpointError as e:
    raise ExportFailure(str(e)) from None
  directory = os.path.join(workdir, 'checkpoints')
  restored = finetune.read_checkpoint(
      directory, state_lib.abstract_state(config.model, num_classes,
                                          config.optimizer), step)
  state, step = restored.state, restored.step
  if state is None:
    raise ExportFailure(f'no checkpoint in {directory}.')
  if restored.skipped:  # No silent fall-back to an older step.
    damaged, reason = restored.skipped[0]
    raise ExportFailure(
        f'checkpoint {directory}/{damaged} is damaged ({reason}); the newest '
        f'intact one is step {step}: pass --step={step} to export that one.')
  tensors = tf_format.from_params(state.params, hf_config)

  def build(scratch: str) -> None:
    with open(os.path.join(scratch, 'config.json'), 'w') as f:
      json.dump(hf_config, f, indent=2, sort_keys=True)
    # 'format': 'pt' is the metadata transformers expects of its own files.
    safetensors.numpy.save_file(tensors,
                                os.path.join(scratch, 'model.safetensors'),
                                metadata={'format': 'pt'})

  writers.build_directory(target, build)  # All or nothing.
  return (f'{hf_config["architectures"][0]}: step {step}, '
          f'{tf_format.count(state.params):,} parameters in {len(tensors)} '
          f'tensors written to {target}')
