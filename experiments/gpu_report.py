r"""One command that measures the headline figures on an accelerator.

  XLA_PYTHON_CLIENT_MEM_FRACTION=0.95 python -m experiments.gpu_report \
      --out=gpu_report
  python -m experiments.gpu_report --tiny --out=/tmp/gpu_report  # CPU test

Built for a borrowed GPU: the whole run stays inside `--budget_seconds`
(480 by default, 60 with `--tiny`), and `report.json` and `report.md` in
`--out` are rewritten after every attempt, so that a run stopped at any
point leaves valid JSON of what finished. The stages, in order:

1. `headline`: the ImageNet headline config (configs/imagenet.py) in
   bfloat16 with `attention_impl='dot_product'`; the training step's
   images/s and MFU (nominal training FLOPs, 3x the paper-style forward
   count of `experiments.benchmark.nominal_flops_per_example`, against the
   device's bf16 dense peak in `experiments.benchmark.PEAK_FLOPS`) at the
   largest batch of `batches` (tried largest first) that compiles and runs
   without running out of device memory.
2. `float32` and 3. `einsum`: the same in float32, and with the einsum
   attention, starting at the headline's batch; `ratios` divides the
   headline's images/s by theirs.
4. `max_inputs`: the largest square image (side s, M = s^2 pixels) whose
   batch-1 training step fits: M doubled until a step runs out of memory,
   then the side bisected. It starts at the image with as many pixels as
   the headline's fitting batch held (memory grows with batch x M), and
   takes the headline's image as known to fit.
5. `scaling`: the batch-1 step over a 1D grid of M inputs at the headline's
   latents (`experiments.benchmark.benchmark_scaling`), with `scaling.png`.

Compile times of every attempt are gathered in `compile_times`. Each stage
has its own cap (`--stage_seconds=name=seconds,...` overrides the
defaults); a stage whose cap, or the budget left, is under the least it
needs is skipped with a note, and a stage stops trying further batches or
sizes once the next would overrun its cap (its status is then `partial`).
A watchdog ends the process at the budget (exit status 3), after writing
what it has.

Only device out-of-memory errors (`RESOURCE_EXHAUSTED`) count as "does not
fit"; any other error in a stage marks that stage `failed` (traceback in
the JSON and on stderr), the other stages still run, and the exit status is
1. `--tiny` runs the same stages on configs/imagenet.py:runlocal shrunk
(16x16 images, one block, batches 4 and 2, M up to 45^2), on any backend.
"""

import dataclasses
import datetime
import functools
import gc
import json
import math
import os
import sys
import threading
import time
import traceback
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from absl import flags

from perceiver_jax import cli
from perceiver_jax import host_memory
from perceiver_jax.train import launch

STAGES = ('headline', 'float32', 'einsum', 'max_inputs', 'scaling')
JSON_NAME = 'report.json'
MARKDOWN_NAME = 'report.md'
PLOT_NAME = 'scaling.png'

_OUT = flags.DEFINE_string('out', None, 'Directory for report.json, '
                           'report.md and scaling.png (created).')
_TINY = flags.DEFINE_bool('tiny', False, 'The CPU-sized form for tests: '
                          'runlocal ImageNet shrunk, on any backend.')
_BUDGET = flags.DEFINE_float(
    'budget_seconds', None, 'Wall-clock budget of the whole run (default '
    '480; 60 with --tiny).')
_STAGE_SECONDS = flags.DEFINE_list(
    'stage_seconds', [], 'Per-stage caps, name=seconds (stages: ' +
    ', '.join(STAGES) + ').')


