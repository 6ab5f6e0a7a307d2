"""The accelerator report: stages run within a time budget, saved as they go.

Stages, in order: `headline` (the train step's images/s and MFU at the
largest batch of `Profile.batches` that fits), `float32` and `einsum` (the
same in those modes, from the headline's batch down), `max_inputs` (the
largest square image whose batch-1 step fits) and `scaling` (the batch-1
step against M, plotted). Each stage has a cap; a stage with less time than
it needs is skipped, and one stops trying sizes once the next would overrun
(it is then `partial`). Only device out-of-memory errors mean "does not
fit"; any other error marks the stage `failed` and the next still runs.
`report.json` and `report.md` are rewritten after every attempt.
"""

import dataclasses
import functools
import gc
import json
import math
import os
import sys
import time
import traceback
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import jax
import ml_collections

from perceiver_jax.benchmarking import machine
from perceiver_jax.benchmarking import steps

STAGES = ('headline', 'float32', 'einsum', 'max_inputs', 'scaling')
JSON_NAME, MARKDOWN_NAME, PLOT_NAME = 'report.json', 'report.md', 'scaling.png'


@dataclasses.dataclass(frozen=True)
class Profile:
  """What the report measures and how long each stage may take.

  `encoder` overrides the config's encoder; `image_side` sets the image
  (None: the config's); `batches` are tried largest first; the size search
  stops within `side_tolerance` of the bracket; `scaling_inputs` is
  (smallest M, largest M, points); `min_seconds`: the least a stage needs;
  `reserve_seconds` of the budget are kept for writing the report.
  """
  config_arg: str
  encoder: Mapping[str, Any]
  image_side: Optional[int]
  batches: tuple[int, ...]
  steps: int
  warmup: int
  max_side: int
  side_tolerance: float
  scaling_inputs: tuple[int, int, int]
  caps: Mapping[str, float]
  min_seconds: Mapping[str, float]
  budget_seconds: float
  reserve_seconds: float
  compiler_options: Optional[Mapping[str, Any]] = None


# Compiles of the headline step are the unit of cost, so few sizes are
# tried. XLA plans about 4.4 GB an example for the bf16 headline step, so
# about 30 examples fill a 141 GB device.
FULL = Profile(
    config_arg='', encoder={}, image_side=None, batches=(32, 24, 16, 8),
    steps=5, warmup=2, max_side=4096, side_tolerance=0.03,
    scaling_inputs=(1024, 2**20, 4),
    caps=dict(headline=120, float32=80, einsum=70, max_inputs=120,
              scaling=80),
    min_seconds=dict(headline=30, float32=20, einsum=20, max_inputs=20,
                     scaling=15),
    budget_seconds=480, reserve_seconds=10)

# runlocal ImageNet shrunk: every stage in seconds, on any backend.
TINY = Profile(
    config_arg='runlocal', encoder=dict(
        num_blocks=1, num_cross_attends=1, num_self_attends_per_block=1),
    image_side=16, batches=(4, 2), steps=1, warmup=1, max_side=45,
    side_tolerance=0.05, scaling_inputs=(64, 1024, 2),
    caps=dict.fromkeys(STAGES, 30), min_seconds=dict.fromkeys(STAGES, 0.5),
    budget_seconds=60, reserve_seconds=1,
    compiler_options=machine.FAST_COMPILE_OPTIONS)


def is_out_of_memory(error: BaseException) -> bool:
  """Whether `error` is XLA's device out-of-memory error."""
  return (isinstance(error, jax.errors.JaxRuntimeError) and
          'RESOURCE_EXHAUSTED' in str(error))


def _short(error: BaseException) -> str:
  lines = str(error).strip().splitlines()
  return f'{type(error).__name__}: {lines[0] if lines else ""}'[:300]


def unless_out_of_memory(fn: Callable[[], Any]) -> tuple[Any, Optional[str]]:
  """`(fn(), None)`, or `(None, the error's first line)` when `fn` runs out
  of device memory; any other error propagates."""
  try:
    return fn(), None
  except Exception as e:  # pylint: disable=broad-except
    if not is_out_of_memory(e):
      raise
    message = _short(e)
  # Outside the except block, so that the traceback's device buffers are
  # freed before a smaller attempt.
  gc.collect()
  return None, message


