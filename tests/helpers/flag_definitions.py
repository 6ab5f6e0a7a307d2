r"""Reads commands' flags, and configs' fields, from the code itself.

For `tests/test_docs.py`:

  python tests/helpers/flag_definitions.py command:experiments.train \
      command:perceiver_jax.data.imagenet \
      configs:configs/digits.py,configs/x.py:arg

prints one line `FLAG_DEFINITIONS {job: result}`. Every `experiments`
module defines absl flags into the one global `flags.FLAGS`, so two of them
clash in one process: each job runs in a forked child of a parent that has
already imported the heavy third-party packages once (TensorFlow, TFDS, JAX),
so every child starts from the same clean flags and modules, cheaply.

`command:MODULE` runs the module as `__main__` (as `python -m MODULE`
would), so flags defined under `if __name__ == '__main__':` are defined
too, and stops it where it would parse its command line: at `absl.app.run`
or at argparse's `parse_args`. Its result: `flags` (every flag name the
command accepts, absl's own included), `booleans` (those that also take the
`--noNAME` form) and `config_files` (config-file flags, each with its
default file).

`configs:SPEC,SPEC...` loads each `path[:arg]` as ml_collections' config
flags do (`get_config(arg)`, or `get_config()` without an argument). Its
result: `{spec: [every dotted field path]}`, or `{spec: {"error": ...}}`.
(A spec's argument may itself hold commas, so specs are split before each
`configs/`.)
"""

import argparse
import importlib.util
import json
import os
import re
import runpy
import sys
import traceback
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Stop(Exception):
  """Raised where the command would start parsing its arguments."""


def command_flags(module: str) -> dict[str, Any]:
  """The flags `python -m module` defines (see the module docstring)."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  parsers = []

  def fake_run(*args, **kwargs):
    del args, kwargs
    raise _Stop()

  def fake_parse(self, *args, **kwargs):
    del args, kwargs
    parsers.append(self)
    raise _Stop()

  app.run = fake_run
  argparse.ArgumentParser.parse_args = fake_parse
  argparse.ArgumentParser.parse_known_args = fake_parse
  sys.argv = [module]
  try:
    runpy.run_module(module, run_name='__main__', alter_sys=True)
  except _Stop:
    pass
  else:
    raise SystemExit(f'{module} finished without parsing a command line.')
  if parsers:  # An argparse command: its options only.
    names, booleans = set(), set()
    for action in parsers[-1]._actions:  # pylint: disable=protected-access
      for option in action.option_strings:
        if option.startswith('--'):
          names.add(option[2:])
    return {'flags': sorted(names), 'booleans': sorted(booleans),
            'config_files': {}}
  config_files = {}
  booleans = []
  for name in flags.FLAGS:
    flag = flags.FLAGS[name]
    if isinstance(flag, flags.BooleanFlag):
      booleans.append(name)
    # ml_collections' config-file flags keep the file name as the default
    # text (their parsed value is the ConfigDict).
    if type(flag).__name__ == '_ConfigFlag':
      config_files[name] = flag.default_as_str.strip("'\"")
  return {'flags': sorted(flags.FLAGS), 'booleans': sorted(booleans),
          'config_files': config_files}


def _field_paths(config: Any, prefix: str = '') -> list[str]:
  paths = []
  for key in config.keys():
    path = f'{prefix}{key}'
    paths.append(path)
    value = config[key]
    if hasattr(value, 'keys') and callable(value.keys):
      paths.extend(_field_paths(value, path + '.'))
  return paths


def config_fields(spec: str) -> Any:
  """Every dotted field path of the config `spec` ('path[:arg]')."""
  path, _, arg = spec.partition(':')
  file_path = os.path.join(REPO, path)
  if not os.path.isfile(file_path):
    return {'error': f'no config file {path}'}
  module_spec = importlib.util.spec_from_file_location(
      f'_docs_config_{abs(hash(path))}', file_path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
    config = module.get_config(arg) if arg else module.get_config()
  except Exception as e:  # pylint: disable=broad-except
    return {'error': f'{type(e).__name__}: {e}'}
  return _field_paths(config)


# Imported once in the parent, before forking: they are what makes a job
# slow (seconds each), and no job needs a fresh copy of them.
_PRELOAD = ('tensorflow', 'tensorflow_datasets', 'jax', 'haiku', 'optax',
            'ml_collections', 'absl.flags', 'absl.app')


def run_job(job: str) -> Any:
  """The result of one job (see the module docstring)."""
  kind, _, what = job.partition(':')
  if kind == 'command':
    return command_flags(what)
  if kind == 'configs':
    specs = re.split(r',(?=configs/)', what)
    return {spec: config_fields(spec) for spec in specs}
  raise SystemExit(f'unknown job {job!r}')


def _in_child(job: str) -> Any:
  """`run_job(job)` in a forked child; its JSON comes back through a pipe."""
  read_end, write_end = os.pipe()
  pid = os.fork()
  if pid == 0:  # The child.
    os.close(read_end)
    status = 0
    try:
      payload = json.dumps({'result': run_job(job)})
    except BaseException as e:  # pylint: disable=broad-except
      payload = json.dumps({'error': f'{job}: {type(e).__name__}: {e}\n'
                                     f'{traceback.format_exc()}'})
      status = 1
    with os.fdopen(write_end, 'w') as f:
      f.write(payload)
    os._exit(status)  # pylint: disable=protected-access
  os.close(write_end)
  with os.fdopen(read_end) as f:
    payload = f.read()
  os.waitpid(pid, 0)
  answer = json.loads(payload) if payload else {'error': f'{job}: no answer'}
  if 'error' in answer:
    raise SystemExit(answer['error'])
  return answer['result']


def main() -> None:
  sys.path.insert(0, REPO)
  for name in _PRELOAD:
    importlib.import_module(name)
  results = {job: _in_child(job) for job in sys.argv[1:]}
  sys.stdout.write('\nFLAG_DEFINITIONS ' + json.dumps(results) + '\n')


if __name__ == '__main__':
  main()
