"""Tests of experiments.gpu_report and perceiver_jax.benchmarking.report:
the searches, the time caps, the files.

The searches and the caps run on fakes (a step that runs out of memory
above a batch, a `fits(M)` with a boundary, a clock that stage functions
move); the command itself runs once, in its `--tiny` form on one CPU
device. No timing is asserted.
"""

import json
import os

import jax
import numpy as np
import pytest

from experiments import gpu_report
from perceiver_jax.benchmarking import machine
from perceiver_jax.benchmarking import report as report_lib
from perceiver_jax.benchmarking import steps
from perceiver_jax.benchmarking import summary
from tests.helpers import command_utils


def out_of_memory(what: str = '1.5GiB') -> Exception:
  """The error XLA raises when a device allocation fails."""
  return jax.errors.JaxRuntimeError(
      f'RESOURCE_EXHAUSTED: Out of memory while trying to allocate {what}.')


def test_out_of_memory_is_recognised_and_nothing_else():
  assert report_lib.is_out_of_memory(out_of_memory())
  assert not report_lib.is_out_of_memory(
      jax.errors.JaxRuntimeError('INTERNAL: cuDNN failed'))
  assert not report_lib.is_out_of_memory(RuntimeError('RESOURCE_EXHAUSTED'))
  assert not report_lib.is_out_of_memory(MemoryError())


def context(clock=lambda: 0.0, deadline=float('inf')):
  """A stage's context outside a report (saving writes nothing)."""
  return report_lib.StageContext(entry={}, deadline=deadline, clock=clock)


def test_largest_batch_is_the_largest_that_does_not_run_out_of_memory():
  tried = []

  def step(batch):
    tried.append(batch)
    if batch > 64:
      raise out_of_memory(f'{batch} examples')
    return {'images_per_sec': 10.0 * batch}

  stage = context()
  report_lib.largest_batch(stage, [32, 256, 64, 128], step)
  assert tried == [256, 128, 64]  # Largest first; 32 never needed.
  entry = stage.entry
  assert entry['batch'] == 64 and entry['result'] == {'images_per_sec': 640.0}
  assert [(a['batch'], a['fits']) for a in entry['attempts']] == [
      (256, False), (128, False), (64, True)]
  assert 'RESOURCE_EXHAUSTED' in entry['attempts'][0]['error']
  assert '256 examples' in entry['attempts'][0]['error']
  assert stage.stopped is None and 'detail' not in entry

  # Nothing fits: no batch, every size tried.
  def never(batch):
    raise out_of_memory()
  stage = context()
  report_lib.largest_batch(stage, [4, 2], never)
  assert stage.entry['batch'] is None and len(stage.entry['attempts']) == 2
  assert stage.entry['detail'] == 'no batch of [2, 4] fitted'

  # Any other error is a bug, not "does not fit".
  def broken(batch):
    raise jax.errors.JaxRuntimeError('INTERNAL: ptxas exited with status 1')
  with pytest.raises(jax.errors.JaxRuntimeError, match='INTERNAL'):
    report_lib.largest_batch(context(), [4, 2], broken)
  with pytest.raises(ValueError, match='shape'):
    report_lib.largest_batch(context(), [4], lambda b: (_ for _ in ()).throw(
        ValueError('bad shape')))


def test_largest_batch_stops_when_the_next_attempt_would_overrun():
  now = [0.0]

  def step(batch):
    now[0] += 4.0  # Each attempt takes 4 s, and runs out of memory.
    raise out_of_memory()

  # 10 s: two attempts of 4 s; a third would end at 12 s.
  stage = context(clock=lambda: now[0], deadline=10.0)
  report_lib.largest_batch(stage, [256, 128, 64, 32], step)
  assert [a['batch'] for a in stage.entry['attempts']] == [256, 128]
  assert [a['seconds'] for a in stage.entry['attempts']] == [4.0, 4.0]
  assert stage.entry['batch'] is None and 'detail' not in stage.entry
  assert stage.stopped.startswith('stopped before batch 64')


def test_largest_size_doubles_then_bisects():
  boundary = 5000
  search = report_lib.largest_size(lambda m: m <= boundary, 256,
                                   limit=10**7)
  sizes = [m for m, _ in search.probes]
  # Doubling from 256 until 8192 fails...
  assert search.probes[:6] == [(256, True), (512, True), (1024, True),
                               (2048, True), (4096, True), (8192, False)]
  # ...then each probe halves the bracket [4096, 8192] down to width 1:
  # log2(4096) = 12 probes.
  assert len(sizes) == 6 + 12
  low, high = 4096, 8192
  for m, ok in search.probes[6:]:
    assert low < m < high
    low, high = (m, high) if ok else (low, m)
  assert (search.largest_fit, search.smallest_fail) == (5000, 5001)
  for m, ok in search.probes:
    assert ok == (m <= boundary)

  # A tolerance closes the bracket early, within 5% of the fit.
  loose = report_lib.largest_size(lambda m: m <= boundary, 256,
                                  limit=10**7, tolerance=0.05)
  assert loose.largest_fit <= boundary < loose.smallest_fail
  assert loose.smallest_fail <= loose.largest_fit * 1.05
  assert len(loose.probes) < len(search.probes)