@dataclasses.dataclass
class Search:
  """A search's outcome: the best size that fitted (`batch` or
  `largest_fit`), its `result`, every attempt or probe, and `note`: why it
  stopped early ('' if it did not)."""
  batch: Optional[int] = None
  result: Any = None
  attempts: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  largest_fit: Optional[int] = None
  smallest_fail: Optional[int] = None
  probes: list[tuple[int, bool]] = dataclasses.field(default_factory=list)
  note: str = ''
  stopped: bool = False


def largest_batch(batches: Iterable[int], run: Callable[[int], Any], *,
                  can_start: Callable[[float], bool] = lambda _: True,
                  on_attempt: Callable[[dict], None] = lambda _: None,
                  clock: Callable[[], float] = time.monotonic) -> Search:
  """Runs `run(batch)` from the largest batch down until one does not run
  out of device memory, while `can_start(seconds of the last attempt)`."""
  search, expected = Search(), 0.0
  for batch in sorted(set(batches), reverse=True):
    if not can_start(expected):
      search.note = (f'stopped before batch {batch}: the next attempt would '
                     f'overrun the stage cap')
      return search
    start = clock()
    result, error = unless_out_of_memory(functools.partial(run, batch))
    attempt = dict(batch=batch, fits=error is None, seconds=clock() - start)
    if error:
      attempt['error'] = error
    search.attempts.append(attempt)
    on_attempt(attempt)
    if error is None:
      search.batch, search.result = batch, result
      return search
    expected = attempt['seconds']
  return search


def largest_size(fits: Callable[[int], bool], start: int, *, limit: int,
                 grow: Callable[[int], int] = lambda n: 2 * n,
                 tolerance: float = 0.0, known_fit: int = 0,
                 can_start: Callable[[float], bool] = lambda _: True,
                 clock: Callable[[], float] = time.monotonic) -> Search:
  """The largest n <= `limit` with `fits(n)` (monotone): grows from `start`
  until a size fails, then bisects down to `tolerance` above the largest fit
  (or `known_fit`, never probed); `can_start` may stop it between probes."""
  if not 1 <= start <= limit or not 0 <= known_fit <= start:
    raise ValueError(f'Need 0 <= known_fit <= start <= limit and start >= 1,'
                     f' got {known_fit}, {start}, {limit}.')
  search, expected = Search(), None

  def probe(n: int) -> Optional[bool]:
    nonlocal expected
    if expected is not None and not can_start(expected):
      search.note = (f'stopped before size {n}: the next probe would overrun '
                     f'the stage cap')
      search.stopped = True
      return None
    begin = clock()
    ok = bool(fits(n))
    expected = clock() - begin
    search.probes.append((n, ok))
    return ok

  n = start
  while True:
    ok = probe(n)
    if ok is None:
      return search
    if not ok:
      search.smallest_fail = n
      break
    search.largest_fit = n
    if n >= limit:
      search.note = f'every size up to the limit {limit} fitted'
      return search
    n = min(max(grow(n), n + 1), limit)
  low, high = search.largest_fit or known_fit, search.smallest_fail
  while high - low > 1 and high > low * (1 + tolerance):
    mid = (low + high) // 2
    ok = probe(mid)
    if ok is None:
      break
    if ok:
      low = search.largest_fit = mid
    else:
      high = search.smallest_fail = mid
  if search.largest_fit is None and known_fit:
    search.largest_fit = known_fit
  return search


def grow_square_side(side: int) -> int:
  """The side of a square image with twice the pixels (rounded up)."""
  return math.ceil(side * math.sqrt(2))


def max_inputs_start(side: int, per_device_batch: Optional[int],
                     max_side: int) -> tuple[int, int]:
  """(first side to probe, side known to fit): memory grows with batch x M,
  so one image with the pixels of the headline's fitted per-device batch
  likely fits, and the headline's side does."""
  if not per_device_batch:
    return min(side, max_side), 0
  start = math.isqrt(per_device_batch * side * side)
  return max(side, min(start, max_side)), min(side, max_side)


class StageContext:
  """A running stage's `entry` in the report, its deadline, and `save`."""

  def __init__(self, report: 'Report', entry: dict[str, Any],
               deadline: float):
    self._report = report
    self.entry = entry
    self.deadline = deadline
    self.clock = report.clock

  def left(self) -> float:
    return self.deadline - self.clock()

  def can_start(self, expected_seconds: float) -> bool:
    return expected_seconds <= self.left()

  def save(self, **fields: Any) -> None:
    self.entry.update(fields)
    self._report.save()


