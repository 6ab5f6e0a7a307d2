"""Argument checks shared by every layer (so it imports no project code)."""

from typing import Any, Sequence

import numpy as np


def positive_int(value: Any, name: str, *,
                 integer_types: tuple[type, ...] = (int,)) -> Any:
  """Returns `value` if it is a positive integer (never a bool).

  `name` names it in the ValueError; `integer_types` may add `np.integer`.
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
  """Leading batch dims, e.g. `[devices, per_device]`, as Python ints."""
  checked = tuple(dims)
  if not checked or any(
      isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1
      for d in checked):
    raise ValueError(f'batch_dims must be a non-empty sequence of positive '
                     f'integers, got {dims!r}.')
  return tuple(int(d) for d in checked)