def test_largest_size_limits_start_failures_and_time():
  # Everything fits: growth stops at the limit, which is probed itself.
  search = report_lib.largest_size(lambda m: True, 3, limit=20)
  assert [m for m, _ in search.probes] == [3, 6, 12, 20]
  assert search.largest_fit == 20 and search.smallest_fail is None
  # The start does not fit: bisection below it.
  search = report_lib.largest_size(lambda m: m <= 2, 8, limit=100)
  assert search.probes == [(8, False), (4, False), (2, True), (3, False)]
  assert (search.largest_fit, search.smallest_fail) == (2, 3)
  # `fits` says stop (out of time) after three probes.
  calls = []
  search = report_lib.largest_size(
      lambda m: None if len(calls) == 3 else calls.append(m) or True, 1,
      limit=1000)
  assert calls == [1, 2, 4] and search.probes == [(1, True), (2, True),
                                                  (4, True)]
  assert (search.largest_fit, search.smallest_fail) == (4, None)
  # A size known to fit is the bisection's floor, never probed.
  search = report_lib.largest_size(lambda m: m <= 90, 100, limit=1000,
                                   known_fit=80)
  assert [m for m, _ in search.probes] == [100, 90, 95, 92, 91]
  assert (search.largest_fit, search.smallest_fail) == (90, 91)
  # No probe fits: the known size is the answer.
  search = report_lib.largest_size(lambda m: m <= 80, 100, limit=1000,
                                   known_fit=80)
  assert [m for m, _ in search.probes] == [100, 90, 85, 82, 81]
  assert (search.largest_fit, search.smallest_fail) == (80, 81)
  with pytest.raises(ValueError, match='start <= limit'):
    report_lib.largest_size(lambda m: True, 10, limit=5)
  with pytest.raises(ValueError, match='known_fit <= start'):
    report_lib.largest_size(lambda m: True, 10, limit=50, known_fit=20)


def test_the_largest_input_search_starts_from_the_headline_batch():
  # 24 images of 224x224 fitted: one of 24 * 50176 = 1204224 pixels
  # probably does, the side rounded down (1097^2 = 1203409 < 1098^2).
  assert report_lib.max_inputs_start(224, 24, 4096) == (1097, 224)
  assert report_lib.max_inputs_start(224, 24, 1000) == (1000, 224)
  assert report_lib.max_inputs_start(224, None, 4096) == (224, 0)
  assert report_lib.max_inputs_start(16, 4, 45) == (32, 16)


def test_square_sides_double_the_pixels():
  side = 224
  for _ in range(6):
    bigger = report_lib.grow_square_side(side)
    # The smallest side with at least twice the pixels.
    assert bigger**2 >= 2 * side**2 > (bigger - 1)**2
    side = bigger


class FakeClock:

  def __init__(self):
    self.now = 1000.0

  def __call__(self):
    return self.now


def read_json(out_dir):
  with open(os.path.join(out_dir, report_lib.JSON_NAME)) as f:
    return json.load(f)


