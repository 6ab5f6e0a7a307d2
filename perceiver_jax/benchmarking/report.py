"""The accelerator report: stages run within a time budget, saved as they go.

Stages, in order: `headline` (the train step's images/s and MFU at the
largest of `Profile.batches` that fits), `float32` and `einsum` (the same in
those modes), `max_inputs` (the largest square image whose batch-1 step
fits) and `scaling` (the batch-1 step against M, plotted). A stage with less
time than it needs is skipped; one stops before a try that would overrun its
cap (it is then `partial`). Only device out-of-memory errors mean "does not
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
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Optional, Sequence

import jax
import ml_collections

from perceiver_jax.benchmarking import machine
from perceiver_jax.benchmarking import steps

STAGES = ('headline', 'float32', 'einsum', 'max_inputs', 'scaling')
JSON_NAME, MARKDOWN_NAME, PLOT_NAME = 'report.json', 'report.md', 'scaling.png'


def _stage_seconds(*seconds: float) -> Any:
  return dataclasses.field(default_factory=lambda: dict(zip(STAGES, seconds)))


@dataclasses.dataclass(frozen=True)
class Profile:
  """What the report measures, and each stage's time; the defaults are the
  full report's. `image_side` None keeps the config's; `scaling_inputs`:
  (smallest M, largest M, points); `reserve_seconds` of the budget are kept
  for writing the report."""
  config_arg: str = ''
  encoder: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  image_side: Optional[int] = None
  # Compiles of the headline step are the unit of cost: few batches tried.
  batches: tuple[int, ...] = (32, 24, 16, 8)
  steps: int = 5
  warmup: int = 2
  max_side: int = 4096
  side_tolerance: float = 0.03
  scaling_inputs: tuple[int, int, int] = (1024, 2**20, 4)
  caps: Mapping[str, float] = _stage_seconds(120, 80, 70, 120, 80)
  min_seconds: Mapping[str, float] = _stage_seconds(30, 20, 20, 20, 15)
  budget_seconds: float = 480
  reserve_seconds: float = 10
  compiler_options: Optional[Mapping[str, Any]] = None


FULL = Profile()
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


@dataclasses.dataclass
class StageContext:
  """A running stage: its `entry` in the report, its deadline, the report's
  `clock` and `save_report`; `stopped`: why it stopped early, if it did."""
  entry: dict[str, Any]
  deadline: float
  clock: Callable[[], float] = time.monotonic
  save_report: Callable[[], None] = lambda: None
  stopped: Optional[str] = None
  last_seconds: float = 0.0

  def left(self) -> float:
    return self.deadline - self.clock()

  def save(self, **fields: Any) -> None:
    self.entry.update(fields)
    self.save_report()

  def attempt(self, what: str, fn: Callable[[], Any], **fields: Any) -> Any:
    """`fn()`, recorded with `fields` in the entry's `attempts`; None when it
    runs out of device memory, or when an attempt as long as the last would
    overrun the deadline (then not run, and `stopped` says so)."""
    if self.last_seconds > self.left():
      self.stopped = (f'stopped before {what}: the next attempt would '
                      f'overrun the stage cap')
      return None
    begin = self.clock()
    try:
      result, error = fn(), None
    except Exception as e:  # pylint: disable=broad-except
      if not is_out_of_memory(e):
        raise
      result, error = None, _short(e)
    attempt = {k: (result or {}).get(k) for k in (
        'num_inputs', 'lower_seconds', 'compile_seconds', 'xla_memory_bytes',
        'step_seconds')}
    attempt.update(fields, fits=error is None)
    if error:
      attempt['error'] = error
      # Outside the except block, so that the traceback's device buffers
      # are freed before the next attempt.
      gc.collect()
    self.last_seconds = attempt['seconds'] = self.clock() - begin
    self.entry.setdefault('attempts', []).append(attempt)
    self.save()
    return result


def largest_batch(context: StageContext, batches: Iterable[int],
                  run: Callable[[int], Any]) -> None:
  """Runs `run(batch)` from the largest of `batches` down until one fits in
  device memory; saves it and its result as the stage's `batch`, `result`."""
  context.save(batch=None, result=None)
  for batch in sorted(set(batches), reverse=True):
    result = context.attempt(f'batch {batch}', functools.partial(run, batch),
                             batch=batch)
    if result is not None:
      context.save(batch=batch, result=result)
      return
    if context.stopped:
      return
  context.save(detail=f'no batch of {sorted(batches)} fitted')


class Search(NamedTuple):
  """`largest_size`'s outcome, and its probes as (n, fits)."""
  largest_fit: Optional[int]
  smallest_fail: Optional[int]
  probes: list[tuple[int, bool]]


