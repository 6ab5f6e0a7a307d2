"""experiments/compare_peers.py: interleaved timing rounds and its JSON."""

import json

from experiments import compare_peers
from perceiver_jax.benchmarking import machine
from perceiver_jax.benchmarking import peers


def test_rounds_rotate_the_contenders_after_their_warmup():
  calls = []
  seconds = machine.time_in_rounds(
      [lambda: calls.append('a'), None, lambda: calls.append('b')],
      rounds=3, calls=2, warmup=1)
  # Round r starts with contender r: a, then (c missing) b, then b, a.
  assert calls == ['a', 'b'] + ['a', 'a', 'b', 'b'] + ['b', 'b', 'a', 'a'] + [
      'b', 'b', 'a', 'a']
  assert [len(s) for s in seconds] == [3, 0, 3]
  assert all(t >= 0 for s in seconds for t in s)


def test_paired_speedup_is_the_median_of_round_ratios():
  # Ratios 2.0, 1.5 and 3.0 (by hand): median 2.0.
  assert machine.paired_speedup([2.0, 3.0, 3.0], [1.0, 2.0, 1.0]) == 2.0


def test_efficiency_of_a_timed_step():
  # 1e6 FLOPs an example, batch 4 in 0.5 s: 8e6 FLOP/s, half of 1.6e7.
  fields = dict(executed_flops_per_example=1e6)
  assert peers.efficiency(fields, 4, 0.5, dict(float32=1.6e7),
                          'float32') == dict(executed_flops_per_sec=8e6,
                                             machine_fraction=0.5)
  assert peers.efficiency({}, 4, 0.5, dict(float32=1.6e7), 'float32') == {}


def test_main_prints_one_json_line_per_implementation_and_a_summary(
    capsys, monkeypatch):
  # The comparison's own latents (256 x 256) cost a minute of compiling
  # and seconds a step here; the plumbing is the same with fewer, alike.
  monkeypatch.setitem(peers.LATENTS, 'num_latents', 8)
  monkeypatch.setitem(peers.LATENTS, 'width', 16)
  compare_peers.main(['--image_size=8', '--batch_size=8', '--rounds=2',
                      '--steps=1', '--warmup=0', '--fast_compile',
                      '--precision=bfloat16', '--peer_precision=bfloat16'])
  lines = [json.loads(line) for line in
           capsys.readouterr().out.strip().splitlines()]
  assert len(lines) == 5
  *results, summary = lines
  assert [r['name'] for r in results] == [
      'perceiver_jax (ours)', 'perceiver-pytorch (lucidrains)',
      'transformers PerceiverForImageClassificationFourier',
      'perceiver_jax (ours), 1 cross-attend']
  for result in results:
    assert result['status'] in ('ok', 'not installed'), result
    if result['status'] == 'ok':
      assert len(result['round_seconds']) == 2
      assert result['step_seconds_min'] <= result['step_seconds']
      assert result['params'] > 0 and result['forward_flops_per_example'] > 0
  ours, ours_one = results[0], results[3]
  assert ours['status'] == ours_one['status'] == 'ok'
  assert ours['precision'] == ours_one['precision'] == 'bfloat16'
  assert all(r['precision'] == 'bfloat16' for r in results
             if r['status'] == 'ok')
  assert (summary['precision'], summary['peer_precision']) == (
      'bfloat16', 'bfloat16')
  assert summary['devices'] == ours['devices'] == 8  # conftest's.
  # One cross-attend fewer: one cross-attend's weights fewer.
  assert ours['params'] > ours_one['params']
  assert summary['summary'] is True
  assert summary['matmul_flops_per_sec']['bfloat16'] > 0
  assert summary['device_kind'] == 'cpu' and 'load_average_1m' in summary
  for result in (ours, ours_one):
    assert result['executed_flops_per_example'] > 0
    assert result['machine_fraction'] > 0
  assert summary['machine_fraction'] == ours['machine_fraction']
  assert sorted(summary['not_installed']) == sorted(
      r['name'] for r in results if r['status'] != 'ok')
  for name, ratio in summary['speedup_vs'].items():
    peer = next(r for r in results if r['name'] == name)
    assert ratio == peer['step_seconds'] / ours['step_seconds']


def test_released_forward_times_ours_and_transformers_on_the_same_weights(
    capsys):
  compare_peers.main(['--released=conv', '--tiny', '--batch_size=2',
                      '--rounds=2', '--steps=1', '--warmup=0'])
  lines = [json.loads(line) for line in
           capsys.readouterr().out.strip().splitlines()]
  assert len(lines) == 3
  ours, theirs, summary = lines
  assert ours['name'] == 'perceiver_jax (ours) conv (forward)'
  assert theirs['name'] == (
      'transformers PerceiverForImageClassificationConvProcessing (forward)')
  assert theirs['status'] == 'ok'  # A test dependency (requirements-test.txt).
  # Same function on the same weights (transformers' initialisation).
  assert ours['max_abs_logit_difference'] < 1e-4
  # Ours also counts the BatchNorm's running mean and variance (64 each).
  assert ours['params'] == theirs['params'] + 2 * 64
  for result in (ours, theirs):
    assert result['image_size'] == 32 and len(result['round_seconds']) == 2
    assert result['images_per_second'] == 2 / result['forward_seconds']
  assert summary['speedup_vs_transformers'] == (
      theirs['forward_seconds'] / ours['forward_seconds'])
  assert ours['executed_flops_per_example'] > 0
  assert summary['machine_fraction'] == ours['machine_fraction'] > 0
