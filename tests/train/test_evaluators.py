"""The 'multilabel_map' evaluator on a fake model whose mAP is known.

Expected values come from scikit-learn's `average_precision_score` on
per-clip averages of sigmoid probabilities computed here with numpy.
"""

import json
import os
import socket
import subprocess
import sys

import ml_collections
import pytest

from perceiver_jax.train import evaluators
from perceiver_jax.train import parallel
from tests.helpers import multilabel_fakes as fakes
from tests.helpers.command_utils import REPO

NUM_CLIPS = 11  # 33 windows: batches of 8 leave a partial last batch.


def _config(**evaluator) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(dict(
      data=dict(num_classes=fakes.NUM_CLASSES),
      evaluator=dict(type='multilabel_map', split='eval', batch_size=8,
                     metric='map', windows_per_clip=fakes.WINDOWS,
                     max_examples=ml_collections.FieldReference(
                         None, field_type=int))))
  config.evaluator.update(evaluator)
  return config


def _run(config, data, batch_dims=(8, 1)):
  evaluator = evaluators.make_evaluator(
      config, apply_fn=fakes.apply_fn, data_module=data,
      batch_dims=batch_dims)
  assert isinstance(evaluator, evaluators.MultilabelMapEvaluator)
  return evaluator.run(parallel.replicate({}))


def test_map_of_clip_averaged_probabilities_matches_sklearn():
  data = fakes.WindowData(NUM_CLIPS)
  expected = fakes.expected_metrics(data.logits, data.labels)
  # The data tell probability averaging from logit averaging apart.
  assert abs(expected['map'] - expected['logit_average_map']) > 1e-3
  metrics = _run(_config(), data)
  assert sorted(metrics) == sorted(
      evaluators.MultilabelMapEvaluator.metric_names(_config()))
  assert metrics['map'] == pytest.approx(expected['map'], abs=1e-6)
  assert metrics['loss'] == pytest.approx(expected['loss'], rel=1e-5)
  assert metrics['num_examples'] == NUM_CLIPS
  assert metrics['num_windows'] == NUM_CLIPS * fakes.WINDOWS
  assert metrics['num_classes_without_positives'] == 1


def test_max_examples_counts_clips():
  data = fakes.WindowData(NUM_CLIPS)
  metrics = _run(_config(max_examples=4), data)
  expected = fakes.expected_metrics(data.logits[:4], data.labels[:4])
  assert metrics['num_examples'] == 4
  assert metrics['num_windows'] == 4 * fakes.WINDOWS
  assert metrics['map'] == pytest.approx(expected['map'], abs=1e-6)
  assert metrics['num_classes_without_positives'] == expected[
      'num_classes_without_positives']


def test_wrong_windows_per_clip_is_an_error():
  with pytest.raises(ValueError, match='windows per clip'):
    _run(_config(windows_per_clip=4), fakes.WindowData(NUM_CLIPS))
  with pytest.raises(ValueError, match='windows_per_clip'):
    _run(_config(windows_per_clip=0), fakes.WindowData(NUM_CLIPS))


def test_classification_batch_count_is_unchanged():
  # 37 examples in batches of 8: 5 batches; 16 windows per clip of 3 clips
  # in batches of 8: 6 batches; at most 2 clips: 4 batches.
  assert evaluators.num_batches(37, max_examples=None, batch_size=8) == 5
  assert evaluators.num_batches(37, max_examples=13, batch_size=8) == 2
  assert evaluators.num_batches(3, max_examples=None, batch_size=8,
                                rows_per_example=16) == 6
  assert evaluators.num_batches(3, max_examples=2, batch_size=8,
                                rows_per_example=16) == 4


_WORKER = r'''
import json, sys
import jax
jax.config.update('jax_cpu_collectives_implementation', 'gloo')
process_id, port = int(sys.argv[1]), int(sys.argv[2])
jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}',
                           num_processes=2, process_id=process_id)
import ml_collections
from perceiver_jax.train import evaluators, parallel
from tests.helpers import multilabel_fakes as fakes
from tests.helpers.command_utils import REPO
config = ml_collections.ConfigDict(dict(
    data=dict(num_classes=fakes.NUM_CLASSES),
    evaluator=dict(type='multilabel_map', split='eval', windows_per_clip=3,
                   max_examples=None)))
data = fakes.WindowData(int(sys.argv[3]), process_index=process_id,
                        process_count=2)
evaluator = evaluators.make_evaluator(
    config, apply_fn=fakes.apply_fn, data_module=data, batch_dims=(2, 2))
print(json.dumps(evaluator.run(parallel.replicate({}))), flush=True)
'''


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_hosts_gather_every_clip(tmp_path):
  script = tmp_path / 'worker.py'
  script.write_text(_WORKER)
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             PYTHONPATH=REPO,
             XLA_FLAGS='--xla_force_host_platform_device_count=2')
  port = _free_port()
  workers = [subprocess.Popen(
      [sys.executable, str(script), str(i), str(port), str(NUM_CLIPS)],
      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
  results = []
  for worker in workers:
    out, err = worker.communicate(timeout=240)
    assert worker.returncode == 0, err[-3000:]
    results.append(json.loads(out.strip().splitlines()[-1]))
  data = fakes.WindowData(NUM_CLIPS)
  expected = fakes.expected_metrics(data.logits, data.labels)
  for metrics in results:  # Host 0 has 6 clips, host 1 has 5.
    assert metrics['num_examples'] == NUM_CLIPS
    assert metrics['num_windows'] == NUM_CLIPS * fakes.WINDOWS
    assert metrics['map'] == pytest.approx(expected['map'], abs=1e-6)
    assert metrics['loss'] == pytest.approx(expected['loss'], rel=1e-5)