def test_stage_caps_and_the_budget(tmp_path):
  clock = FakeClock()
  stages = ('first', 'capped', 'long', 'searching', 'late')
  report = report_lib.Report(
      str(tmp_path), budget_seconds=100, reserve_seconds=5,
      header=dict(command='test'), stages=stages, clock=clock)
  # Every stage is in the file from the start.
  assert {name: s['status'] for name, s in read_json(tmp_path)[
      'stages'].items()} == dict.fromkeys(stages, 'pending')

  def first(context):
    assert context.left() == 20  # Its cap, well inside the budget.
    clock.now += 10
    context.save(result=dict(examples_per_sec=50.0, batch_size=8))
    # Saved as it goes: a kill now would leave this in the file.
    assert read_json(tmp_path)['stages']['first']['result'][
        'batch_size'] == 8

  assert report.run_stage('first', first, cap_seconds=20,
                          min_seconds=5) == 'done'

  ran = []
  assert report.run_stage('capped', ran.append, cap_seconds=0.5,
                          min_seconds=5) == 'skipped'
  assert ran == []
  assert 'cap 0.5 s' in report.stages['capped']['note']

  def long(context):
    # The budget (100 s less 5 s of reserve) caps it below its 200 s.
    assert context.left() == 85
    clock.now += 70

  report.run_stage('long', long, cap_seconds=200, min_seconds=5)

  def searching(context):
    # 15 s left: attempts of 6 s each, all out of memory; the third would
    # overrun, so the search stops and the stage is partial.
    def step(batch):
      clock.now += 6
      raise out_of_memory()
    report_lib.largest_batch(context, [8, 4, 2, 1], step)

  assert report.run_stage('searching', searching, cap_seconds=60,
                          min_seconds=1) == 'partial'
  entry = report.stages['searching']
  assert len(entry['attempts']) == 2 and entry['seconds'] == 12
  assert entry['note'].startswith('stopped before batch 2')
  # Saved after each attempt: the file holds both.
  assert len(read_json(tmp_path)['stages']['searching']['attempts']) == 2

  # 3 s of the budget left: the last stage is skipped, not started.
  assert report.run_stage('late', ran.append, cap_seconds=60,
                          min_seconds=5) == 'skipped'
  assert ran == [] and '3.0 s left of the budget' in report.stages[
      'late']['note']
  report.finish()
  doc = read_json(tmp_path)
  assert doc['complete'] and doc['elapsed_seconds'] == 92
  assert [doc['stages'][n]['status'] for n in stages] == [
      'done', 'skipped', 'done', 'partial', 'skipped']
  markdown = (tmp_path / report_lib.MARKDOWN_NAME).read_text()
  assert '| capped | skipped |' in markdown and 'cap 0.5 s' in markdown
  assert '| first | done | - | - | 8 | - | 50.0 |' in markdown


def test_a_failing_stage_is_recorded_and_the_next_still_runs(tmp_path,
                                                             capsys):
  report = report_lib.Report(str(tmp_path), budget_seconds=100,
                             reserve_seconds=0, header={},
                             stages=('broken', 'after'))

  def broken(context):
    raise KeyError('missing_field')

  assert report.run_stage('broken', broken, cap_seconds=10,
                          min_seconds=0) == 'failed'
  assert report.run_stage('after', lambda c: None, cap_seconds=10,
                          min_seconds=0) == 'done'
  doc = read_json(tmp_path)
  assert doc['stages']['broken']['error'] == "KeyError: 'missing_field'"
  assert 'Traceback' in doc['stages']['broken']['traceback']
  assert 'missing_field' in capsys.readouterr().err


def test_bad_budget_and_caps_are_refused(tmp_path):
  with pytest.raises(ValueError, match='budget_seconds must be positive'):
    report_lib.Report(str(tmp_path), budget_seconds=0, reserve_seconds=0,
                      header={})
  defaults = dict(headline=150.0, scaling=60.0)
  assert report_lib.parse_caps(['scaling=5'], defaults) == dict(
      headline=150.0, scaling=5.0)
  for bad in ('scaling', 'warp=5'):
    with pytest.raises(ValueError, match='name=seconds'):
      report_lib.parse_caps([bad], defaults)
  for bad in ('scaling=soon', 'scaling=-5', 'scaling=nan'):
    with pytest.raises(ValueError, match='not a number'):
      report_lib.parse_caps([bad], defaults)
  assert report_lib.parse_caps(['scaling=0'], defaults)['scaling'] == 0.0


def test_mfu_uses_the_peak_of_the_runs_precision(monkeypatch):
  """H200's dense peaks (NVIDIA's data sheet: 1,979 and 989 TFLOPS with
  sparsity, for BF16 and TF32), half of them dense."""
  for kind, precision, sparse in (('NVIDIA H200', 'bfloat16', 1979e12),
                                  ('NVIDIA H200', 'float32', 989e12),
                                  ('NVIDIA H200 NVL', 'bfloat16', 1671e12),
                                  ('NVIDIA H100 PCIe', 'float32', 756e12),
                                  ('NVIDIA H100 80GB HBM3', 'bfloat16',
                                   1979e12)):
    assert np.isclose(machine.peak_flops(kind, precision), sparse / 2,
                      rtol=2e-3), kind  # Rounded to whole TFLOPS.
  environment = dict(machine.environment(), device_kind='NVIDIA H200',
                     num_devices=1)
  monkeypatch.setattr(machine, 'environment', lambda: environment)
  config = gpu_report.headline_config(report_lib.TINY)
  _, forward = summary.nominal_flops_per_example(config)
  for precision, peak in (('bfloat16', 989e12), ('float32', 494e12)):
    with config.unlocked():
      config.model.encoder.precision = precision
    result = steps._finish(dict(examples_per_sec=1e6,
                                executed_flops_per_example=1.0), config,
                           True, None, training=True)
    assert result['peak_flops_per_device'] == peak
    assert np.isclose(result['mfu'], 3 * forward * 1e6 / peak)


