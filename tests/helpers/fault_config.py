"""A config for command-line tests of fault handling (see fault_data.py).

`--config=tests/helpers/fault_config.py:nan_at_step=3` trains the digits runlocal
model on the 'digits_faults' task with NaN pixels in step 3's batch.
"""

from tests.helpers import fault_data


def get_config(arg: str = ''):
  fault_data.register()  # In the process that loads this config.
  fields = {}
  for item in filter(None, arg.split(',')):
    name, _, value = item.partition('=')
    fields[name] = int(value)
  return fault_data.config(**fields)