# A stage runs with its context; returns None, or why it stopped early.
Stage = Callable[[StageContext], Optional[str]]


class Report:
  """The report's document, saved to `out_dir` on every change.

  Stages start `pending`, then run and end `done`, `partial`, `skipped`
  or `failed`. The budget counts from `start` (a `clock` reading).
  """

  def __init__(self, out_dir: str, *, budget_seconds: float,
               reserve_seconds: float, header: Mapping[str, Any],
               stages: Sequence[str] = STAGES,
               clock: Callable[[], float] = time.monotonic,
               start: Optional[float] = None):
    if not budget_seconds > 0:
      raise ValueError(f'--budget_seconds must be positive, got '
                       f'{budget_seconds}.')
    os.makedirs(out_dir, exist_ok=True)
    self.out_dir, self.clock = out_dir, clock
    self.start = clock() if start is None else start
    self.deadline = self.start + budget_seconds - reserve_seconds
    self.doc: dict[str, Any] = dict(
        header, budget_seconds=budget_seconds, elapsed_seconds=0.0,
        complete=False,
        stages={name: dict(status='pending') for name in stages})
    self.save()

  @property
  def stages(self) -> dict[str, dict[str, Any]]:
    return self.doc['stages']

  def save(self) -> None:
    """Rewrites report.json and report.md, each replaced atomically."""
    self.doc.update(elapsed_seconds=round(self.clock() - self.start, 3),
                    compile_times=compile_times(self.stages),
                    ratios=ratios(self.stages))
    for name, text in (
        (JSON_NAME, json.dumps(self.doc, indent=1, default=_jsonable)),
        (MARKDOWN_NAME, format_markdown(self.doc))):
      path = os.path.join(self.out_dir, name)
      with open(path + '.partial', 'w') as f:
        f.write(text)
      os.replace(path + '.partial', path)

  def run_stage(self, name: str, fn: Stage, *, cap_seconds: float,
                min_seconds: float) -> str:
    """Runs `fn` until `cap_seconds` or the budget's end, unless that
    leaves under `min_seconds`; returns the stage's status."""
    entry = self.stages[name]
    now = self.clock()
    left = self.deadline - now
    allotted = min(cap_seconds, left)
    entry.update(cap_seconds=cap_seconds)
    if allotted < min_seconds:
      entry.update(status='skipped', note=(
          f'skipped: {max(allotted, 0):.1f} s available (cap {cap_seconds:g}'
          f' s, {max(left, 0):.1f} s left of the budget), needs at least '
          f'{min_seconds:g} s'))
      self.save()
      return 'skipped'
    entry.update(status='running')
    self.save()
    try:
      stopped = fn(StageContext(self, entry, now + allotted))
      entry.update(dict(status='partial', note=stopped) if stopped else
                   dict(status='done'))
    except Exception as e:  # pylint: disable=broad-except
      # A bug in one stage must not cost the others their turn.
      text = traceback.format_exc()
      print(text, file=sys.stderr, flush=True)
      entry.update(status='failed', error=_short(e), traceback=text)
    entry['seconds'] = round(self.clock() - now, 3)
    self.save()
    return entry['status']

  def finish(self) -> None:
    self.doc['complete'] = True
    self.save()


def _jsonable(value: Any) -> Any:
  return value.item() if hasattr(value, 'item') else str(value)


def compile_times(stages: Mapping[str, Mapping[str, Any]]
                  ) -> list[dict[str, Any]]:
  """Lowering and compile seconds of every program compiled, by stage."""
  return [dict(stage=name, **{k: attempt.get(k) for k in (
      'batch', 'num_inputs', 'fits', 'lower_seconds', 'compile_seconds')})
          for name, entry in stages.items()
          for attempt in entry.get('attempts', [])
          if attempt.get('compile_seconds') is not None]


def ratios(stages: Mapping[str, Mapping[str, Any]]
           ) -> dict[str, Optional[float]]:
  """The headline's images/s over float32's and einsum's."""
  def rate(name):
    return (stages.get(name, {}).get('result') or {}).get('examples_per_sec')
  return {f'headline_over_{name}': (
      rate('headline') / rate(name) if rate('headline') and rate(name)
      else None) for name in ('float32', 'einsum')}