def test_tiny_command_runs_every_stage(tmp_path):
  out = tmp_path / 'report'
  caps = ','.join(f'{name}=200' for name in report_lib.STAGES)
  proc = command_utils.run_module(
      'experiments.gpu_report', '--tiny', f'--out={out}',
      '--budget_seconds=600', f'--stage_seconds={caps}', timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads(proc.stdout.strip().splitlines()[-1])
  assert summary['stages'] == dict.fromkeys(report_lib.STAGES, 'done')
  doc = read_json(out)
  assert doc['complete'] and doc['tiny'] and 'stopped' not in doc
  assert doc['environment']['backend'] == 'cpu'
  assert doc['environment']['num_devices'] == 1
  assert all(rate > 0 for rate in doc['environment'][
      'matmul_flops_per_sec'].values())
  stages = doc['stages']

  # Throughput: the largest batch tried (4) fits on a CPU.
  expected = dict(headline=('bfloat16', 'dot_product'),
                  float32=('float32', 'dot_product'),
                  einsum=('bfloat16', 'einsum'))
  for name, (precision, attention) in expected.items():
    entry = stages[name]
    result = entry['result']
    assert entry['batch'] == 4 and result['batch_size'] == 4
    assert [(a['batch'], a['fits']) for a in entry['attempts']] == [
        (4, True)]
    assert (result['precision'], result['attention_impl']) == (
        precision, attention)
    assert result['num_inputs'] == 16 * 16
    assert result['examples_per_sec'] > 0 and np.isfinite(result['loss'])
    assert result['nominal_flops_per_example'] > 0
    assert result['mfu'] is None  # No peak for CPUs.
    assert result['executed_flops_per_example'] > 0
    assert result['machine_fraction'] > 0
  rates = {n: stages[n]['result']['examples_per_sec'] for n in expected}
  assert np.isclose(doc['ratios']['headline_over_float32'],
                    rates['headline'] / rates['float32'])
  assert np.isclose(doc['ratios']['headline_over_einsum'],
                    rates['headline'] / rates['einsum'])

  # Largest input: from 32x32 (4 images of 16x16 fitted), M doubled to
  # the limit 45 (46 rounded down): both fit on a CPU.
  largest = stages['max_inputs']
  assert (largest['start_side'], largest['known_fit_side']) == (32, 16)
  assert [(a['side'], a['num_inputs'], a['batch'], a['fits'])
          for a in largest['attempts']] == [
              (32, 1024, 1, True), (45, 2025, 1, True)]
  assert largest['largest_side'] == 45
  assert largest['largest_num_inputs'] == 2025
  assert largest['smallest_failing_side'] is None
  assert 'limit 45' in largest['detail']

  # Scaling: M from 64 to 1024 at batch 1, with its plot.
  scaling = stages['scaling']
  assert [p['num_inputs'] for p in scaling['points']] == [64, 1024]
  assert all(p['batch_size'] == 1 and p['step_seconds'] > 0
             for p in scaling['points'])
  plot = (out / report_lib.PLOT_NAME).read_bytes()
  assert plot[:8] == b'\x89PNG\r\n\x1a\n' and scaling['plot'] == 'scaling.png'

  # Compile times: one row per program compiled, in stage order.
  rows = doc['compile_times']
  assert [r['stage'] for r in rows] == (
      ['headline', 'float32', 'einsum'] + ['max_inputs'] * 2 +
      ['scaling'] * 2)
  assert all(r['compile_seconds'] > 0 for r in rows)

  markdown = (out / report_lib.MARKDOWN_NAME).read_text()
  assert '| stage | status | precision |' in markdown
  for name in report_lib.STAGES:
    assert f'| {name} | done |' in markdown
  assert '45x45 (M = 2025)' in markdown and '![scaling](scaling.png)' in (
      markdown)


def test_command_line_errors_are_one_line(tmp_path):
  # The full report refuses a CPU-only JAX at once, before compiling.
  proc = command_utils.run_module('experiments.gpu_report',
                                  f'--out={tmp_path}', timeout=120)
  assert proc.returncode == 2  # A user's mistake (perceiver_jax.cli).
  assert proc.stderr.strip().splitlines() == [
      'error: ValueError: JAX sees no accelerator (backend cpu): the full '
      'report is for a GPU or TPU; --tiny runs its CPU-sized form.']
  proc = command_utils.run_module('experiments.gpu_report', '--tiny',
                                  timeout=120)
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr
  assert proc.stderr.startswith('error: ') and '--out' in proc.stderr
