"""Hyperparameter sweeps: points, their runs, and a table of results.

A point is a dict of config overrides, e.g. `{'config.seed': 1}`. A config
may define `get_hyper(h)` (or `get_hyper(h, arg)`, with the text after ':'
in `--config=configs/x.py:arg`) returning points built with this module's
`sweep`, `fixed`, `product` and `zip`. `--sweep='FIELD=V1,V2'` axes from
the command line are crossed (or zipped) and then crossed with those.

Each point trains in `ROOT/<point name>`; a finished point is skipped when
the sweep runs again, an unfinished one resumes. `summarize` writes
`ROOT/summary.md` and `ROOT/summary.csv`.
"""

import builtins
import csv
import functools
import importlib.util
import inspect
import itertools
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from typing import Any, Iterable, Mapping, Optional, Sequence

from ml_collections import config_dict

from perceiver_jax import checks
from perceiver_jax import cli
from perceiver_jax.train import run_config
from perceiver_jax.train import writers

Point = dict[str, Any]

SWEEP_FILE = 'sweep.json'  # ROOT/sweep.json: the config and the points.
POINT_FILE = 'sweep_point.json'  # ROOT/<point>/sweep_point.json: status.
LOG_FILE = 'train.log'  # ROOT/<point>/train.log: the run's output.
_FIELD = r'[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*'


def _check_key(key: str) -> None:
  if not isinstance(key, str) or not re.fullmatch(r'config\.' + _FIELD, key):
    raise ValueError(f"A sweep key must look like 'config.model.x', got "
                     f'{key!r}.')


def sweep(key: str, values: Iterable[Any]) -> list[Point]:
  """One point per value of the config field `key` ('config.a.b')."""
  _check_key(key)
  points = [{key: value} for value in values]
  if not points:
    raise ValueError(f'h.sweep({key!r}, ...) got no values.')
  return points


def fixed(key: str, value: Any) -> list[Point]:
  """A single point setting `key` to `value` (to combine with others)."""
  return sweep(key, [value])


def _combine(sweeps: Sequence[Sequence[Point]], what: str) -> list[Point]:
  """Merges the point tuples of `itertools.product` or `zip` (`what`)."""
  if not sweeps:
    raise ValueError(f'h.{what} needs at least one sweep.')
  for s in sweeps:
    if not isinstance(s, (list, tuple)) or not all(
        isinstance(p, dict) for p in s):
      raise ValueError(f'h.{what} takes a list of sweeps (lists of dicts), '
                       f'got {s!r}.')
  lengths = [len(s) for s in sweeps]
  if what == 'zip' and len(set(lengths)) != 1:
    raise ValueError(f'h.zip needs sweeps of equal length, got lengths '
                     f'{lengths}.')
  combine = itertools.product if what == 'product' else builtins.zip
  points = []
  for parts in combine(*sweeps):
    merged: Point = {}
    for part in parts:
      clash = [key for key in part if key in merged]
      if clash:
        raise ValueError(f'{clash[0]!r} is set by more than one of the '
                         'combined sweeps.')
      merged.update(part)
    points.append(merged)
  return points


def product(sweeps: Sequence[Sequence[Point]]) -> list[Point]:
  """Every combination of the sweeps' points, the first varying slowest."""
  return _combine(sweeps, 'product')


def zip(sweeps: Sequence[Sequence[Point]]) -> list[Point]:  # pylint: disable=redefined-builtin
  """The i-th points of all sweeps merged; the sweeps must be equally long."""
  return _combine(sweeps, 'zip')


def format_value(value: Any) -> str:
  """A value as `--config.x=...` parses it back."""
  if isinstance(value, (list, tuple)):
    return '(' + ','.join(format_value(v) for v in value) + (
        ',)' if len(value) == 1 else ')')
  return str(value)


def _short_keys(keys: Sequence[str]) -> dict[str, str]:
  """Each key's last component, or more of it where the last is ambiguous."""
  short = {}
  for key in keys:
    parts = key.split('.')[1:]
    for n in range(1, len(parts) + 1):
      if sum(k.split('.')[1:][-n:] == parts[-n:] for k in keys) == 1:
        break
    short[key] = '.'.join(parts[-n:])
  return short


