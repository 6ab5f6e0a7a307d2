"""Multi-label mAP against scikit-learn and hand-computed values."""

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from perceiver_jax.train import metrics


def _random_problem(seed, num_examples=60, num_classes=12, ties=False):
  rng = np.random.default_rng(seed)
  labels = (rng.random((num_examples, num_classes)) < 0.3).astype(np.int32)
  labels[0, :] = 1  # Every class has a positive.
  if ties:
    # Few distinct values: many ties within each class, some across labels.
    scores = rng.integers(0, 4, (num_examples, num_classes)).astype(float)
  else:
    scores = rng.normal(size=(num_examples, num_classes))
  return scores, labels


@pytest.mark.parametrize('ties', [False, True])
def test_matches_sklearn_per_class_and_macro(ties):
  scores, labels = _random_problem(0, ties=ties)
  if not ties:
    assert len(np.unique(scores)) == scores.size
  result = metrics.mean_average_precision(scores, labels)
  for j in range(labels.shape[1]):
    expected = sk_metrics.average_precision_score(labels[:, j], scores[:, j])
    np.testing.assert_allclose(result['average_precision'][j], expected,
                               rtol=1e-12)
  np.testing.assert_allclose(
      result['map'],
      sk_metrics.average_precision_score(labels, scores, average='macro'),
      rtol=1e-12)
  assert result['num_classes_evaluated'] == labels.shape[1]
  assert result['classes_without_positives'] == []


def test_axis_is_per_class_over_examples():
  # Class 0 ranks its one positive first (AP 1); class 1 ranks it last of
  # three (AP 1/3). Per example over classes would give other numbers:
  # example 0's positives (classes 0, 1) are ranked 1st and 2nd (AP 1).
  scores = np.array([[0.9, 0.1],
                     [0.2, 0.5],
                     [0.1, 0.4]])
  labels = np.array([[1, 1],
                     [0, 0],
                     [0, 0]])
  result = metrics.mean_average_precision(scores, labels)
  np.testing.assert_allclose(result['average_precision'], [1.0, 1 / 3])
  np.testing.assert_allclose(result['map'], (1.0 + 1 / 3) / 2)
  # The transposed metric: example 0 (the only one with positives) ranks
  # its positive classes 1st and 2nd of 2, AP 1.
  transposed = sk_metrics.average_precision_score(labels[0], scores[0])
  np.testing.assert_allclose(transposed, 1.0)
  assert not np.isclose(result['map'], transposed)


def test_hand_computed_ties():
  # Scores 3, 2, 2, 1 with labels 1, 0, 1, 0: thresholds 3 -> (P 1, R 1/2),
  # 2 -> (P 2/3, R 1): AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
  ap = metrics.average_precision(np.array([3.0, 2.0, 2.0, 1.0]),
                                 np.array([1, 0, 1, 0]))
  np.testing.assert_allclose(ap, 5 / 6)


def test_classes_without_positives_are_excluded_and_reported():
  scores, labels = _random_problem(1, num_classes=8)
  labels[:, [2, 5]] = 0
  result = metrics.mean_average_precision(scores, labels)
  assert result['num_classes_without_positives'] == 2
  assert result['classes_without_positives'] == [2, 5]
  assert result['num_classes_evaluated'] == 6
  assert np.isnan(result['average_precision'][[2, 5]]).all()
  kept = [j for j in range(8) if j not in (2, 5)]
  expected = np.mean([sk_metrics.average_precision_score(
      labels[:, j], scores[:, j]) for j in kept])
  np.testing.assert_allclose(result['map'], expected, rtol=1e-12)


def test_no_positives_at_all_gives_nan():
  result = metrics.mean_average_precision(np.zeros((3, 2)),
                                          np.zeros((3, 2)))
  assert np.isnan(result['map'])
  assert result['num_classes_without_positives'] == 2


def test_mask_drops_padding():
  scores, labels = _random_problem(2, num_examples=20)
  padded_scores = np.concatenate([scores, np.full((4, 12), 9.0)])
  padded_labels = np.concatenate([labels, np.zeros((4, 12), int)])
  mask = np.concatenate([np.ones(20), np.zeros(4)])
  with_mask = metrics.mean_average_precision(padded_scores, padded_labels,
                                             mask)
  np.testing.assert_allclose(
      with_mask['map'], metrics.mean_average_precision(scores, labels)['map'])


def test_bad_inputs():
  with pytest.raises(ValueError, match='num_examples, num_classes'):
    metrics.mean_average_precision(np.zeros((3, 2)), np.zeros((3, 3)))
  with pytest.raises(ValueError, match='finite'):
    metrics.mean_average_precision(np.array([[np.nan]]), np.array([[1]]))
  with pytest.raises(ValueError, match='0 or 1'):
    metrics.mean_average_precision(np.zeros((2, 2)), np.full((2, 2), 2))
  with pytest.raises(ValueError, match='mask'):
    metrics.mean_average_precision(np.zeros((2, 2)), np.ones((2, 2)),
                                   mask=np.ones(3))