def _cell(value: Any, fmt: str = '{}') -> str:
  return '-' if value is None else fmt.format(value)


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]
           ) -> list[str]:
  return ['| ' + ' | '.join(row) + ' |' for row in (
      header, ['---'] * len(header), *rows)]


def format_markdown(doc: Mapping[str, Any]) -> str:
  """The report as Markdown: the stages' table, then the details."""
  env, stages = doc.get('environment', {}), doc['stages']
  rates = env.get('matmul_flops_per_sec') or {}
  lines = [
      f'# Perceiver GPU report: {env.get("device_kind", "?")} '
      f'x{env.get("num_devices", "?")}, JAX {env.get("jax_version", "?")}',
      '', f'Command: `{doc.get("command", "")}`; started '
      f'{doc.get("started_utc")}; {doc.get("elapsed_seconds")} s of a '
      f'{doc.get("budget_seconds")} s budget; complete: '
      f'{doc.get("complete")}; load {env.get("load_average_1m")}; dense '
      f'matmul FLOP/s float32 {_cell(rates.get("float32"), "{:.3g}")}, '
      f'bf16 {_cell(rates.get("bfloat16"), "{:.3g}")}.', '']
  rows = []
  for name, entry in stages.items():
    r = entry.get('result') or {}
    memory, step = r.get('xla_memory_bytes'), r.get('step_seconds')
    rows.append([
        name, entry['status'], _cell(r.get('precision')),
        _cell(r.get('attention_impl')), _cell(r.get('batch_size')),
        _cell(r.get('num_inputs')),
        _cell(r.get('examples_per_sec'), '{:.1f}'),
        _cell(r.get('mfu'), '{:.1%}'),
        _cell(r.get('machine_fraction'), '{:.1%}'),
        _cell(None if step is None else 1e3 * step, '{:.2f}'),
        _cell(r.get('compile_seconds'), '{:.1f}'),
        _cell(None if memory is None else memory / 2**30, '{:.2f}'),
        '; '.join(entry[k] for k in ('note', 'detail', 'error')
                  if entry.get(k)).replace('|', '/')])
  lines += _table(('stage', 'status', 'precision', 'attention', 'batch', 'M',
                   'images/s', 'MFU', 'of matmul rate', 'step ms',
                   'compile s', 'XLA memory GiB', 'note'), rows)
  ratio = doc.get('ratios', {})
  lines += ['', 'Images/s ratios: bf16 dot_product over float32: ' +
            _cell(ratio.get('headline_over_float32'), '{:.2f}x') +
            '; over bf16 einsum: ' +
            _cell(ratio.get('headline_over_einsum'), '{:.2f}x') + '.']
  largest = stages.get('max_inputs', {})
  if largest.get('largest_side'):
    side, fail = largest['largest_side'], largest.get('smallest_failing_side')
    lines += ['', f'Largest square image whose batch-1 training step fits: '
              f'{side}x{side} (M = {largest["largest_num_inputs"]}); ' + (
                  f'{fail}x{fail} ran out of memory.' if fail else
                  'no larger size was tried to failure.')]
  points = stages.get('scaling', {}).get('points') or []
  if points:
    lines += ['', 'Scaling in M (batch 1, 1D grid, headline latents):', '']
    lines += _table(('M', 'step ms', 'XLA memory MiB', 'compile s'), [[
        str(p['num_inputs']), f'{1e3 * p["step_seconds"]:.2f}',
        _cell(p.get('xla_memory_bytes') and p['xla_memory_bytes'] / 2**20,
              '{:.1f}'), f'{p["compile_seconds"]:.1f}'] for p in points])
    if stages['scaling'].get('plot'):
      lines += ['', f'![scaling]({stages["scaling"]["plot"]})']
  if doc.get('compile_times'):
    lines += ['', 'Compile times:', '']
    lines += _table(('stage', 'batch', 'M', 'fits', 'lower s', 'compile s'), [[
        r['stage'], _cell(r['batch']), _cell(r['num_inputs']),
        _cell(r['fits']), _cell(r['lower_seconds'], '{:.1f}'),
        f'{r["compile_seconds"]:.1f}'] for r in doc['compile_times']])
  return '\n'.join(lines) + '\n'


