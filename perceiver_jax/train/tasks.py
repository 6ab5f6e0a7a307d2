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
    for name in ('digits', 'imagenet', 'audioset', 'modelnet40', 'shapes')}


def get_task(name: str) -> Task:
  """The registered task `name`, or a ValueError listing the known ones."""
  if name not in TASKS:
    raise ValueError(f'Unknown config.task {name!r}; known tasks: '
                     f'{sorted(TASKS)}.')
  return TASKS[name]
