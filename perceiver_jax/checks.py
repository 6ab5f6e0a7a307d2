"""Argument checks shared by data, training and tool code.

Imports no project code, so that data code (which must not import
`perceiver_jax.model`), model code and training code can all use it.
"""

from typing import Any, Sequence

import numpy as np


def positive_int(value: Any, name: str, *,
                 integer_types: tuple[type, ...] = (int,)) -> Any:
  """Returns `value` if it is a positive integer, else raises ValueError.

  Args:
    value: the value to check; a bool is never accepted.
    name: how the error message names it (e.g. 'config.train.num_steps').
    integer_types: the accepted integer types (add `np.integer` where NumPy
      scalars are fine).

  Returns:
    `value`, unchanged.
  """
  if isinstance(value, bool) or not isinstance(value, integer_types) or (
      value < 1):
    raise ValueError(f'{name} must be a positive integer, got {value!r}.')
  return value


def one_of(value: Any, name: str, allowed: Sequence[Any]) -> Any:
  """Returns `value` if it is one of `allowed`, else raises ValueError."""
  if value not in allowed:
    raise ValueError(f'{name} must be one of {tuple(allowed)}, got '
                     f'{value!r}.')
  return value


def boolean(value: Any, name: str) -> bool:
  """Returns `value` if it is a bool, else raises ValueError."""
  if not isinstance(value, bool):
    raise ValueError(f'{name} must be a bool, got {value!r}.')
  return value


def batch_dims(dims: Sequence[int]) -> tuple[int, ...]:
  """Validates leading batch dims (a non-empty sequence of positive ints).

  Args:
    dims: e.g. `[num_local_devices, per_device_batch]`; Python or NumPy ints.

  Returns:
    The dims as a tuple of Python ints.
  """
  checked = tuple(dims)
  if not checked or any(
      isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1
      for d in checked):
    raise ValueError(f'batch_dims must be a non-empty sequence of positive '
                     f'integers, got {dims!r}.')
  return tuple(int(d) for d in checked)
