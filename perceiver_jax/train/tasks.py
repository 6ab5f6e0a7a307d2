"""The task registry: a config's `task` -> its data module (imported on
first use, so digits never imports TensorFlow) and training split.
"""

import dataclasses
import importlib
from types import ModuleType


@dataclasses.dataclass(frozen=True)
class Task:
  """A dataset module and the name of its training split."""
  name: str
  data_module: str
  train_split: str = 'train'

  @property
  def data(self) -> ModuleType:
    return importlib.import_module(self.data_module)


# Audioset's 'train' is its loader's name for config.data.train_split
# (balanced_train+unbalanced_train by default).
TASKS: dict[str, Task] = {
    name: Task(name, f'perceiver_jax.data.{name}')
    for name in ('digits', 'imagenet', 'audioset', 'modelnet40', 'shapes',
                 'images')}


def get_task(name: str) -> Task:
  """The registered task `name`, or a ValueError listing the known ones."""
  if name not in TASKS:
    raise ValueError(f'Unknown config.task {name!r}; known tasks: '
                     f'{sorted(TASKS)}.')
  return TASKS[name]


def complete_config(config) -> None:
  """Lets the task's data fill the config fields it decides (in place).

  A data module may define `complete_config(config)` (e.g. the class count
  of a folder of images); a no-op for the others and for a complete config.
  """
  complete = getattr(get_task(config.task).data, 'complete_config', None)
  if complete is not None:
    complete(config)
