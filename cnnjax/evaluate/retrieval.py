"""Embedding quality on the host: kNN votes and accuracy, recall@k, pair verification accuracy.

All take numpy embeddings [N, D] and integer labels [N]; distances are Euclidean.
Queries are processed in chunks, so memory is O(chunk x N).
"""

import numpy as np

CHUNK = 1024


def _squared_distances(queries: np.ndarray, keys: np.ndarray) -> np.ndarray:
  """[Q, D], [K, D] -> [Q, K] squared Euclidean distances (float64, clipped at 0)."""
  q = np.asarray(queries, np.float64)
  k = np.asarray(keys, np.float64)
  d = (q * q).sum(1)[:, None] + (k * k).sum(1)[None, :] - 2.0 * q @ k.T
  return np.maximum(d, 0.0)


def nearest_neighbours(
  queries: np.ndarray, keys: np.ndarray, k: int, exclude_self: bool = False
) -> np.ndarray:
  """Indices [Q, k] of each query's k nearest keys, nearest first.

  Keys at equal distance (as computed, in float64) are ordered by index, lowest first, so
  the result is deterministic also where a tie straddles the k-th place.
  With `exclude_self`, queries and keys are the same set and a query never returns itself.
  """
  k = min(k, len(keys) - int(exclude_self))
  result = np.empty((len(queries), k), np.int64)
  for start in range(0, len(queries), CHUNK):
    d = _squared_distances(queries[start : start + CHUNK], keys)
    if exclude_self:
      rows = np.arange(d.shape[0])
      d[rows, start + rows] = np.inf
    part = np.argpartition(d, k - 1, axis=1)[:, :k]
    kth = np.take_along_axis(d, part, axis=1).max(axis=1, keepdims=True)
    # argpartition picks arbitrary keys among those tied at the k-th distance; such rows
    # (rare on real embeddings) take the first k of a full stable sort instead.
    straddles = (d <= kth).sum(axis=1) > k
    part[straddles] = np.argsort(d[straddles], axis=1, kind="stable")[:, :k]
    part.sort(axis=1)  # By index, so that the stable sort by distance orders ties by index.
    order = np.take_along_axis(d, part, axis=1).argsort(axis=1, kind="stable")
    result[start : start + CHUNK] = np.take_along_axis(part, order, axis=1)
  return result


def knn_predict(
  train_embeddings: np.ndarray,
  train_labels: np.ndarray,
  test_embeddings: np.ndarray,
  k: int = 1,
  exclude_self: bool = False,
) -> np.ndarray:
  """Labels [Q] voted by each test point's k nearest train points.

  The class with the most votes wins; a tie goes to the tied class whose nearest member
  ranks first, i.e. the label of the nearest neighbour whose class has the maximal count.
  Neighbours at equal distance rank by train index (see `nearest_neighbours`).

  Args:
    train_embeddings: [N, D]; train_labels: [N] ints.
    test_embeddings: [Q, D].
    k: neighbours that vote (at most N, or N - 1 with `exclude_self`).
    exclude_self: test and train are the same set; a point does not vote for itself.
  """
  neighbours = nearest_neighbours(test_embeddings, train_embeddings, k, exclude_self)
  votes = np.asarray(train_labels)[neighbours]  # [Q, k], nearest first.
  # counts[q, j]: votes for the class of neighbour j; argmax takes the first, nearest, maximum.
  counts = np.stack(
    [(votes == votes[:, j : j + 1]).sum(axis=1) for j in range(votes.shape[1])], axis=1
  )
  return votes[np.arange(len(votes)), counts.argmax(axis=1)]


def knn_accuracy(
  train_embeddings: np.ndarray,
  train_labels: np.ndarray,
  test_embeddings: np.ndarray,
  test_labels: np.ndarray,
  k: int = 1,
  exclude_self: bool = False,
) -> float:
  """Fraction of test points whose k nearest train points vote for their label.

  Ties in the vote go to the class of the nearest neighbour among the tied classes, as
  `knn_predict` says.
  """
  predictions = knn_predict(train_embeddings, train_labels, test_embeddings, k, exclude_self)
  return float(np.mean(predictions == np.asarray(test_labels)))


def recall_at_k(
  embeddings: np.ndarray, labels: np.ndarray, ks: tuple[int, ...] = (1, 5)
) -> dict[int, float]:
  """{k: fraction of points with a same-label point among their k nearest others}."""
  labels = np.asarray(labels)
  neighbours = nearest_neighbours(embeddings, embeddings, max(ks), exclude_self=True)
  hits = labels[neighbours] == labels[:, None]
  return {k: float(np.mean(hits[:, :k].any(axis=1))) for k in ks}


def verification_accuracy(
  embeddings: np.ndarray, labels: np.ndarray, max_pairs: int = 200_000, seed: int = 0
) -> tuple[float, float]:
  """(accuracy, threshold) of "same class iff distance <= threshold" at the best threshold.

  Uses every pair when there are at most `max_pairs`, else that many random pairs.
  """
  labels = np.asarray(labels)
  n = len(labels)
  if n * (n - 1) // 2 <= max_pairs:
    first, second = np.triu_indices(n, k=1)
  else:
    rng = np.random.default_rng(seed)
    first, second = rng.integers(0, n, (2, max_pairs))
    keep = first != second
    first, second = first[keep], second[keep]
  e = np.asarray(embeddings, np.float64)
  distances = np.sqrt(np.maximum(((e[first] - e[second]) ** 2).sum(1), 0.0))
  same = labels[first] == labels[second]
  order = np.argsort(distances, kind="stable")
  distances, same = distances[order], same[order]
  # Predicting "same" for the first i pairs: correct = same among them + different after.
  same_before = np.concatenate([[0], np.cumsum(same)])
  different_after = (~same).sum() - np.concatenate([[0], np.cumsum(~same)])
  correct = same_before + different_after
  best = int(np.argmax(correct))
  threshold = float(distances[best - 1]) if best > 0 else 0.0
  return float(correct[best] / len(same)), threshold
