"""Tests of experiments/model_summary.py: parameters and FLOPs per config.

Expected numbers are derived by hand (docs/paper.md sections 1 and 4), not from
the code.
"""

import json
import subprocess
import sys

from configs import imagenet
from experiments import model_summary
from tests.helpers.model_test_utils import cross_attend_params
from tests.helpers.model_test_utils import linear_params
from tests.helpers.model_test_utils import self_attend_params
from tests.helpers.command_utils import REPO


# ImageNet headline: M = 224 * 224 inputs of C = 3 + 2 * (2 * 64 + 1) = 261
# channels, N = 512 latents of D = 1024, 8 cross-attends, 8 x 6 self-attends.
M, C, N, D = 224 * 224, 261, 512, 1024


def matmul_flops(*, kv_computations: int) -> int:
  """Multiply-add FLOPs (2 per multiply-add) of the headline's matmuls."""
  per_cross_attend = (2 * N * D * C +  # queries
                      2 * N * M * C +  # logits
                      2 * N * M * C +  # weighted sum of values
                      2 * N * C * D +  # output projection
                      2 * 2 * N * D * D)  # MLP
  per_kv = 2 * 2 * M * C * C  # keys and values
  per_self_attend = (4 * 2 * N * D * D +  # Q, K, V, output
                     2 * 2 * N * N * D +  # logits, weighted sum
                     2 * 2 * N * D * D)  # MLP
  head = 2 * D * 1000
  return (8 * per_cross_attend + kv_computations * per_kv +
          48 * per_self_attend + head)


def test_imagenet_summary(capsys):
  result = model_summary.report(imagenet.get_config())
  out = capsys.readouterr().out
  last = out.strip().splitlines()[-1]
  assert json.loads(last) == result
  assert list(result)[:2] == ['params', 'flops_per_example']

  expected_params = (N * D + 2 * cross_attend_params(C, D) +
                     6 * self_attend_params(D) + linear_params(D, 1000))
  assert result['params'] == expected_params == 44_912_254

  # The paper's 707.2B, within 2%.
  flops = result['flops_per_example']
  assert abs(flops / 707.2e9 - 1) < 0.02
  # The matmuls, counted by hand, are all but a fraction of a percent of it
  # (the rest: softmax, LayerNorm, GELU, residual adds).
  nominal_matmuls = matmul_flops(kv_computations=8)
  assert nominal_matmuls <= flops <= 1.01 * nominal_matmuls
  # Reusing K/V skips 6 of the 8 key/value computations (cross-attends 2..8
  # share one set, computed once).
  reuse = result['flops_per_example_with_kv_reuse']
  reuse_matmuls = matmul_flops(kv_computations=2)
  assert reuse_matmuls <= reuse <= 1.01 * reuse_matmuls

  # The table: each weight set with its count and how often it is used.
  rows = {line.split()[0]: line.split()[1:3] for line in out.splitlines()
          if line.startswith(('perceiver/', 'classification_head', 'total'))}
  assert rows['perceiver/latents'] == ['1', f'{N * D:,}']
  assert rows['perceiver/cross_attend_0'] == [
      '1', f'{cross_attend_params(C, D):,}']
  assert rows['perceiver/cross_attend_1'] == [
      '7', f'{cross_attend_params(C, D):,}']
  assert rows['perceiver/latent_transformer_0'] == [
      '8', f'{6 * self_attend_params(D):,}']
  assert rows['classification_head'] == ['1', f'{linear_params(D, 1000):,}']
  assert rows['total'] == ['44,912,254', '100.00']


def test_command_line_on_digits_runlocal():
  out = subprocess.run(
      [sys.executable, '-m', 'experiments.model_summary',
       '--config=configs/digits.py:runlocal',
       '--config.model.encoder.share_weights=False'],
      cwd=REPO, capture_output=True, text=True, check=True, timeout=120).stdout
  lines = out.strip().splitlines()
  result = json.loads(lines[-1])
  # 8 latents of 16 channels, C = 1 + 2 * (2 * 4 + 1) = 19; 2 blocks of 2
  # self-attends, each block and cross-attend with its own weights (the
  # override); 10 classes.
  expected = (8 * 16 + 2 * cross_attend_params(19, 16) +
              2 * 2 * self_attend_params(16) + linear_params(16, 10))
  assert result['params'] == expected == 11_180
  assert any(line.startswith('total') and '11,180' in line for line in lines)
  assert 'C0 L0 C1 L1' in out
  # Without sharing there is nothing to reuse.
  assert result['flops_per_example'] > 0
  assert result['flops_per_example_with_kv_reuse'] == result[
      'flops_per_example']