def point_name(point: Mapping[str, Any],
               keys: Optional[Sequence[str]] = None) -> str:
  """A directory name such as 'share_weights=False,seed=1', its keys
  shortened alike over `keys` (the sweep's; default the point's)."""
  keys = list(keys or point)
  short = _short_keys(keys)
  items = []
  for key in keys:
    if key in point:
      value = re.sub(r'[^A-Za-z0-9_.+-]+', '_', format_value(point[key]))
      items.append(f'{short[key]}={value.strip("_") or "_"}')
  return ','.join(items) or 'default'


def load_config_module(config: str):
  """(module, arg) of a config spec 'path/to/config.py[:arg]'."""
  path, _, arg = config.partition(':')
  if not os.path.isfile(path):
    raise cli.UsageError(f'config file {path} not found; give '
                         '--config=path/to/config.py[:arg], e.g. '
                         '--config=configs/digits.py.')
  name = '_sweep_config_' + re.sub(r'\W', '_', os.path.abspath(path))
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module, arg


def get_points(config: str, axes: Sequence[str] = (), *,
               zip_axes: bool = False) -> list[Point]:
  """The config's `get_hyper` points (varying slowest) crossed with the
  `--sweep` axes'; UsageError for neither, a bad axis or repeated points,
  ValueError for a None where the config's default is not None."""
  module, arg = load_config_module(config)
  base = module.get_config(arg) if arg else module.get_config()
  get_hyper = getattr(module, 'get_hyper', None)
  points = None
  if get_hyper is not None:
    h = sys.modules[__name__]
    takes_arg = len(inspect.signature(get_hyper).parameters) > 1
    points = [dict(p) for p in (get_hyper(h, arg) if takes_arg else
                                get_hyper(h))]
    if not points:
      raise ValueError(f'get_hyper of {config!r} returned no points.')
    for key in sweep_keys(points):
      _check_key(key)
    _check_none_overrides(config, base, points)
  if axes:
    line_points = command_line_points(base, axes, zip_axes=zip_axes)
    clash = sorted(set(sweep_keys(points or [])) & set(line_points[0]))
    if clash:
      raise cli.UsageError(
          f'--sweep sets {", ".join(k[len("config."):] for k in clash)}, '
          f'which get_hyper of {config} sweeps too: drop that --sweep.')
    points = product([points or [{}], line_points])
  elif points is None:
    raise cli.UsageError(
        f'{config.partition(":")[0]} defines no get_hyper(h) and no --sweep '
        "was given: add one or more --sweep='FIELD=V1,V2,...' (e.g. "
        "--sweep='seed=0,1,2') or define get_hyper in the config.")
  names = [point_name(p, sweep_keys(points)) for p in points]
  repeated = sorted({n for n in names if names.count(n) > 1})
  if repeated:
    raise cli.UsageError(f'the sweep of {config} repeats points '
                         f'{repeated}: give each value once.')
  return points


def _check_none_overrides(config: str, base: config_dict.ConfigDict,
                          points: Sequence[Point]) -> None:
  """ValueError if a point sets to None a field whose default is not None
  (`point_command` leaves such an override out)."""
  for key in sorted({k for p in points for k, v in p.items() if v is None}):
    value = base
    for part in key.split('.')[1:]:
      if part not in value:
        raise ValueError(f'{key} is not a field of {config!r}.')
      value = value[part]
    if value is not None:
      raise ValueError(
          f'A point sets {key}=None but its default in {config!r} is '
          f'{value!r}; a sweep can only set a field to None where None is '
          'its default.')


def split_values(text: str) -> list[str]:
  """Splits 'a,(1,2),[3,4]' at the commas outside brackets and quotes."""
  parts, depth, quote, current = [], 0, None, ''
  for char in text:
    if quote:
      quote = None if char == quote else quote
    elif char in '\'"':
      quote = char
    elif char in '([{':
      depth += 1
    elif char in ')]}':
      depth -= 1
    elif char == ',' and depth == 0:
      parts.append(current)
      current = ''
      continue
    current += char
  parts.append(current)
  return [p.strip() for p in parts]


def parse_axis(spec: str) -> tuple[str, list[str]]:
  """'optimizer.lr=1e-3,3e-3' -> ('config.optimizer.lr', ['1e-3', '3e-3']);
  the leading 'config.' is optional."""
  field, equals, values = spec.partition('=')
  field = field.strip().removeprefix('config.')
  example = "--sweep='optimizer.learning_rate=3e-4,1e-3'"
  if not equals or not re.fullmatch(_FIELD, field):
    raise cli.UsageError(f'--sweep={spec!r} is not FIELD=VALUE,VALUE,...; '
                         f'write it like {example}.')
  values = split_values(values)
  if not all(values):
    raise cli.UsageError(f'--sweep={spec!r} has an empty value; list the '
                         f'values with single commas, like {example}.')
  return 'config.' + field, values