@dataclasses.dataclass(frozen=True)
class Profile:
  """What the report measures, and how long each stage may take.

  Attributes:
    config_arg: the argument of configs/imagenet.py's `get_config`.
    encoder: overrides of `config.model.encoder` on top of it.
    image_side: the square image of the throughput stages (None: the
      config's).
    batches: global batch sizes the throughput stages try, largest first.
    steps: timed steps per measurement; warmup: untimed steps before them.
    max_side: the largest side the `max_inputs` search tries.
    side_tolerance: the search stops once the smallest side that failed is
      within this fraction of the largest that fitted.
    scaling_inputs: (smallest M, largest M, points) of the scaling sweep;
      the largest is lowered to `max_inputs`' M when that is smaller.
    caps: seconds each stage may take; min_seconds: the least each needs
      (a stage with less is skipped).
    budget_seconds: default of `--budget_seconds`.
    reserve_seconds: budget kept back for writing the report.
    compiler_options: XLA options of every compile (None: XLA's defaults).
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


# About 8 minutes on the accelerator. Compiles of the headline step are the
# unit of cost (16 s on 2 CPU cores; tens of seconds on a GPU, autotuning
# included), so few sizes are tried. The batches: XLA:CPU plans 9.6 GB for
# the bf16 headline step at batch 2 (`experiments.benchmark --steps=0`;
# under 1 GB of it parameters and optimizer state), about 4.4 GB an
# example, so about 30 examples fill an H200's 141 GB.
FULL = Profile(
    config_arg='', encoder={}, image_side=None, batches=(32, 24, 16, 8),
    steps=5, warmup=2, max_side=4096, side_tolerance=0.03,
    scaling_inputs=(1024, 2**20, 4),
    caps=dict(headline=120, float32=80, einsum=70, max_inputs=120,
              scaling=80),
    min_seconds=dict(headline=30, float32=20, einsum=20, max_inputs=20,
                     scaling=15),
    budget_seconds=480, reserve_seconds=10)


def tiny_profile() -> Profile:
  """The CPU-sized profile: every stage in seconds, for the tests."""
  from experiments import benchmark  # pylint: disable=g-import-not-at-top
  return Profile(
      config_arg='runlocal',
      encoder=dict(num_blocks=1, num_cross_attends=1,
                   num_self_attends_per_block=1),
      image_side=16, batches=(4, 2), steps=1, warmup=1, max_side=45,
      side_tolerance=0.05, scaling_inputs=(64, 1024, 2),
      caps={name: 30 for name in STAGES},
      min_seconds={name: 0.5 for name in STAGES},
      budget_seconds=60, reserve_seconds=1,
      compiler_options=benchmark.FAST_COMPILE_OPTIONS)


def is_out_of_memory(error: BaseException) -> bool:
  """Whether `error` is XLA's device out-of-memory error."""
  import jax  # pylint: disable=g-import-not-at-top
  return (isinstance(error, jax.errors.JaxRuntimeError) and
          'RESOURCE_EXHAUSTED' in str(error))


def _short(error: BaseException) -> str:
  """The first line of an error, at most 300 characters."""
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
  # Out of the except block: the error's traceback, and the device buffers
  # its frames hold, are released before the next, smaller attempt.
  gc.collect()
  return None, message


# ---------------------------------------------------------------- searches


@dataclasses.dataclass
class BatchSearch:
  """The outcome of `largest_batch`.

  Attributes:
    batch: the largest batch that ran (None if none did).
    result: what `run(batch)` returned for it.
    attempts: one dict per batch tried: `batch`, `fits`, `seconds`, and
      `error` for one that ran out of memory.
    note: why the search stopped before trying every batch, or ''.
  """
  batch: Optional[int] = None
  result: Any = None
  attempts: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  note: str = ''


