"""Fine-tuning from a checkpoint (`config.init_from`) and linear probes.

`config.init_from` names a run directory (its newest checkpoint) or one of
its `checkpoints/<step>`, an imported transformers checkpoint included. The
new run takes that run's model (keeping this config's input key, image size
and channels) and parameters, re-initialising a head of other shapes; any
other difference is refused before anything is written. A resumption reads
its own checkpoint, never `init_from`. `config.finetune.freeze_encoder`
zeroes every gradient and update but the head's, in an optimizer state of the
plain optimizer's structure.
"""

import dataclasses
import os
from typing import Any, Optional

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from perceiver_jax import cli
from perceiver_jax.train import checkpoint as checkpoint_lib
from perceiver_jax.train import run_config
from perceiver_jax.train import state as state_lib
from perceiver_jax.train import writers

# Top-level modules of the classification heads (`factory.classifier_
# forward`); the conv net's head is its `logits` layer.
HEAD_MODULES = ('classification_head', 'classification_decoder')
# Input fields the data decides, kept from the fine-tuning config.
_DATA_INPUT_FIELDS = ('key', 'index_dims', 'raw_channels')


class FinetuneError(cli.UsageError):
  """`config.init_from` cannot initialise this config's run."""


def is_head(module: str) -> bool:
  """Whether a Haiku module name belongs to the classification head."""
  return module.split('/')[0] in HEAD_MODULES or module.endswith('/logits')


@dataclasses.dataclass
class Plan:
  """What `prepare` read: the parameters to start from, and the report."""
  params: dict[str, dict[str, np.ndarray]]  # Module -> name -> array.
  summary: str


def read_checkpoint(directory: str, abstract: Any, step: Optional[int]
                    ) -> checkpoint_lib.Restored:
  """The checkpoint of `step`, else the newest intact one, shaped as
  `abstract`; read-only, so a damaged newer one is listed, not moved."""
  target = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), abstract)
  checkpointer = checkpoint_lib.Checkpointer(directory, read_only=True)
  try:
    if step is None:
      return checkpointer.restore_newest(target, set_aside=False)
    return checkpoint_lib.Restored(checkpointer.restore(target, step), step,
                                   [])
  finally:
    checkpointer.close()


def _shapes(params: Any) -> dict[str, tuple[int, ...]]:
  return {f'{module}/{name}': tuple(value.shape)
          for module, values in params.items()
          for name, value in values.items()}


def _hint(shape: tuple[int, ...], source_model: Any, model: Any) -> str:
  """What would make a refused parameter of `shape` (there) fit."""
  theirs, ours = source_model.input, model.input
  size = tuple(int(n) for n in theirs.get('index_dims') or ())
  if (size and size != tuple(ours.get('index_dims') or ()) and shape and
      shape[0] == np.prod(size)):  # One learned vector per position.
    return (f' Its learned positions are sized for {size} images: pass '
            f'--config.data.image_shape="{size}" to resize the images to '
            'that size.')
  if theirs.get('raw_channels') != ours.get('raw_channels'):
    return (f' It reads {theirs.raw_channels}-channel images: pass '
            f'--config.data.channels={theirs.raw_channels}.')
  return ''