def command_line_points(config: config_dict.ConfigDict, axes: Sequence[str],
                        *, zip_axes: bool = False) -> list[Point]:
  """The product (or with `zip_axes`, the zip) of `--sweep` axes, each
  value parsed by the type of its field in `config`."""
  sweeps = []
  for spec in axes:
    key, texts = parse_axis(spec)
    if any(key in s[0] for s in sweeps):
      raise cli.UsageError(f'--sweep gives {key[len("config."):]} twice; '
                           'list all its values in one --sweep.')
    sweeps.append(sweep(key, [cli.parse_override(config, key, t)
                              for t in texts]))
  if not zip_axes:
    return product(sweeps)
  if len({len(s) for s in sweeps}) != 1:
    counts = ', '.join(f'{next(iter(s[0]))[len("config."):]} has {len(s)}'
                       for s in sweeps)
    raise cli.UsageError(f'--zip pairs the --sweep axes value by value, '
                         f'but they differ in length ({counts}): give '
                         'them equally many values, or drop --zip to '
                         'cross them.')
  return zip(sweeps)


def bare_summarize(argv: list[str]) -> list[str]:
  """`argv` with a bare `--summarize` given the value of `--workdir`."""
  argv = list(argv)
  for i, arg in enumerate(argv):
    if arg == '--summarize' and (i + 1 == len(argv) or
                                 argv[i + 1].startswith('-')):
      workdirs = [a[len('--workdir='):] for a in argv
                  if a.startswith('--workdir=')]
      if not workdirs:
        raise cli.UsageError('a bare --summarize summarises --workdir=DIR; '
                             'give it, or --summarize=DIR.')
      argv[i] = f'--summarize={workdirs[-1]}'
  return argv


def sweep_keys(points: Sequence[Point]) -> list[str]:
  """The keys of all points, in order of first appearance."""
  return list(dict.fromkeys(k for p in points for k in p))


def point_command(config: str, point: Mapping[str, Any], workdir: str, *,
                  python: str = sys.executable) -> list[str]:
  """The training command of one point; an override to None is left out
  (`get_points` makes sure None is the default)."""
  return [python, '-m', 'experiments.train', f'--config={config}',
          *(f'--{key}={format_value(value)}' for key, value in point.items()
            if value is not None),
          f'--workdir={workdir}']


def _read_json(path: str) -> dict[str, Any]:
  return writers.read_json(path) if os.path.exists(path) else {}


class _Run:
  """One point's training process and its status file `POINT_FILE`."""

  def __init__(self, name: str, workdir: str, command: list[str],
               status: dict[str, Any]):
    self.name, self.workdir, self.command = name, workdir, command
    self.status = status
    self.log_path = os.path.join(workdir, LOG_FILE)

  def _save(self, **updates: Any) -> None:
    self.status.update(updates)
    writers.write_json(os.path.join(self.workdir, POINT_FILE), self.status)

  def start(self) -> str:
    """Starts the process; returns the line that says so."""
    resuming = os.path.isdir(os.path.join(self.workdir, 'checkpoints'))
    os.makedirs(self.workdir, exist_ok=True)
    self._save(finished=False, attempts=self.status.get('attempts', 0) + 1)
    self.log = open(self.log_path, 'a')
    self.start_time = time.time()
    self.process = subprocess.Popen(self.command, stdout=self.log,
                                    stderr=subprocess.STDOUT)
    return (f'{"resuming" if resuming else "running"} {self.name} '
            f'(log: {self.log_path})')

  def finish(self) -> int:
    """Waits for the process and records its exit code and wall time."""
    code = self.process.wait()
    self.log.close()
    wall_s = self.status.get('wall_s', 0.0) + time.time() - self.start_time
    self._save(wall_s=wall_s, returncode=code, finished=code == 0)
    return code


