"""Tests of perceiver_jax.checks (argument checks shared by data and train)."""

import re

import numpy as np
import pytest

from perceiver_jax import checks


@pytest.mark.parametrize('value', [1, 7, 2**40])
def test_positive_int_returns_value(value):
  assert checks.positive_int(value, 'x') == value


@pytest.mark.parametrize('value', [0, -3, True, False, 2.0, '3', None,
                                   np.int64(4)])
def test_positive_int_rejects_and_names_value(value):
  with pytest.raises(ValueError) as info:
    checks.positive_int(value, 'config.train.num_steps')
  assert str(info.value) == (
      f'config.train.num_steps must be a positive integer, got {value!r}.')


def test_positive_int_numpy_only_when_asked():
  value = np.int32(5)
  assert checks.positive_int(value, 'n', integer_types=(int, np.integer)) is (
      value)
  with pytest.raises(ValueError, match=r'got np\.int32\(0\)'):
    checks.positive_int(np.int32(0), 'n', integer_types=(int, np.integer))
  with pytest.raises(ValueError, match='got True'):
    checks.positive_int(True, 'n', integer_types=(int, np.integer))


def test_batch_dims_returns_python_ints():
  dims = checks.batch_dims([np.int64(2), 3])
  assert dims == (2, 3)
  assert all(type(d) is int for d in dims)  # pylint: disable=unidiomatic-typecheck


@pytest.mark.parametrize('dims', [(), (2, 0), (True, 2), (2.0,), (-1, 4)])
def test_batch_dims_rejects(dims):
  with pytest.raises(ValueError) as info:
    checks.batch_dims(dims)
  assert str(info.value) == (
      f'batch_dims must be a non-empty sequence of positive integers, got '
      f'{dims!r}.')


def test_one_of_and_boolean():
  assert checks.one_of('start', 'placement', ('interleaved', 'start')) == (
      'start')
  with pytest.raises(ValueError, match=r"placement must be one of "
                     r"\('interleaved', 'start'\), got 'middle'\."):
    checks.one_of('middle', 'placement', ('interleaved', 'start'))
  assert checks.boolean(False, 'flag') is False
  for value in (1, 'yes', None):
    with pytest.raises(ValueError, match=f'flag must be a bool, got '
                       f'{re.escape(repr(value))}'):
      checks.boolean(value, 'flag')
