"""Batching of in-memory datasets: order, host slices, resumption, padding."""

import itertools

import numpy as np
import pytest

from perceiver_jax.data import in_memory


def _arrays(num):
  return {'x': np.arange(num, dtype=np.int32),
          'y': np.arange(num, dtype=np.float32)[:, None] * 2.0}


def _take(iterator, count):
  return list(itertools.islice(iterator, count))


def test_replicated_global_batches_do_not_depend_on_the_host_count():
  arrays = _arrays(24)  # 3 global batches of 8 an epoch.
  one_host = _take(in_memory.replicated_train_batches(
      arrays, batch_dims=(4, 2), seed=3), 9)
  two_hosts = [_take(in_memory.replicated_train_batches(
      arrays, batch_dims=(2, 2), seed=3, process_index=h, process_count=2), 9)
               for h in range(2)]
  for step in range(9):
    joined = np.concatenate([two_hosts[0][step]['x'].ravel(),
                             two_hosts[1][step]['x'].ravel()])
    np.testing.assert_array_equal(joined, one_host[step]['x'].ravel())
    # Hosts never share an example of a global batch.
    assert len(set(joined.tolist())) == 8
    assert one_host[step]['mask'].shape == (4, 2)
    assert one_host[step]['mask'].min() == 1.0


def test_replicated_epochs_visit_every_example_once():
  # 3 epochs of 10 examples in batches of 5: every epoch is a permutation.
  batches = _take(in_memory.replicated_train_batches(
      _arrays(10), batch_dims=(5,), seed=0), 6)
  stream = np.concatenate([b['x'] for b in batches])
  for epoch in range(3):
    assert sorted(stream[10 * epoch:10 * (epoch + 1)]) == list(range(10))
  assert not np.array_equal(stream[:10], stream[10:20])  # Reshuffled.
  # Values travel with their example.
  for b in batches:
    np.testing.assert_array_equal(b['y'][:, 0], b['x'] * 2.0)


@pytest.mark.parametrize('make', [
    lambda **kw: in_memory.train_batches(_arrays(13), batch_dims=(3,), seed=1,
                                         **kw),
    lambda **kw: in_memory.replicated_train_batches(
        _arrays(13), batch_dims=(3,), seed=1, process_count=2, **kw),
])
def test_resuming_at_a_step_equals_skipping_to_it(make):
  straight = _take(make(), 12)
  resumed = _take(make(start_step=7), 5)
  for a, b in zip(straight[7:], resumed):
    np.testing.assert_array_equal(a['x'], b['x'])


def _add_noise(batch, rng):
  batch['y'] = batch['y'] + rng.normal(size=batch['y'].shape)
  return batch


def test_replicated_augmentation_does_not_depend_on_the_host_count():
  one_host = _take(in_memory.replicated_train_batches(
      _arrays(12), batch_dims=(6,), seed=5, augment=_add_noise), 4)
  three_hosts = [_take(in_memory.replicated_train_batches(
      _arrays(12), batch_dims=(2,), seed=5, process_index=h, process_count=3,
      augment=_add_noise), 4) for h in range(3)]
  for step in range(4):
    joined = np.concatenate([hosts[step]['y'] for hosts in three_hosts])
    np.testing.assert_array_equal(joined, one_host[step]['y'])
    # The noise is there, and differs from step to step.
    assert not np.allclose(one_host[step]['y'][:, 0],
                           one_host[step]['x'] * 2.0)
  resumed = _take(in_memory.replicated_train_batches(
      _arrays(12), batch_dims=(6,), seed=5, start_step=3,
      augment=_add_noise), 1)
  np.testing.assert_array_equal(resumed[0]['y'], one_host[3]['y'])


def test_sharded_augmentation_differs_between_hosts_and_resumes():
  make = lambda host, start=0: _take(in_memory.train_batches(
      {'x': np.zeros(6, np.int32), 'y': np.zeros((6, 1), np.float32)},
      batch_dims=(3,), seed=2, process_index=host, start_step=start,
      augment=_add_noise), 3 - start)
  host0, host1 = make(0), make(1)
  assert not np.allclose(host0[0]['y'], host1[0]['y'])
  np.testing.assert_array_equal(make(0, start=2)[0]['y'], host0[2]['y'])


def test_bad_arguments_are_named():
  with pytest.raises(ValueError, match='start_step must be >= 0'):
    in_memory.replicated_train_batches(_arrays(4), batch_dims=(2,), seed=0,
                                       start_step=-1)
  with pytest.raises(ValueError, match='process_index 2 is not in'):
    in_memory.replicated_train_batches(_arrays(4), batch_dims=(2,), seed=0,
                                       process_index=2, process_count=2)
  with pytest.raises(ValueError, match='batch_dims'):
    in_memory.train_batches(_arrays(4), batch_dims=(0,), seed=0)
  with pytest.raises(ValueError, match='equal-length'):
    in_memory.train_batches({'a': np.zeros(3), 'b': np.zeros(4)},
                            batch_dims=(2,), seed=0)


def test_host_shards_and_eval_batch_counts():
  for total, count in ((10, 3), (7, 2), (8, 4)):
    sizes = [len(range(total)[in_memory.host_shard(total, i, count)])
             for i in range(count)]
    assert sum(sizes) == total
    assert max(sizes) - min(sizes) <= 1
    # tfds.even_splits gives the first total % count hosts one more.
    assert sizes == sorted(sizes, reverse=True)
  # 11 examples on 3 hosts: shards of 4, 4, 3; batches of 2 -> 2 each.
  assert in_memory.num_eval_batches(11, 2, 3) == 2
  assert in_memory.num_eval_batches(12, 4, 3) == 1
  assert in_memory.num_eval_batches(13, 4, 3) == 2


def test_eval_hosts_yield_equal_batch_counts_and_every_example_once():
  # 11 examples over 3 hosts: shards of 4, 4 and 3, batches of 2.
  total, hosts = 11, 3
  arrays = _arrays(total)
  num_batches = in_memory.num_eval_batches(total, 2, hosts)
  assert num_batches == 2
  seen = []
  for host in range(hosts):
    shard = in_memory.host_shard(total, host, hosts)
    batches = list(in_memory.eval_batches(
        {k: v[shard] for k, v in arrays.items()}, batch_dims=(1, 2),
        num_batches=num_batches))
    assert len(batches) == num_batches
    for b in batches:
      assert b['x'].shape == (1, 2) and b['mask'].shape == (1, 2)
      seen.extend(b['x'][b['mask'] > 0].tolist())
      # Padding is zeros.
      assert (b['x'][b['mask'] == 0] == 0).all()
  assert sorted(seen) == list(range(total))