def with_square_image(config: ml_collections.ConfigDict,
                      side: int) -> ml_collections.ConfigDict:
  """A copy of `config` on side x side images (M = side^2 pixels)."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.data.image_shape = (side, side)
    config.model.input.index_dims = (side, side)
  return config


def _with(config: ml_collections.ConfigDict, *,
          batch_size: Optional[int] = None,
          **encoder: Any) -> ml_collections.ConfigDict:
  config = config.copy_and_resolve_references()
  with config.unlocked():
    if batch_size is not None:
      config.train.batch_size = batch_size
    config.model.encoder.update(encoder)
  return config


def _attempt_fields(result: Mapping[str, Any]) -> dict[str, Any]:
  return {k: result.get(k) for k in (
      'num_inputs', 'lower_seconds', 'compile_seconds', 'xla_memory_bytes',
      'step_seconds')}


def throughput_stage(profile: Profile, config: ml_collections.ConfigDict,
                     batches: Sequence[int],
                     rates: Optional[Mapping[str, float]]) -> Stage:
  """Measures `config`'s train step at the largest of `batches` that fits."""

  def stage(context: StageContext) -> Optional[str]:
    attempts = context.entry.setdefault('attempts', [])
    measured = {}

    def run(batch: int) -> dict[str, Any]:
      measured[batch] = steps.benchmark_train(
          _with(config, batch_size=batch), steps=profile.steps,
          warmup=profile.warmup, rates=rates,
          compiler_options=profile.compiler_options)
      return measured[batch]

    def on_attempt(attempt: dict[str, Any]) -> None:
      attempts.append(dict(attempt, **_attempt_fields(
          measured.get(attempt['batch'], {}))))
      context.save()

    found = largest_batch(batches, run, can_start=context.can_start,
                          on_attempt=on_attempt, clock=context.clock)
    context.save(batch=found.batch, result=found.result)
    if found.batch is None and not found.note:
      context.save(detail=f'no batch of {sorted(batches)} fitted')
    return found.note or None
  return stage


def max_inputs_stage(profile: Profile, config: ml_collections.ConfigDict,
                     headline_batch: Callable[[], Optional[int]]) -> Stage:
  """Searches the largest square image whose batch-1 step fits, starting
  from the headline's fitted batch (`max_inputs_start`)."""
  side0 = int(config.model.input.index_dims[0])
  limit = max(side0, profile.max_side)
  one_each = jax.local_device_count()  # One example per device.

  def stage(context: StageContext) -> Optional[str]:
    attempts = context.entry.setdefault('attempts', [])
    batch = headline_batch()
    start, known_fit = max_inputs_start(side0, batch and batch // one_each,
                                        limit)
    context.save(start_side=start, known_fit_side=known_fit or None)

    def fits(side: int) -> bool:
      result, error = unless_out_of_memory(lambda: steps.benchmark_train(
          with_square_image(_with(config, batch_size=one_each), side),
          steps=1, warmup=0, count_flops=False,
          compiler_options=profile.compiler_options))
      attempt = dict(side=side, batch=one_each, fits=error is None,
                     **_attempt_fields(result or {}))
      attempt['num_inputs'] = side * side
      if error:
        attempt['error'] = error
      attempts.append(attempt)
      context.save()
      return error is None

    search = largest_size(fits, start, limit=limit, grow=grow_square_side,
                          tolerance=profile.side_tolerance,
                          known_fit=known_fit, can_start=context.can_start,
                          clock=context.clock)
    side = search.largest_fit
    context.save(largest_side=side,
                 largest_num_inputs=None if side is None else side * side,
                 smallest_failing_side=search.smallest_fail)
    if search.note and not search.stopped:
      context.save(detail=search.note)
    return search.note if search.stopped else None
  return stage