def prepare(config: ml_collections.ConfigDict, workdir: str
            ) -> Optional[Plan]:
  """Sets `config.model` from `config.init_from` and reads its parameters.

  Call before anything is written to `workdir`. Returns None without
  `init_from`, or when `workdir` holds a checkpoint (a resumption keeps the
  run's own model). FinetuneError: `init_from` is not a run, or a parameter
  other than the head's differs in shape.
  """
  init_from = config.get('init_from')
  if not init_from:
    return None
  own = os.path.join(workdir, 'checkpoints')
  if os.path.isdir(own) and any(n.isdigit() for n in os.listdir(own)):
    if run_config.exists(workdir):
      config.model = run_config.read(workdir).model
    return None
  # A run directory (its newest checkpoint) or one of its checkpoints.
  path = os.path.abspath(os.path.expanduser(init_from))
  base = os.path.basename(path)
  step = int(base) if base.isdigit() else None
  checkpoint_dir = (os.path.join(path, 'checkpoints') if step is None else
                    os.path.dirname(path))
  run_dir = os.path.dirname(checkpoint_dir)
  if not run_config.exists(run_dir):
    raise FinetuneError(
        f'config.init_from={init_from} holds no run (no config.json); give '
        'a run directory or one of its checkpoints/<step> directories.')
  source = run_config.read(run_dir)
  if 'model' not in source or 'num_classes' not in source.get('data', {}):
    raise FinetuneError(f'{run_config.path(run_dir)} is not a perceiver_jax '
                        'run config (no model or data.num_classes).')
  model = source.model.copy_and_resolve_references()
  for field in _DATA_INPUT_FIELDS:
    if field in model.input and field in config.model.input:
      model.input[field] = config.model.input[field]
  config.model = model

  wanted = state_lib.abstract_state(model, config.data.num_classes,
                                    config.optimizer).params
  stored = state_lib.abstract_state(source.model, source.data.num_classes,
                                    source.optimizer)
  ours, theirs = _shapes(wanted), _shapes(stored.params)
  changed = []  # Head parameters of another shape, re-initialised.
  for name in sorted(set(ours) | set(theirs)):
    if ours.get(name) == theirs.get(name):
      continue
    if is_head(name.rsplit('/', 1)[0]):
      changed.append(f'{name} {theirs.get(name)} -> {ours.get(name)}')
      continue
    has = lambda shapes: (f'shape {shapes[name]}' if name in shapes else
                          'no such parameter')
    raise FinetuneError(
        f'config.init_from={init_from} does not fit this config: '
        f'parameter {name} has {has(theirs)} there and {has(ours)} here.'
        + _hint(theirs.get(name, ()), source.model, model))

  restored = read_checkpoint(checkpoint_dir, stored, step)
  if restored.state is None:
    raise FinetuneError(f'config.init_from={init_from}: no checkpoint in '
                        f'{checkpoint_dir}.')
  state, step = restored.state, restored.step
  params = {module: values for module, values in state.params.items()
            if not (changed and is_head(module))}
  groups = sorted({module.split('/')[0] for module in params})
  head = sorted({m.split('/')[0] for m in state.params if is_head(m)})
  summary = (f'Initialised from {checkpoint_dir}/{step}: restored '
             f'{len(_shapes(params))} arrays ({", ".join(groups)}); '
             + (f're-initialised the head {", ".join(head)} ('
                + '; '.join(changed) + ').' if changed else
                'the head fits and was restored too.'))
  return Plan(params=params, summary=summary)


def initial_state(plan: Plan, fresh: Any) -> Any:
  """`fresh` (host arrays) with the parameters `plan` restored."""
  if jax.process_index() == 0:
    writers.console(plan.summary)
  return fresh._replace(params={**fresh.params, **plan.params})


def optimizer(config: ml_collections.ConfigDict,
              inner: optax.GradientTransformation
              ) -> optax.GradientTransformation:
  """`inner`, updating the head only when `finetune.freeze_encoder`."""
  if not (config.get('finetune') or {}).get('freeze_encoder'):
    return inner

  def head_only(tree, params):
    keep = hk.data_structures.map(lambda module, *_: is_head(module), params)
    return jax.tree.map(lambda x, k: x if k else jnp.zeros_like(x), tree,
                        keep)

  def update(grads, state, params=None):
    # Zeroed before the update too, so that clipping by global norm and
    # LAMB's trust ratios see the head's gradients only.
    updates, state = inner.update(head_only(grads, params), state, params)
    return head_only(updates, params), state

  return optax.GradientTransformation(inner.init, update)