def largest_size(fits: Callable[[int], Optional[bool]], start: int, *,
                 limit: int, grow: Callable[[int], int] = lambda n: 2 * n,
                 tolerance: float = 0.0, known_fit: int = 0) -> Search:
  """The largest n <= `limit` with `fits(n)` (monotone): grows from `start`
  until a size fails, then bisects down to `tolerance` above the largest fit
  (or `known_fit`, never probed). `fits` returning None stops the search."""
  if not 1 <= start <= limit or not 0 <= known_fit <= start:
    raise ValueError(f'Need 0 <= known_fit <= start <= limit and start >= 1,'
                     f' got {known_fit}, {start}, {limit}.')
  probes = []
  low, high, n = known_fit, None, start
  while high is None or (high - low > 1 and high > low * (1 + tolerance)):
    ok = fits(n)
    if ok is None:
      break
    probes.append((n, ok))
    if ok:
      low = n
    else:
      high = n
    if high is not None:  # Bisecting.
      n = (low + high) // 2
    elif n >= limit:
      break
    else:
      n = min(max(grow(n), n + 1), limit)
  return Search(low or None, high, probes)


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


Stage = Callable[[StageContext], None]


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
    self.stages: dict[str, dict[str, Any]] = self.doc['stages']
    self.save()

  def save(self) -> None:
    """Rewrites report.json and report.md, each replaced atomically."""
    self.doc.update(elapsed_seconds=round(self.clock() - self.start, 3),
                    compile_times=compile_times(self.stages),
                    ratios=ratios(self.stages))
    for name, text in (
        (JSON_NAME, json.dumps(self.doc, indent=1, default=lambda v: (
            v.item() if hasattr(v, 'item') else str(v)))),
        (MARKDOWN_NAME, format_markdown(self.doc))):
      path = os.path.join(self.out_dir, name)
      with open(path + '.partial', 'w') as f:
        f.write(text)
      os.replace(path + '.partial', path)

  def run_stage(self, name: str, fn: Stage, *,
                cap_seconds: float, min_seconds: float) -> str:
    """Runs `fn` until `cap_seconds` or the budget's end, unless that leaves
    under `min_seconds`; returns the stage's status."""
    entry = self.stages[name]
    now = self.clock()
    left = self.deadline - now
    allotted = min(cap_seconds, left)
    entry.update(cap_seconds=cap_seconds, status='running')
    if allotted < min_seconds:
      entry.update(status='skipped', note=(
          f'skipped: {max(allotted, 0):.1f} s available (cap {cap_seconds:g}'
          f' s, {max(left, 0):.1f} s left of the budget), needs at least '
          f'{min_seconds:g} s'))
    else:
      self.save()
      context = StageContext(entry, now + allotted, self.clock, self.save)
      try:
        fn(context)
        entry.update(dict(status='partial', note=context.stopped)
                     if context.stopped else dict(status='done'))
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


def _cell(value: Any, fmt: str = '{}', scale: Optional[float] = None) -> str:
  if value is None:
    return '-'
  return fmt.format(value if scale is None else value * scale)


def _table(columns: Sequence[tuple], records: Iterable[Mapping[str, Any]]
           ) -> list[str]:
  """Markdown rows of `records`; a column is (header, key[, format[, scale]])."""
  rows = [[_cell(record.get(key), *style) for _, key, *style in columns]
          for record in records]
  return ['| ' + ' | '.join(row) + ' |' for row in (
      [c[0] for c in columns], ['---'] * len(columns), *rows)]


_STAGE_COLUMNS = (
    ('stage', 'stage'), ('status', 'status'), ('precision', 'precision'),
    ('attention', 'attention_impl'), ('batch', 'batch_size'),
    ('M', 'num_inputs'), ('images/s', 'examples_per_sec', '{:.1f}'),
    ('MFU', 'mfu', '{:.1%}'), ('of matmul rate', 'machine_fraction', '{:.1%}'),
    ('step ms', 'step_seconds', '{:.2f}', 1e3),
    ('compile s', 'compile_seconds', '{:.1f}'),
    ('XLA memory GiB', 'xla_memory_bytes', '{:.2f}', 2**-30), ('note', 'note'))
_SCALING_COLUMNS = (
    ('M', 'num_inputs'), ('step ms', 'step_seconds', '{:.2f}', 1e3),
    ('XLA memory MiB', 'xla_memory_bytes', '{:.1f}', 2**-20),
    ('compile s', 'compile_seconds', '{:.1f}'))
_COMPILE_COLUMNS = (
    ('stage', 'stage'), ('batch', 'batch'), ('M', 'num_inputs'),
    ('fits', 'fits'), ('lower s', 'lower_seconds', '{:.1f}'),
    ('compile s', 'compile_seconds', '{:.1f}'))


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
  lines += _table(_STAGE_COLUMNS, [dict(
      entry.get('result') or {}, stage=name, status=entry['status'],
      note='; '.join(entry[k] for k in ('note', 'detail', 'error')
                     if entry.get(k)).replace('|', '/'))
                                   for name, entry in stages.items()])
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
  scaling = stages.get('scaling', {})
  if scaling.get('points'):
    lines += ['', 'Scaling in M (batch 1, 1D grid, headline latents):', '']
    lines += _table(_SCALING_COLUMNS, scaling['points'])
    if scaling.get('plot'):
      lines += ['', f'![scaling]({scaling["plot"]})']
  if doc.get('compile_times'):
    lines += ['', 'Compile times:', '']
    lines += _table(_COMPILE_COLUMNS, doc['compile_times'])
  return '\n'.join(lines) + '\n'