def run_sweep(config: str, root: str, *, axes: Sequence[str] = (),
              zip_axes: bool = False, parallel: int = 1,
              dry_run: bool = False, python: str = sys.executable,
              out=None) -> int:
  """Runs each point in `root/<point_name>`, `parallel` at once, once all
  are valid (`dry_run`: prints the commands); returns the failure count."""
  checks.positive_int(parallel, 'parallel')
  if os.path.exists(root) and not os.path.isdir(root):
    raise cli.UsageError(f'--workdir={root} is a file; give a directory '
                         '(new, or the one of the sweep to resume).')
  points = get_points(config, axes, zip_axes=zip_axes)
  keys = sweep_keys(points)
  names = [point_name(p, keys) for p in points]
  say = lambda line: print(line, file=out or sys.stdout, flush=True)
  todo = []
  for name, point in builtins.zip(names, points):
    workdir = os.path.join(root, name)
    command = point_command(config, point, workdir, python=python)
    status = _read_json(os.path.join(workdir, POINT_FILE))
    if dry_run:
      say(shlex.join(command))
    elif status.get('finished'):
      say(f'skipping {name}: finished')
    else:
      status.update(config=config, overrides=point, command=command)
      todo.append(_Run(name, workdir, command, status))
  if dry_run:
    return 0
  os.makedirs(root, exist_ok=True)
  writers.write_json(os.path.join(root, SWEEP_FILE), dict(
      config=config, keys=keys, points=points, names=names))

  failed = 0
  running: list[_Run] = []
  try:
    while todo or running:
      while todo and len(running) < parallel:
        running.append(todo.pop(0))
        say(running[-1].start())
      time.sleep(0.2)
      for run in [r for r in running if r.process.poll() is not None]:
        running.remove(run)
        if run.finish() == 0:
          say(f'finished {run.name} in {time.time() - run.start_time:.0f} s')
        else:
          failed += 1
          say(f'FAILED {run.name} (exit code {run.status["returncode"]}); '
              f'see {run.log_path}')
  except KeyboardInterrupt:
    for run in running:
      run.process.terminate()
      run.finish()
    say('interrupted; run the same command again to resume.')
    raise
  return failed


def _num_params(config) -> int:
  """Parameter count of the run's model, from shapes only."""
  # pylint: disable=g-import-not-at-top
  import jax
  from perceiver_jax.model import factory
  from perceiver_jax.train import state as state_lib
  # pylint: enable=g-import-not-at-top
  forward = factory.transform_classifier(config.model,
                                         config.data.num_classes)
  return state_lib.num_params(jax.eval_shape(
      functools.partial(forward.init, is_training=False),
      jax.random.PRNGKey(0), factory.example_batch(config.model.input, 1)))


def _in_order(first: Sequence[str], found: Iterable[str]) -> list[str]:
  """`found`, those named in `first` first and in its order."""
  return sorted(found, key=lambda n: first.index(n) if n in first
                else len(first))


def summary_rows(root: str
                 ) -> tuple[list[str], list[dict[str, Any]], str, str]:
  """(swept keys, rows, metric column, 'max' or 'min'): a row per point
  with its swept values, `final`, `best`, `steps`, `params`, `wall_s` and
  `finished`, best `final` first and unevaluated rows last."""
  if not os.path.isdir(root):
    raise cli.UsageError(f'{root} is not a directory; --summarize takes the '
                         '--workdir of a sweep.')
  saved = _read_json(os.path.join(root, SWEEP_FILE))
  names = _in_order(saved.get('names', []), sorted(
      d for d in os.listdir(root)
      if os.path.exists(os.path.join(root, d, POINT_FILE))))
  if not names:
    raise cli.UsageError(f'{root} holds no sweep points (no */{POINT_FILE}); '
                         '--summarize takes the --workdir of a sweep.')
  statuses = [_read_json(os.path.join(root, n, POINT_FILE)) for n in names]
  # The order the config gave (the points' files sort their keys).
  keys = _in_order(saved.get('keys', []), sweep_keys(
      [s.get('overrides', {}) for s in statuses]))
  rows = []
  metric_name, mode = None, 'max'
  for name, status in builtins.zip(names, statuses):
    workdir = os.path.join(root, name)
    overrides = status.get('overrides', {})
    row = dict(point=name, final=None, best=None, steps=0, params=None,
               wall_s=status.get('wall_s'),
               finished=bool(status.get('finished')),
               **{k: overrides.get(k) for k in keys})
    if run_config.exists(workdir):
      config = run_config.read(workdir)
      mode = config.evaluator.get('metric_mode', 'max')
      column = f'{config.evaluator.split}/{config.evaluator.metric}'
      metric_name = metric_name or column
      records = (writers.read_metrics(workdir) if os.path.exists(
          os.path.join(workdir, writers.METRICS_FILE)) else [])
      values = [r[column] for r in records if column in r]
      if values:
        row.update(final=values[-1],
                   best=max(values) if mode == 'max' else min(values))
      row.update(steps=max((r['step'] for r in records), default=0),
                 params=_num_params(config))
    rows.append(row)
  sign = -1 if mode == 'max' else 1
  rows.sort(key=lambda r: (r['final'] is None,
                           0 if r['final'] is None else sign * r['final']))
  return keys, rows, metric_name or 'metric', mode


