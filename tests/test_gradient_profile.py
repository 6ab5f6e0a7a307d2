"""Tests of experiments/gradient_profile.py's HLO parsing (no timings)."""

from experiments import gradient_profile


def test_op_names_map_hlo_instructions_to_jax_ops():
  hlo = '\n'.join([
      '%fused_computation.3 (param_0: f32[4]) -> f32[4] {',
      '  ROOT %dot.7 = f32[2,2]{1,0} dot(%a, %b), lhs_contracting_dims={1}, '
      'metadata={op_name="jit(f)/mlp/hidden/dot_general" stack_frame_id=3}',
      '  %copy_bitcast_fusion.51 = f32[64,2048]{1,0} fusion(%x), '
      'kind=kLoop, metadata={op_name="jit(f)/transpose(jvp(f))/norm/mul"}',
      '  %param_0 = f32[4]{0} parameter(0)',
      '}'])
  assert gradient_profile._op_names(hlo) == {
      'dot.7': 'jit(f)/mlp/hidden/dot_general',
      'copy_bitcast_fusion.51': 'jit(f)/transpose(jvp(f))/norm/mul'}