def scaling_stage(profile: Profile, config_at: Callable[[int], Any],
                  out_dir: str,
                  largest_inputs: Callable[[], Optional[int]]) -> Stage:
  """Times the batch-1 step of `config_at(M)` over `profile.scaling_inputs`
  (up to the `max_inputs` stage's M) and plots it."""

  def stage(context: StageContext) -> Optional[str]:
    low, high, num = profile.scaling_inputs
    if largest_inputs():
      high = max(low, min(high, largest_inputs()))
    points = context.entry.setdefault('points', [])
    attempts = context.entry.setdefault('attempts', [])
    stopped, expected = None, 0.0
    for m in machine.log_spaced(low, high, num):
      if not context.can_start(expected):
        stopped = (f'stopped before M={m}: the next point would overrun the '
                   f'stage cap')
        break
      begin = context.clock()
      results, error = unless_out_of_memory(functools.partial(
          steps.benchmark_scaling, [config_at(m)], steps=profile.steps,
          warmup=profile.warmup, compiler_options=profile.compiler_options))
      expected = context.clock() - begin
      if error:
        attempts.append(dict(num_inputs=m, fits=False, error=error))
        context.save(detail=f'M={m} ran out of memory; larger M not tried')
        break
      points.append(results[0])
      attempts.append(dict(batch=results[0]['batch_size'], fits=True,
                           **_attempt_fields(results[0])))
      context.save()
    if points:
      steps.write_scaling_plot(points, os.path.join(out_dir, PLOT_NAME))
      context.save(plot=PLOT_NAME)
    return stopped
  return stage


def device_memory() -> dict[str, Any]:
  """The device's memory limit, the allocator's settings and the
  compilation cache (compile times are reads where it holds a program)."""
  try:
    stats = jax.local_devices()[0].memory_stats() or {}
  except Exception:  # pylint: disable=broad-except
    stats = {}  # Not every backend reports memory (CPU).
  return dict(
      device_memory_limit_bytes=stats.get('bytes_limit'),
      compilation_cache_dir=jax.config.jax_compilation_cache_dir,
      allocator_settings={k: v for k, v in os.environ.items() if k in (
          'XLA_PYTHON_CLIENT_MEM_FRACTION', 'XLA_PYTHON_CLIENT_PREALLOCATE',
          'XLA_PYTHON_CLIENT_ALLOCATOR', 'XLA_FLAGS', 'JAX_PLATFORMS')})


def run_report(profile: Profile, config: ml_collections.ConfigDict,
               config_at: Callable[[int], Any], out_dir: str, *,
               budget_seconds: float, caps: Mapping[str, float],
               header: Mapping[str, Any],
               start: Optional[float] = None) -> Report:
  """Runs every stage on the headline `config` (`config_at(M)`: it on a 1D
  grid of M inputs) into `out_dir`; the budget counts from `start`."""
  report = Report(out_dir, budget_seconds=budget_seconds,
                  reserve_seconds=profile.reserve_seconds, header=header,
                  start=start)
  rates = machine.matmul_rates()
  report.doc['environment'] = dict(
      machine.environment(), **device_memory(), matmul_flops_per_sec=rates)
  report.save()

  def batch_of(name: str) -> Optional[int]:
    return report.stages[name].get('batch')

  def below_headline() -> list[int]:
    top = batch_of('headline') or max(profile.batches)
    return [b for b in profile.batches if b <= top]

  plan = (
      ('headline', lambda: throughput_stage(profile, config,
                                            profile.batches, rates)),
      ('float32', lambda: throughput_stage(
          profile, _with(config, precision='float32'), below_headline(),
          rates)),
      ('einsum', lambda: throughput_stage(
          profile, _with(config, attention_impl='einsum'),
          below_headline(), rates)),
      ('max_inputs', lambda: max_inputs_stage(
          profile, config, lambda: batch_of('headline'))),
      ('scaling', lambda: scaling_stage(
          profile, config_at, report.out_dir,
          lambda: report.stages['max_inputs'].get('largest_num_inputs'))))
  for name, make in plan:
    report.run_stage(name, make(), cap_seconds=caps[name],
                     min_seconds=profile.min_seconds[name])
  report.finish()
  return report


def parse_caps(items: Sequence[str], defaults: Mapping[str, float]
               ) -> dict[str, float]:
  """`defaults` with `name=seconds` items applied (0 skips a stage)."""
  caps = dict(defaults)
  for item in items:
    name, sep, value = item.partition('=')
    if not sep or name not in caps:
      raise ValueError(f'--stage_seconds takes name=seconds with a name of '
                       f'{", ".join(STAGES)}; got {item!r}.')
    try:
      caps[name] = float(value)
    except ValueError:
      caps[name] = float('nan')
    if not caps[name] >= 0.0:  # Negative or NaN: a typo.
      raise ValueError(f'--stage_seconds: {value!r} is not a number of '
                       f'seconds (in {item!r}).')
  return caps