def _cell(value: Any) -> str:
  """A result's table cell: blank for None, floats to 4 places."""
  if value is None:
    return ''
  if isinstance(value, float):
    return f'{value:.4f}'
  if isinstance(value, int) and value >= 10_000:
    return f'{value:,}'
  return str(value)


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  line = lambda cells: '| ' + ' | '.join(cells) + ' |\n'
  return line(header) + '|---' * len(header) + '|\n' + ''.join(
      map(line, rows))


def seed_statistics(keys: Sequence[str], rows: Sequence[Mapping[str, Any]],
                    mode: str = 'max') -> list[dict[str, Any]]:
  """Per setting of the keys but 'config.seed', best first: 'setting',
  'name', 'mean' and sample 'std' (None for one seed) of `final`, 'seeds'
  and 'params'."""
  others = [k for k in keys if k != 'config.seed']
  groups: dict[str, list] = {}
  for row in rows:
    if row['final'] is not None:
      name = point_name({k: row[k] for k in others}, others)
      groups.setdefault(name, []).append(row)
  result = []
  for name, members in groups.items():
    finals = [m['final'] for m in members]
    result.append(dict(
        setting={k: members[0][k] for k in others}, name=name,
        mean=statistics.fmean(finals),
        std=statistics.stdev(finals) if len(finals) > 1 else None,
        seeds=len(finals), params=members[0]['params']))
  sign = -1 if mode == 'max' else 1
  result.sort(key=lambda g: sign * g['mean'])
  return result


def summarize(root: str) -> str:
  """Writes `root/summary.md` and `root/summary.csv`; returns the Markdown."""
  keys, rows, metric, mode = summary_rows(root)
  short = _short_keys(keys)
  text = _markdown(
      [short[k] for k in keys] + [f'final {metric}', f'best {metric}',
                                  'steps', 'params', 'wall (s)'],
      [[format_value(row[k]) for k in keys] +
       [_cell(row[c]) for c in ('final', 'best', 'steps', 'params')] +
       ['' if row['wall_s'] is None else f'{row["wall_s"]:.0f}']
       for row in rows])
  if 'config.seed' in keys:
    others = [k for k in keys if k != 'config.seed']
    groups = seed_statistics(keys, rows, mode)
    text += f'\nOver seeds ({metric}, final):\n\n' + _markdown(
        [short[k] for k in others] + ['mean final', 'std', 'seeds',
                                      'params'],
        [[format_value(g['setting'][k]) for k in others] +
         [_cell(g[c]) for c in ('mean', 'std', 'seeds', 'params')]
         for g in groups])
    if groups:
      best = groups[0]
      spread = '' if best['std'] is None else f' ± {best["std"]:.4f}'
      text += (f'\nBest: {best["name"]} (mean final {metric} '
               f'{best["mean"]:.4f}{spread} over {best["seeds"]} seed'
               f'{"s" if best["seeds"] > 1 else ""}; {mode} is best).\n')
  elif rows and rows[0]['final'] is not None:
    text += (f'\nBest: {rows[0]["point"]} (final {metric} '
             f'{rows[0]["final"]:.4f}; {mode} is best).\n')
  with open(os.path.join(root, 'summary.md'), 'w') as f:
    f.write(text)
  columns = ('final', 'best', 'steps', 'params', 'wall_s', 'finished')
  with open(os.path.join(root, 'summary.csv'), 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['point', *keys, f'final {metric}', f'best {metric}',
                     *columns[2:]])
    for row in rows:
      writer.writerow([row['point'], *(format_value(row[k]) for k in keys),
                       *('' if row[c] is None else row[c] for c in columns)])
  return text