def with_changes(config: ml_collections.ConfigDict, *,
                 batch_size: Optional[int] = None, side: Optional[int] = None,
                 **encoder: Any) -> ml_collections.ConfigDict:
  """A copy of `config` with these `encoder` fields, and this batch size
  and side x side images (M = side^2 pixels) where given."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    if batch_size is not None:
      config.train.batch_size = batch_size
    if side is not None:
      config.data.image_shape = (side, side)
      config.model.input.index_dims = (side, side)
    config.model.encoder.update(encoder)
  return config


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
  # With the allocator's settings, and the compilation cache (compile
  # times are reads where it holds a program).
  report.doc['environment'] = dict(
      machine.environment(),
      device_memory_limit_bytes=machine.memory_stats().get('bytes_limit'),
      compilation_cache_dir=jax.config.jax_compilation_cache_dir,
      allocator_settings={k: v for k, v in os.environ.items() if k in (
          'XLA_PYTHON_CLIENT_MEM_FRACTION', 'XLA_PYTHON_CLIENT_PREALLOCATE',
          'XLA_PYTHON_CLIENT_ALLOCATOR', 'XLA_FLAGS', 'JAX_PLATFORMS')},
      matmul_flops_per_sec=rates)
  report.save()
  stages = report.stages
  one_each = jax.local_device_count()  # One example per device.

  def throughput(mode_config: ml_collections.ConfigDict) -> Stage:
    """The train step at the largest batch that fits, from the headline's
    batch down (the headline itself: from the largest)."""
    def stage(context: StageContext) -> None:
      top = stages['headline'].get('batch') or max(profile.batches)
      largest_batch(context, [b for b in profile.batches if b <= top],
                    lambda batch: steps.benchmark_train(
                        with_changes(mode_config, batch_size=batch),
                        steps=profile.steps, warmup=profile.warmup,
                        rates=rates,
                        compiler_options=profile.compiler_options))
    return stage

  def max_inputs(context: StageContext) -> None:
    """The largest square image whose batch-1 step fits, searched from the
    headline's fitted batch (`max_inputs_start`)."""
    side0 = int(config.model.input.index_dims[0])
    limit = max(side0, profile.max_side)
    batch = stages['headline'].get('batch')
    start, known_fit = max_inputs_start(side0, batch and batch // one_each,
                                        limit)
    context.save(start_side=start, known_fit_side=known_fit or None)

    def fits(side: int) -> Optional[bool]:
      result = context.attempt(
          f'side {side}', lambda: steps.benchmark_train(
              with_changes(config, batch_size=one_each, side=side),
              steps=1, warmup=0, count_flops=False,
              compiler_options=profile.compiler_options),
          side=side, batch=one_each, num_inputs=side * side)
      return None if context.stopped else result is not None

    search = largest_size(fits, start, limit=limit, grow=grow_square_side,
                          tolerance=profile.side_tolerance,
                          known_fit=known_fit)
    side = search.largest_fit
    context.save(largest_side=side, largest_num_inputs=side and side * side,
                 smallest_failing_side=search.smallest_fail)
    if side == limit:
      context.save(detail=f'every size up to the limit {limit} fitted')

  def scaling(context: StageContext) -> None:
    """The batch-1 step against M over `profile.scaling_inputs` (up to the
    `max_inputs` stage's M), plotted."""
    low, high, num = profile.scaling_inputs
    largest = stages['max_inputs'].get('largest_num_inputs')
    if largest:
      high = max(low, min(high, largest))
    points = context.entry.setdefault('points', [])
    for m in machine.log_spaced(low, high, num):
      point = context.attempt(
          f'M={m}', functools.partial(
              steps.benchmark_scaling, config_at(m), steps=profile.steps,
              warmup=profile.warmup,
              compiler_options=profile.compiler_options),
          num_inputs=m, batch=one_each)
      if point is None:
        if not context.stopped:
          context.save(detail=f'M={m} ran out of memory; larger M not tried')
        break
      points.append(point)
    if points:
      steps.write_scaling_plot(points, os.path.join(out_dir, PLOT_NAME))
      context.save(plot=PLOT_NAME)

  plan = dict(headline=throughput(config),
              float32=throughput(with_changes(config, precision='float32')),
              einsum=throughput(with_changes(config,
                                             attention_impl='einsum')),
              max_inputs=max_inputs, scaling=scaling)
  for name, stage in plan.items():
    report.run_stage(name, stage, cap_seconds=caps[name],
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