def largest_batch(batches: Iterable[int], run: Callable[[int], Any], *,
                  can_start: Callable[[float], bool] = lambda _: True,
                  on_attempt: Callable[[dict[str, Any]], None] = lambda _: None,
                  clock: Callable[[], float] = time.monotonic
                  ) -> BatchSearch:
  """Runs `run(batch)` from the largest batch down; stops at the first that
  does not run out of device memory.

  Args:
    batches: candidate batch sizes (any order; tried largest first).
    run: measures one batch size; raises XLA's RESOURCE_EXHAUSTED error
      when it does not fit. Any other error propagates.
    can_start: `can_start(expected_seconds)`: whether there is time for one
      more attempt, given how long the last one took.
    on_attempt: called with each attempt's record as it ends.
    clock: seconds.

  Returns:
    The search's outcome (see `BatchSearch`).
  """
  search = BatchSearch()
  expected = 0.0
  for batch in sorted(set(batches), reverse=True):
    if not can_start(expected):
      search.note = (f'stopped before batch {batch}: the next attempt would '
                     f'overrun the stage cap')
      return search
    start = clock()
    result, error = unless_out_of_memory(functools.partial(run, batch))
    attempt = dict(batch=batch, fits=error is None,
                   seconds=clock() - start)
    if error:
      attempt['error'] = error
    search.attempts.append(attempt)
    on_attempt(attempt)
    if error is None:
      search.batch, search.result = batch, result
      return search
    expected = attempt['seconds']
  return search


@dataclasses.dataclass
class SizeSearch:
  """The outcome of `largest_size`.

  Attributes:
    largest_fit: the largest size that fitted, or `known_fit` if no probe
      did (None if neither).
    smallest_fail: the smallest size that did not (None if none failed).
    probes: `(size, fits)` in the order tried.
    note: why the search ended before the bracket closed, or ''.
    stopped: whether it ended for lack of time (else the limit fitted).
  """
  largest_fit: Optional[int] = None
  smallest_fail: Optional[int] = None
  probes: list[tuple[int, bool]] = dataclasses.field(default_factory=list)
  note: str = ''
  stopped: bool = False


def double(n: int) -> int:
  return 2 * n


def largest_size(fits: Callable[[int], bool], start: int, *, limit: int,
                 grow: Callable[[int], int] = double,
                 tolerance: float = 0.0, known_fit: int = 0,
                 can_start: Callable[[float], bool] = lambda _: True,
                 clock: Callable[[], float] = time.monotonic) -> SizeSearch:
  """The largest integer size n <= `limit` with `fits(n)`, assuming that
  whatever fits a size fits every smaller one.

  Grows from `start` by `grow` (doubling) until a size does not fit or
  `limit` fits, then bisects between the largest fit (or `known_fit`) and
  the smallest failure until they are adjacent or within `tolerance` of
  the fit.

  Args:
    fits: whether size n fits.
    start: the first size probed.
    limit: the largest size probed.
    grow: the next size of the growth phase (made at least n + 1).
    tolerance: relative width at which the bracket counts as closed.
    known_fit: a size known to fit without a probe (0: none), the floor of
      the bisection when `start` does not fit.
    can_start: `can_start(expected_seconds)` before each probe after the
      first (expected: the last probe's seconds); False stops the search.
    clock: seconds.

  Returns:
    The search's outcome (see `SizeSearch`).
  """
  if not 1 <= start <= limit or not 0 <= known_fit <= start:
    raise ValueError(f'Need 0 <= known_fit <= start <= limit and start >= 1,'
                     f' got {known_fit}, {start}, {limit}.')
  search = SizeSearch()
  expected = None

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
  while True:  # Growth.
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
  low = search.largest_fit or known_fit
  high = search.smallest_fail
  while high - low > 1 and high > low * (1 + tolerance):  # Bisection.
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
  """(first side to probe, side known to fit) of the `max_inputs` search.

  A step's memory grows with batch x M (the cross-attends' logits), so
  when `per_device_batch` images of `side` x `side` fitted, one image of
  as many pixels likely fits too: the search starts there, and the
  headline's side is known to fit. Without a fitted batch (None), it
  starts at `side`, known to fit at nothing.
  """
  if not per_device_batch:
    return min(side, max_side), 0
  start = math.isqrt(per_device_batch * side * side)
  return max(side, min(start, max_side)), min(side, max_side)


# ------------------------------------------------------------------ report


