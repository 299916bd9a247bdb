"""kNN votes and neighbour order against a plain-Python reference of the documented rules."""

import numpy as np
import pytest

from cnnjax.evaluate import retrieval


def _reference_predictions(train, train_labels, test, k, exclude_self=False):
  """The documented rule, one query at a time in exact integer arithmetic.

  Neighbours rank by (squared distance, train index); the vote goes to the most common
  label, and among tied labels to the one met first in rank order.
  """
  predictions = []
  for q, query in enumerate(test.tolist()):
    ranked = sorted(
      (sum((a - b) ** 2 for a, b in zip(query, key)), i)
      for i, key in enumerate(train.tolist())
      if not (exclude_self and i == q)
    )
    labels = [int(train_labels[i]) for _, i in ranked[:k]]
    most = max(labels.count(label) for label in labels)
    predictions.append(next(label for label in labels if labels.count(label) == most))
  return np.array(predictions)


def test_issue_example_tie_goes_to_the_nearest_neighbours_class():
  # Votes 1, 0, 0, 1 by rank: two each, and the nearest neighbour (rank 1) is class 1.
  assert retrieval.knn_accuracy([[1], [2], [3], [4]], [1, 0, 0, 1], [[0]], [1], k=4) == 1.0
  assert retrieval.knn_accuracy([[1], [2], [3], [4]], [0, 1, 1, 0], [[0]], [0], k=4) == 1.0


def test_three_way_tie_goes_to_the_class_met_first():
  # k=6, votes by rank 2, 0, 1, 1, 0, 2: all tied at two, class 2 ranks first.
  train = np.arange(1, 7)[:, None]
  np.testing.assert_array_equal(retrieval.knn_predict(train, [2, 0, 1, 1, 0, 2], [[0]], k=6), [2])
  # A strict majority beats a nearer minority: votes 0, 1, 1.
  np.testing.assert_array_equal(retrieval.knn_predict(train[:3], [0, 1, 1], [[0]], k=3), [1])


def test_equal_distances_rank_by_train_index():
  keys = np.array([[1], [0], [1], [0], [2], [-1]])
  # Distances from 0: 1, 0, 1, 0, 4, 1.
  np.testing.assert_array_equal(retrieval.nearest_neighbours([[0]], keys, 6), [[1, 3, 0, 2, 5, 4]])
  # The tie at distance 1 straddles the k-th place: the lowest indices are kept.
  np.testing.assert_array_equal(retrieval.nearest_neighbours([[0]], keys, 3), [[1, 3, 0]])
  np.testing.assert_array_equal(retrieval.nearest_neighbours([[0]], keys, 4), [[1, 3, 0, 2]])
  same = np.zeros((5, 2))
  np.testing.assert_array_equal(
    retrieval.nearest_neighbours(same, same, 3, exclude_self=True),
    [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2], [0, 1, 2]],
  )


@pytest.mark.parametrize("k", range(1, 11))
def test_votes_match_the_reference_with_many_ties(k):
  rng = np.random.default_rng(k)
  for num_classes in (2, 3):
    # Integer points on a 4 x 4 grid: distances are exact and often equal.
    train = rng.integers(0, 4, (40, 2))
    train_labels = rng.integers(0, num_classes, 40)
    test = rng.integers(0, 4, (30, 2))
    test_labels = rng.integers(0, num_classes, 30)
    expected = _reference_predictions(train, train_labels, test, k)
    np.testing.assert_array_equal(retrieval.knn_predict(train, train_labels, test, k), expected)
    assert retrieval.knn_accuracy(train, train_labels, test, test_labels, k) == float(
      np.mean(expected == test_labels)
    )
    expected_self = _reference_predictions(train, train_labels, train, k, exclude_self=True)
    np.testing.assert_array_equal(
      retrieval.knn_predict(train, train_labels, train, k, exclude_self=True), expected_self
    )


def test_votes_match_the_reference_across_query_chunks(monkeypatch):
  monkeypatch.setattr(retrieval, "CHUNK", 7)
  rng = np.random.default_rng(11)
  train = rng.integers(0, 3, (25, 3))
  train_labels = rng.integers(0, 2, 25)
  expected = _reference_predictions(train, train_labels, train, 4, exclude_self=True)
  np.testing.assert_array_equal(
    retrieval.knn_predict(train, train_labels, train, 4, exclude_self=True), expected
  )
