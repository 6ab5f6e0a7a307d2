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
        Task('images', 'perceiver_jax.data.images'),
    )
}


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
