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


TASKS: dict[str, Task] = {
    task.name: task for task in (
        Task('digits', 'perceiver_jax.data.digits'),
        Task('imagenet', 'perceiver_jax.data.imagenet'),
        # 'train' is the loader's name for config.data.train_split
        # (balanced_train+unbalanced_train by default).
        Task('audioset', 'perceiver_jax.data.audioset'),
        Task('modelnet40', 'perceiver_jax.data.modelnet40'),
        Task('shapes', 'perceiver_jax.data.shapes'),
    )
}


def get_task(name: str) -> Task:
  """The registered task `name`, or a ValueError listing the known ones."""
  if name not in TASKS:
    raise ValueError(f'Unknown config.task {name!r}; known tasks: '
                     f'{sorted(TASKS)}.')
  return TASKS[name]