class StageContext:
  """What a stage function sees: its deadline, and a way to save progress.

  Attributes:
    entry: the stage's dict in the report; the stage may add fields.
  """

  def __init__(self, report: 'Report', entry: dict[str, Any],
               deadline: float):
    self._report = report
    self.entry = entry
    self.deadline = deadline

  def clock(self) -> float:
    return self._report.clock()

  def left(self) -> float:
    return self.deadline - self.clock()

  def can_start(self, expected_seconds: float) -> bool:
    """Whether a piece of work of `expected_seconds` ends before the cap."""
    return expected_seconds <= self.left()

  def save(self, **fields: Any) -> None:
    """Updates the stage's entry with `fields` and rewrites the report."""
    self.entry.update(fields)
    self._report.save()


# A stage: runs with a context; returns None, or why it stopped early.
Stage = Callable[[StageContext], Optional[str]]


class Report:
  """The report's JSON document, its stages, budget and files.

  Every stage is listed from the start (`pending`); each is then `running`,
  and ends `done`, `partial` (stopped at its cap), `skipped` (not enough
  time: see its `note`) or `failed` (an error other than out-of-memory).
  The budget counts from `start`, a reading of `clock` (default: now);
  `reserve_seconds` of it are kept for writing the files.
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
    self.out_dir = out_dir
    self.clock = clock
    self.start = clock() if start is None else start
    self.budget_seconds = budget_seconds
    self.deadline = self.start + budget_seconds - reserve_seconds
    self._lock = threading.RLock()
    self.doc: dict[str, Any] = dict(
        header, budget_seconds=budget_seconds, elapsed_seconds=0.0,
        complete=False,
        stages={name: dict(status='pending') for name in stages})
    self.save()

  @property
  def stages(self) -> dict[str, dict[str, Any]]:
    return self.doc['stages']

  def save(self) -> None:
    """Rewrites report.json and report.md (each replaced atomically)."""
    with self._lock:
      self.doc['elapsed_seconds'] = round(self.clock() - self.start, 3)
      self.doc['compile_times'] = compile_times(self.stages)
      self.doc['ratios'] = ratios(self.stages)
      _write_atomically(os.path.join(self.out_dir, JSON_NAME),
                        json.dumps(self.doc, indent=1, default=_jsonable))
      _write_atomically(os.path.join(self.out_dir, MARKDOWN_NAME),
                        format_markdown(self.doc))

  def run_stage(self, name: str, fn: Stage, *, cap_seconds: float,
                min_seconds: float) -> str:
    """Runs `fn` with a deadline of `cap_seconds` (or the budget's end),
    unless that leaves less than `min_seconds`; returns the status.

    `fn(context)` returns None when it finished, or why it stopped early
    (the stage is then `partial`, with that as its note).
    """
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
    context = StageContext(self, entry, now + allotted)
    try:
      stopped = fn(context)
      if stopped:
        entry.update(status='partial', note=stopped)
      else:
        entry['status'] = 'done'
    except Exception as e:  # pylint: disable=broad-except
      # A bug in one stage must not cost the lease the others: the stage is
      # marked failed with its traceback, and the run ends with status 1.
      text = traceback.format_exc()
      print(text, file=sys.stderr, flush=True)
      entry.update(status='failed', error=_short(e), traceback=text)
    entry['seconds'] = round(self.clock() - now, 3)
    self.save()
    return entry['status']

  def finish(self) -> None:
    """Marks the run as ended (a killed run's file says complete: false)."""
    self.doc['complete'] = True
    self.save()

  def stop(self, why: str) -> None:
    """Marks the running stage as stopped by `why` and saves (watchdog)."""
    with self._lock:
      for entry in self.stages.values():
        if entry['status'] == 'running':
          entry.update(status='partial', note=why)
      self.doc['stopped'] = why
      self.save()


def _write_atomically(path: str, text: str) -> None:
  partial = path + '.partial'
  with open(partial, 'w') as f:
    f.write(text)
  os.replace(partial, path)


def _jsonable(value: Any) -> Any:
  """NumPy scalars and other strays as JSON values."""
  if hasattr(value, 'item'):
    return value.item()
  return str(value)


def start_watchdog(report: Report, *, exit_status: int = 3
                   ) -> threading.Timer:
  """Ends the process at the budget's end, after saving the report.

  A compile cannot be interrupted from Python; the stages plan to end
  before the budget, and this is the guarantee when a compile overruns.
  """
  delay = report.start + report.budget_seconds - report.clock()

  def fire():
    try:
      report.stop(f'stopped by the watchdog at the budget of '
                  f'{report.budget_seconds:g} s')
    except Exception:  # pylint: disable=broad-except
      pass  # The stage mutated the report meanwhile: the last save stands.
    print(f'error: the budget of {report.budget_seconds:g} s ran out; '
          f'partial results in {report.out_dir}', file=sys.stderr,
          flush=True)
    os._exit(exit_status)  # pylint: disable=protected-access

  timer = threading.Timer(max(delay, 0.0), fire)
  timer.daemon = True
  timer.start()
  return timer


# --------------------------------------------------------------- summaries


def compile_times(stages: Mapping[str, Mapping[str, Any]]
                  ) -> list[dict[str, Any]]:
  """Lowering and compile seconds of every program compiled, by stage."""
  rows = []
  for name, entry in stages.items():
    for attempt in entry.get('attempts', []):
      if attempt.get('compile_seconds') is not None:
        rows.append(dict(stage=name, **{k: attempt.get(k) for k in (
            'batch', 'num_inputs', 'fits', 'lower_seconds',
            'compile_seconds')}))
  return rows


def ratios(stages: Mapping[str, Mapping[str, Any]]
           ) -> dict[str, Optional[float]]:
  """The headline's images/s over float32's and einsum's."""
  def rate(name):
    return (stages.get(name, {}).get('result') or {}).get('examples_per_sec')
  headline = rate('headline')
  return {f'headline_over_{name}': (
      headline / rate(name) if headline and rate(name) else None)
          for name in ('float32', 'einsum')}


def _cell(value: Any, fmt: str = '{}') -> str:
  return '-' if value is None else fmt.format(value)


def format_markdown(doc: Mapping[str, Any]) -> str:
  """The report as Markdown: one table of the stages, then the details."""
  env = doc.get('environment', {})
  stages = doc['stages']
  lines = [
      f'# Perceiver GPU report: {env.get("device_kind", "?")} '
      f'x{env.get("num_devices", "?")}, JAX {env.get("jax_version", "?")}',
      '',
      f'Command: `{doc.get("command", "")}`; started {doc.get("started_utc")}'
      f'; {doc.get("elapsed_seconds")} s of a {doc.get("budget_seconds")} s '
      f'budget; complete: {doc.get("complete")}.',
      '',
      '| stage | status | precision | attention | batch | M | images/s | '
      'MFU | step ms | compile s | XLA memory GiB | note |',
      '|---|---|---|---|---|---|---|---|---|---|---|---|',
  ]
  for name, entry in stages.items():
    r = entry.get('result') or {}
    memory = r.get('xla_memory_bytes')
    step = r.get('step_seconds')
    lines.append('| ' + ' | '.join([
        name, entry['status'], _cell(r.get('precision')),
        _cell(r.get('attention_impl')), _cell(r.get('batch_size')),
        _cell(r.get('num_inputs')), _cell(r.get('examples_per_sec'),
                                          '{:.1f}'),
        _cell(r.get('mfu'), '{:.1%}'),
        _cell(None if step is None else 1e3 * step, '{:.2f}'),
        _cell(r.get('compile_seconds'), '{:.1f}'),
        _cell(None if memory is None else memory / 2**30, '{:.2f}'),
        '; '.join(entry[k] for k in ('note', 'detail', 'error')
                  if entry.get(k)).replace('|', '/'),
    ]) + ' |')
  ratio = doc.get('ratios', {})
  lines += ['', 'Images/s ratios: bf16 dot_product over float32: ' +
            _cell(ratio.get('headline_over_float32'), '{:.2f}x') +
            '; over bf16 einsum: ' +
            _cell(ratio.get('headline_over_einsum'), '{:.2f}x') + '.']
  largest = stages.get('max_inputs', {})
  if largest.get('largest_side'):
    fail = largest.get('smallest_failing_side')
    lines += ['', f'Largest square image whose batch-1 training step fits: '
              f'{largest["largest_side"]}x{largest["largest_side"]} '
              f'(M = {largest["largest_num_inputs"]}); ' + (
                  f'{fail}x{fail} ran out of memory.' if fail else
                  'no larger size was tried to failure.')]
  points = stages.get('scaling', {}).get('points') or []
  if points:
    lines += ['', 'Scaling in M (batch 1, 1D grid, headline latents):', '',
              '| M | step ms | XLA memory MiB | compile s |',
              '|---|---|---|---|']
    for p in points:
      memory = p.get('xla_memory_bytes')
      lines.append(
          f'| {p["num_inputs"]} | {1e3 * p["step_seconds"]:.2f} | '
          f'{_cell(None if memory is None else memory / 2**20, "{:.1f}")} | '
          f'{p["compile_seconds"]:.1f} |')
    if stages['scaling'].get('plot'):
      lines += ['', f'![scaling]({stages["scaling"]["plot"]})']
  rows = doc.get('compile_times') or []
  if rows:
    lines += ['', 'Compile times:', '',
              '| stage | batch | M | fits | lower s | compile s |',
              '|---|---|---|---|---|---|']
    for row in rows:
      lines.append(
          f'| {row["stage"]} | {_cell(row["batch"])} | '
          f'{_cell(row["num_inputs"])} | {_cell(row["fits"])} | '
          f'{_cell(row["lower_seconds"], "{:.1f}")} | '
          f'{row["compile_seconds"]:.1f} |')
  return '\n'.join(lines) + '\n'


# ------------------------------------------------------------------ stages


def headline_config(profile: Profile) -> Any:
  """configs/imagenet.py (shrunk for `--tiny`) in the headline's modes."""
  from configs import imagenet  # pylint: disable=g-import-not-at-top
  config = imagenet.get_config(profile.config_arg)
  with config.unlocked():
    config.model.encoder.update(dict(profile.encoder))
    config.model.encoder.update(precision='bfloat16',
                                attention_impl='dot_product')
  if profile.image_side is not None:
    config = with_square_image(config, profile.image_side)
  return config


def with_square_image(config: Any, side: int) -> Any:
  """A copy of `config` on side x side images (M = side^2 pixels)."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.data.image_shape = (side, side)
    config.model.input.index_dims = (side, side)
  return config


def _with(config: Any, *, batch_size: Optional[int] = None,
          **encoder: Any) -> Any:
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


def throughput_stage(profile: Profile, config: Any,
                     batches: Sequence[int]) -> Stage:
  """A stage measuring `config`'s train step at the largest batch that
  fits among `batches`."""
  from experiments import benchmark  # pylint: disable=g-import-not-at-top

  def stage(context: StageContext) -> Optional[str]:
    attempts = context.entry.setdefault('attempts', [])
    measured = {}

    def run(batch: int) -> dict[str, Any]:
      measured[batch] = benchmark.benchmark_train(
          _with(config, batch_size=batch), steps=profile.steps,
          warmup=profile.warmup, compiler_options=profile.compiler_options)
      return measured[batch]

    def on_attempt(attempt: dict[str, Any]) -> None:
      attempt.update(_attempt_fields(measured.get(attempt['batch'], {})))
      attempts.append(attempt)
      context.save()

    found = largest_batch(batches, run, can_start=context.can_start,
                          on_attempt=on_attempt, clock=context.clock)
    context.save(batch=found.batch, result=found.result)
    if found.batch is None and not found.note:
      context.save(detail=f'no batch of {sorted(batches)} fitted')
    return found.note or None
  return stage


def max_inputs_stage(profile: Profile, config: Any,
                     headline_batch: Callable[[], Optional[int]]) -> Stage:
  """A stage searching the largest square image whose batch-1 step fits.

  `headline_batch()`: the global batch that fitted the headline stage, or
  None (see `max_inputs_start`).
  """
  import jax  # pylint: disable=g-import-not-at-top
  from experiments import benchmark  # pylint: disable=g-import-not-at-top
  side0 = int(config.model.input.index_dims[0])
  limit = max(side0, profile.max_side)

  def stage(context: StageContext) -> Optional[str]:
    attempts = context.entry.setdefault('attempts', [])
    batch = headline_batch()
    start, known_fit = max_inputs_start(
        side0, batch and batch // jax.local_device_count(), limit)
    context.save(start_side=start, known_fit_side=known_fit or None)

    def fits(side: int) -> bool:
      one_each = jax.local_device_count()  # One example per device.
      result, error = unless_out_of_memory(lambda: benchmark.benchmark_train(
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
                          known_fit=known_fit,
                          can_start=context.can_start, clock=context.clock)
    side = search.largest_fit
    context.save(largest_side=side,
                 largest_num_inputs=None if side is None else side * side,
                 smallest_failing_side=search.smallest_fail)
    if search.note and not search.stopped:
      context.save(detail=search.note)
    return search.note if search.stopped else None
  return stage


def scaling_stage(profile: Profile, config: Any, out_dir: str,
                  largest_inputs: Callable[[], Optional[int]]) -> Stage:
  """A stage timing the batch-1 step against M, and plotting it.

  M runs over `profile.scaling_inputs`, up to the largest M of the
  `max_inputs` stage (`largest_inputs()`, None if unknown).
  """
  from experiments import benchmark  # pylint: disable=g-import-not-at-top

  def stage(context: StageContext) -> Optional[str]:
    low, high, num = profile.scaling_inputs
    if largest_inputs():
      high = max(low, min(high, largest_inputs()))
    points = context.entry.setdefault('points', [])
    attempts = context.entry.setdefault('attempts', [])
    stopped = None
    expected = 0.0
    for m in benchmark.log_spaced(low, high, num):
      if not context.can_start(expected):
        stopped = (f'stopped before M={m}: the next point would overrun the '
                   f'stage cap')
        break
      begin = context.clock()
      results, error = unless_out_of_memory(functools.partial(
          benchmark.benchmark_scaling, config, [m], steps=profile.steps,
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
      benchmark.write_scaling_plot(points, os.path.join(out_dir, PLOT_NAME))
      context.save(plot=PLOT_NAME)
    return stopped
  return stage


def run_report(profile: Profile, out_dir: str, *, budget_seconds: float,
               caps: Mapping[str, float], header: Mapping[str, Any],
               start: Optional[float] = None) -> Report:
  """Runs every stage of `profile` into `out_dir`; returns the report.

  The budget counts from `start` (a `time.monotonic()` reading; default:
  now).
  """
  report = Report(out_dir, budget_seconds=budget_seconds,
                  reserve_seconds=profile.reserve_seconds, header=header,
                  start=start)
  watchdog = start_watchdog(report)
  try:
    _run_stages(report, profile, caps)
  finally:
    watchdog.cancel()
  report.finish()
  return report


def _run_stages(report: Report, profile: Profile,
                caps: Mapping[str, float]) -> None:
  """The environment, then each stage in order, into `report`."""
  from experiments import benchmark  # pylint: disable=g-import-not-at-top
  environment = benchmark._environment()  # pylint: disable=protected-access
  environment.update(_device_memory())
  report.doc['environment'] = environment
  report.save()
  config = headline_config(profile)

  def batch_of(name: str) -> Optional[int]:
    return report.stages[name].get('batch')

  def below_headline() -> list[int]:
    top = batch_of('headline') or max(profile.batches)
    return [b for b in profile.batches if b <= top]

  plan = (
      ('headline', lambda: throughput_stage(profile, config,
                                            profile.batches)),
      ('float32', lambda: throughput_stage(
          profile, _with(config, precision='float32'), below_headline())),
      ('einsum', lambda: throughput_stage(
          profile, _with(config, attention_impl='einsum'),
          below_headline())),
      ('max_inputs', lambda: max_inputs_stage(
          profile, config, lambda: batch_of('headline'))),
      ('scaling', lambda: scaling_stage(
          profile, config, report.out_dir,
          lambda: report.stages['max_inputs'].get('largest_num_inputs'))),
  )
  for name, make in plan:
    report.run_stage(name, make(), cap_seconds=caps[name],
                     min_seconds=profile.min_seconds[name])


def _device_memory() -> dict[str, Any]:
  """The device's memory limit, the allocator's settings and the
  compilation cache, as seen."""
  import jax  # pylint: disable=g-import-not-at-top
  try:
    stats = jax.local_devices()[0].memory_stats() or {}
  except Exception:  # pylint: disable=broad-except
    stats = {}  # Not every backend reports memory (CPU).
  return dict(
      device_memory_limit_bytes=stats.get('bytes_limit'),
      # Compile times are reads where a persistent cache holds the program.
      compilation_cache_dir=jax.config.jax_compilation_cache_dir,
      allocator_settings={k: v for k, v in os.environ.items() if k in (
          'XLA_PYTHON_CLIENT_MEM_FRACTION', 'XLA_PYTHON_CLIENT_PREALLOCATE',
          'XLA_PYTHON_CLIENT_ALLOCATOR', 'XLA_FLAGS', 'JAX_PLATFORMS')})


def parse_caps(items: Sequence[str], defaults: Mapping[str, float]
               ) -> dict[str, float]:
  """`defaults` with `name=seconds` items applied."""
  caps = dict(defaults)
  for item in items:
    name, sep, value = item.partition('=')
    if not sep or name not in caps:
      raise ValueError(f'--stage_seconds takes name=seconds with a name of '
                       f'{", ".join(STAGES)}; got {item!r}.')
    try:
      caps[name] = float(value)
    except ValueError:
      raise ValueError(f'--stage_seconds: {value!r} is not a number of '
                       f'seconds (in {item!r}).') from None
    # 0 skips a stage (with its note); a negative or NaN cap is a typo.
    if not caps[name] >= 0.0:
      raise ValueError(f'--stage_seconds: {value!r} is not a number of '
                       f'seconds (in {item!r}).')
  return caps


def main(argv: Sequence[str]) -> None:
  host_memory.keep_freed_memory()  # Process-wide, before JAX allocates.
  start = time.monotonic()  # The budget includes JAX's start-up.
  cli.no_arguments(argv)
  profile = tiny_profile() if _TINY.value else FULL
  caps = parse_caps(_STAGE_SECONDS.value, profile.caps)
  budget = (_BUDGET.value if _BUDGET.value is not None else
            profile.budget_seconds)
  import jax  # pylint: disable=g-import-not-at-top
  if not _TINY.value and jax.default_backend() == 'cpu':
    raise ValueError('JAX sees no accelerator (backend cpu): the full report '
                     'is for a GPU or TPU; --tiny runs its CPU-sized form.')
  header = dict(
      command='python -m experiments.gpu_report ' + ' '.join(
          sys.argv[1:]),
      tiny=_TINY.value,
      started_utc=datetime.datetime.now(datetime.timezone.utc).strftime(
          '%Y-%m-%d %H:%M:%S UTC'))
  report = run_report(profile, _OUT.value, budget_seconds=budget, caps=caps,
                      header=header, start=start)
  statuses = {name: s['status'] for name, s in report.stages.items()}
  print(json.dumps(dict(out=_OUT.value, elapsed_seconds=report.doc[
      'elapsed_seconds'], stages=statuses)), flush=True)
  failed = [name for name, status in statuses.items() if status == 'failed']
  if failed:
    print(f'error: stage(s) {", ".join(failed)} failed (tracebacks above and '
          f'in {os.path.join(_OUT.value, JSON_NAME)})', file=sys.stderr,
          flush=True)
    sys.exit(1)


if __name__ == '__main__':
  flags.mark_flag_as_required('out')
  cli.run(main)
