"""Tests of perceiver_jax.benchmarking.profile's HLO parsing (behind
experiments.gradient_profile) and of XLA cost reading (no timings)."""

import jax
import jax.numpy as jnp

from perceiver_jax.benchmarking import machine
from perceiver_jax.benchmarking import profile


def test_op_names_map_hlo_instructions_to_jax_ops():
  hlo = '\n'.join([
      '%fused_computation.3 (param_0: f32[4]) -> f32[4] {',
      '  ROOT %dot.7 = f32[2,2]{1,0} dot(%a, %b), lhs_contracting_dims={1}, '
      'metadata={op_name="jit(f)/mlp/hidden/dot_general" stack_frame_id=3}',
      '  %copy_bitcast_fusion.51 = f32[64,2048]{1,0} fusion(%x), '
      'kind=kLoop, metadata={op_name="jit(f)/transpose(jvp(f))/norm/mul"}',
      '  %param_0 = f32[4]{0} parameter(0)',
      '}'])
  assert profile.op_names(hlo) == {
      'dot.7': 'jit(f)/mlp/hidden/dot_general',
      'copy_bitcast_fusion.51': 'jit(f)/transpose(jvp(f))/norm/mul'}


def test_xla_cost_counts_a_matmul():
  """A [4, 8] x [8, 16] product: 2 * 4 * 8 * 16 FLOPs (by hand)."""
  compiled = jax.jit(lambda a, b: a @ b).lower(
      jnp.zeros((4, 8)), jnp.zeros((8, 16))).compile()
  flops, bytes_accessed = machine.xla_cost(compiled)
  assert flops == 2 * 4 * 8 * 16
  # At least both operands and the result, float32.
  assert bytes_accessed >= 4 * (4 * 8 + 8 * 16 + 4 * 16)


def test_a_fusion_without_metadata_takes_its_computations_op_name():
  hlo = '\n'.join([
      '%fused_dot (p0: f32[2,2], p1: f32[2,2]) -> f32[2,2] {',
      '  %p0 = f32[2,2]{1,0} parameter(0)',
      '  ROOT %dot.1 = f32[2,2]{1,0} dot(%p0, %p1), '
      'metadata={op_name="jit(f)/cross/attention/dot_general"}',
      '}',
      '',
      'ENTRY %main.9 (a: f32[2,2]) -> f32[2,2] {',
      '  ROOT %ynn_fusion.4 = f32[2,2]{1,0} fusion(%a, %a), kind=kCustom, '
      'calls=%fused_dot',
      '}'])
  names = profile.op_names(hlo)
  assert names['ynn_fusion.4'] == 'jit(f)/cross/attention/dot_general'
  assert names['dot.1'] == 'jit(f)/cross/attention/dot_general'


def test_module_path_strips_transformations_methods_and_control_flow():
  backward = ('jit(loss)/transpose(jvp(perceiver))/_encode/perceiver/while/'
              'body/closed_call/latent_transformer_0/self_attend_1/attention/'
              'bhnm,bmhd->bhnd/dot_general')
  assert (profile.module_path(backward, 3) ==
          'perceiver/latent_transformer_0/self_attend_1')
  forward = ('jit(loss)/jvp(perceiver)/_encode/perceiver/cross_attend_0/'
             'attention/_attend_unprojected/attention/reduce_max')
  assert profile.module_path(forward, 2) == 'perceiver/cross_attend_0'
  assert (profile.module_path(forward, 9) ==
          'perceiver/cross_attend_0/attention')
  assert (profile.module_path('jit(loss)/jvp()/concatenate', 2) ==
          '(outside modules)')


def test_by_module_sums_rows_and_shares():
  rows = [dict(op='a', ms_per_call=3.0, jax_op='jit(f)/jvp(m)/m/x/dot'),
          dict(op='b', ms_per_call=1.0, jax_op='jit(f)/transpose(jvp(m))/m/x/'
               'add'),
          dict(op='c', ms_per_call=4.0, jax_op=None)]
  assert profile.by_module(rows, 2) == [
      dict(module='m/x', ms_per_call=4.0, share=0.5),
      dict(module='(no metadata)', ms_per_call=4.0, share=0.5)]
