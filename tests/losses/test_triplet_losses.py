"""Triplet losses against brute-force NumPy references written with explicit loops."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.errors import UsageError
from cnnjax.losses import pairwise_distances
from cnnjax.losses import triplet_all_loss
from cnnjax.losses import triplet_hard_loss
from cnnjax.losses import triplet_semihard_loss
from loss_helpers import finite_difference_grad

DISTANCES = ("l2", "squared_l2", "cosine")


def reference_distances(x, distance):
  x = np.asarray(x, np.float64)
  n = len(x)
  d = np.zeros((n, n))
  for i in range(n):
    for j in range(n):
      if distance == "cosine":
        norms = np.linalg.norm(x[i]) * np.linalg.norm(x[j])
        d[i, j] = 1.0 - (x[i] @ x[j] / norms if norms > 0 else 0.0)
      else:
        squared = np.sum((x[i] - x[j]) ** 2)
        d[i, j] = squared if distance == "squared_l2" else np.sqrt(squared)
  return d


def reference_semihard(x, labels, margin, distance="l2"):
  """TensorFlow Addons' semi-hard loss, one pair and one negative at a time."""
  d = reference_distances(x, distance)
  n = len(labels)
  total, pairs = 0.0, 0
  for a in range(n):
    negatives = [k for k in range(n) if labels[k] != labels[a]]
    if not negatives:
      continue
    for p in range(n):
      if p == a or labels[p] != labels[a]:
        continue
      pairs += 1
      farther = [d[a, k] for k in negatives if d[a, k] > d[a, p]]
      d_an = min(farther) if farther else max(d[a, k] for k in negatives)
      total += max(d[a, p] - d_an + margin, 0.0)
  return total / pairs if pairs else 0.0


def reference_hard(x, labels, margin, distance="l2"):
  d = reference_distances(x, distance)
  n = len(labels)
  losses = []
  for a in range(n):
    positives = [d[a, p] for p in range(n) if p != a and labels[p] == labels[a]]
    negatives = [d[a, k] for k in range(n) if labels[k] != labels[a]]
    if positives and negatives:
      losses.append(max(max(positives) - min(negatives) + margin, 0.0))
  return float(np.mean(losses)) if losses else 0.0


def reference_all(x, labels, margin, distance="l2"):
  """(mean over active triplets, fraction of valid triplets that are active)."""
  d = reference_distances(x, distance)
  n = len(labels)
  total, active, valid = 0.0, 0, 0
  for a in range(n):
    for p in range(n):
      if p == a or labels[p] != labels[a]:
        continue
      for k in range(n):
        if labels[k] == labels[a]:
          continue
        valid += 1
        term = d[a, p] - d[a, k] + margin
        if term > 0:
          total += term
          active += 1
  return (total / active if active else 0.0), (active / valid if valid else 0.0)


LOSSES = {
  "semihard": (triplet_semihard_loss, reference_semihard),
  "hard": (triplet_hard_loss, reference_hard),
  "all": (triplet_all_loss, lambda *args: reference_all(*args)[0]),
}


@functools.cache
def loss_and_grad(name, distance="l2"):
  """Jitted (x, labels, margin) -> (loss, d loss / d x), shared by tests of equal shapes."""
  loss_fn = LOSSES[name][0]
  return jax.jit(
    jax.value_and_grad(
      lambda x, labels, margin: loss_fn(x, labels, margin=margin, distance=distance)
    )
  )


def random_batch(seed, batch, dim, num_classes):
  rng = np.random.default_rng(seed)
  return (
    rng.normal(size=(batch, dim)).astype(np.float32),
    rng.integers(0, num_classes, size=batch).astype(np.int32),
  )


@pytest.mark.parametrize(
  "name, distance",
  [
    ("semihard", "l2"),
    ("semihard", "squared_l2"),
    ("semihard", "cosine"),
    ("hard", "l2"),
    ("hard", "squared_l2"),
    ("all", "l2"),
    ("all", "cosine"),
  ],
)
def test_random_batch_value(name, distance):
  loss_fn, reference = LOSSES[name]
  x, labels = random_batch(0, 16, 4, 4)
  got = loss_fn(x, labels, margin=0.5, distance=distance)
  np.testing.assert_allclose(got, reference(x, labels, 0.5, distance), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize(
  "name, distance",
  [("semihard", "l2"), ("semihard", "cosine"), ("hard", "l2"), ("all", "squared_l2")],
)
def test_gradient_matches_finite_differences_of_reference(name, distance):
  loss_fn, reference = LOSSES[name]
  x, labels = random_batch(1, 10, 3, 3)
  _, got = loss_and_grad(name, distance)(x, labels, 0.7)
  want = finite_difference_grad(lambda v: reference(v, labels, 0.7, distance), x)
  np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)


def test_semihard_ties_follow_strictly_farther_rule():
  # Small integer coordinates give many exactly equal distances, all exact in float32.
  rng = np.random.default_rng(2)
  for seed_margin in (0.0, 1.0, 2.0):
    x = rng.integers(-2, 3, size=(32, 2)).astype(np.float32)
    labels = rng.integers(0, 3, size=32).astype(np.int32)
    for distance in ("l2", "squared_l2"):
      got = triplet_semihard_loss(x, labels, margin=seed_margin, distance=distance)
      np.testing.assert_allclose(
        got, reference_semihard(x, labels, seed_margin, distance), rtol=1e-6, atol=1e-6
      )


def test_semihard_hand_computed_tie():
  # Class 0 at 0 and 1; negatives at -1 and 3 (classes 1 and 2), margin 2.5.
  x = np.array([[0.0], [1.0], [-1.0], [3.0]], np.float32)
  labels = np.array([0, 0, 1, 2], np.int32)
  # Pair (0, 1): d_ap = 1 and the negative at -1 ties it, so it is not "strictly farther":
  # the negative at 3 is used, relu(1 - 3 + 2.5) = 0.5. Pair (1, 0): negatives at 2 and 2,
  # relu(1 - 2 + 2.5) = 1.5. Taking the tie would give 2.5 for the first pair instead.
  loss, metrics = triplet_semihard_loss(x, labels, margin=2.5, return_metrics=True)
  assert float(loss) == 1.0
  assert int(metrics["num_pairs"]) == 2
  assert float(metrics["fallback_fraction"]) == 0.0
  np.testing.assert_allclose(float(loss), reference_semihard(x, labels, 2.5))


def test_semihard_fallback_to_farthest_negative():
  # Every negative is nearer than the positive: the farthest negative (distance 2) is used.
  x = np.array([[0.0], [5.0], [1.0], [2.0]], np.float32)
  labels = np.array([0, 0, 1, 2], np.int32)
  loss, metrics = triplet_semihard_loss(x[:, :], labels, margin=0.5, return_metrics=True)
  np.testing.assert_allclose(loss, reference_semihard(x, labels, 0.5), rtol=1e-6)
  assert float(metrics["fallback_fraction"]) > 0


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize(
  "labels",
  [np.zeros(16, np.int32), np.arange(16, dtype=np.int32)],
  ids=["single_class", "all_distinct"],
)
def test_degenerate_batches_give_zero_loss_and_zero_gradient(name, labels):
  x, _ = random_batch(3, 16, 4, 1)
  loss, grad = loss_and_grad(name)(x, labels, 1.0)
  assert float(loss) == 0.0
  np.testing.assert_array_equal(grad, np.zeros_like(x))


@pytest.mark.parametrize("name", LOSSES)
def test_singleton_classes_and_exact_duplicates(name):
  loss_fn, reference = LOSSES[name]
  rng = np.random.default_rng(4)
  x = rng.integers(-3, 4, size=(16, 4)).astype(np.float32)
  x[5] = x[4]  # duplicate, same label
  x[7] = x[6]  # duplicate, different label
  # Classes 3, 4, 5 and 6 have one sample each.
  labels = np.array([0, 0, 1, 1, 2, 2, 3, 4, 5, 6, 7, 7, 7, 1, 0, 2], np.int32)
  loss, grad = loss_and_grad(name)(x, labels, 1.0)
  np.testing.assert_allclose(loss, reference(x, labels, 1.0), rtol=1e-5, atol=1e-6)
  assert np.isfinite(np.asarray(grad)).all()


@pytest.mark.parametrize(
  "name, distance", [("semihard", "l2"), ("semihard", "cosine"), ("hard", "l2"), ("all", "l2")]
)
def test_identical_and_zero_embeddings_have_finite_gradients(name, distance):
  x = np.ones((16, 4), np.float32)
  x[8:] = 0.0
  labels = np.arange(16, dtype=np.int32) % 3
  loss, grad = loss_and_grad(name, distance)(x, labels, 1.0)
  assert np.isfinite(float(loss)) and np.isfinite(np.asarray(grad)).all()


def test_l2_distance_gradient_is_zero_between_identical_rows():
  a = jnp.ones((1, 3))
  grad = jax.grad(lambda a: pairwise_distances(a, jnp.ones((1, 3)))[0, 0])(a)
  np.testing.assert_array_equal(grad, np.zeros((1, 3)))


@pytest.mark.parametrize("name", LOSSES)
def test_large_magnitude_embeddings(name):
  loss_fn, reference = LOSSES[name]
  x, labels = random_batch(5, 16, 4, 3)
  scale = 1e4
  got = loss_fn(x * scale, labels, margin=0.5 * scale)
  np.testing.assert_allclose(got, reference(x * scale, labels, 0.5 * scale), rtol=1e-4)
  huge, grad = loss_and_grad(name)(x * 1e20, labels, 1.0)
  assert np.isfinite(float(huge)) and np.isfinite(np.asarray(grad)).all()


def test_bfloat16_inputs_are_computed_in_float32():
  x, labels = random_batch(6, 16, 4, 3)
  x16 = jnp.asarray(x, jnp.bfloat16)
  loss, grad = loss_and_grad("semihard")(x16, labels, 1.0)
  assert loss.dtype == jnp.float32 and grad.dtype == jnp.bfloat16
  want, _ = loss_and_grad("semihard")(x16.astype(jnp.float32), labels, 1.0)
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  assert np.isfinite(np.asarray(grad, np.float32)).all()


def test_reductions_and_metrics():
  x, labels = random_batch(7, 16, 4, 4)
  per_anchor = triplet_semihard_loss(x, labels, reduction="none")
  assert per_anchor.shape == (16,)
  np.testing.assert_allclose(
    jnp.sum(per_anchor), triplet_semihard_loss(x, labels, reduction="sum"), rtol=1e-6
  )
  mean, metrics = triplet_semihard_loss(x, labels, return_metrics=True)
  num_pairs = sum(labels[i] == labels[j] for i in range(16) for j in range(16) if i != j)
  assert int(metrics["num_pairs"]) == num_pairs
  np.testing.assert_allclose(jnp.sum(per_anchor) / num_pairs, mean, rtol=1e-6)
  per_anchor = triplet_hard_loss(x, labels, reduction="none")
  assert per_anchor.shape == (16,)
  anchors_with_positive = sum(np.sum(labels == label) > 1 for label in labels)
  np.testing.assert_allclose(
    jnp.sum(per_anchor) / anchors_with_positive, triplet_hard_loss(x, labels), rtol=1e-6
  )
  _, metrics = triplet_all_loss(x, labels, margin=0.5, return_metrics=True)
  np.testing.assert_allclose(
    metrics["active_fraction"], reference_all(x, labels, 0.5)[1], rtol=1e-6
  )


@pytest.mark.parametrize(
  "kwargs, message",
  [
    (dict(labels=np.zeros(7, np.int32)), "labels must be"),
    (dict(labels=np.zeros((8, 1), np.int32)), "labels must be"),
    (dict(labels=np.zeros(8, np.float32)), "integer"),
    (dict(margin=-0.1), "negative"),
    (dict(margin=float("nan")), "margin=nan is not a finite"),
    (dict(margin=float("inf")), "margin=inf is not a finite"),
    (dict(margin=1e39), "not a finite float32"),
    (
      dict(embeddings=np.zeros((0, 3), np.float32), labels=np.zeros(0, np.int32)),
      r"the batch is empty \(0 embeddings\)",
    ),
    (dict(distance="manhattan"), "unknown"),
    (dict(reduction="max"), "unknown"),
    (dict(embeddings=np.zeros((8,), np.float32)), r"\[batch, dim\]"),
  ],
)
def test_bad_arguments_raise_at_trace_time(kwargs, message):
  arrays = dict(embeddings=np.zeros((8, 3), np.float32), labels=np.zeros(8, np.int32))
  options = {k: v for k, v in kwargs.items() if k not in arrays}
  arrays.update({k: v for k, v in kwargs.items() if k in arrays})
  for loss_fn in (triplet_semihard_loss, triplet_hard_loss, triplet_all_loss):
    with pytest.raises(UsageError, match=message):
      jax.eval_shape(lambda a: loss_fn(**a, **options), arrays)


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_embedding_gives_nan_loss(name, distance, bad):
  x, labels = random_batch(8, 12, 3, 3)
  x[5, 1] = bad
  loss_fn = LOSSES[name][0]
  assert np.isnan(float(loss_fn(x, labels, distance=distance)))
  # Even anchors whose mining could skip the bad row report it.
  assert np.isnan(np.asarray(loss_fn(x, labels, distance=distance, reduction="none"))).all()
  assert np.isnan(np.asarray(pairwise_distances(x, x, distance))).all()


@pytest.mark.parametrize("name", LOSSES)
def test_squared_l2_beyond_2_to_64_is_exact_while_it_fits_and_inf_past_float32(name):
  loss_fn, reference = LOSSES[name]
  rng = np.random.default_rng(9)
  # x = 2^64 (1 + k / 64) for small integers k: squared norms overflow float32, while the
  # squared distances (2^116 times whole numbers, so exact, ties included) and sums fit.
  x = (2.0**64 * (1 + rng.integers(0, 7, size=(12, 2)) / 64)).astype(np.float32)
  labels = rng.integers(0, 3, 12).astype(np.int32)
  value, grad = jax.value_and_grad(
    lambda v: loss_fn(v, labels, margin=2.0**117, distance="squared_l2")
  )(x)
  want = reference(x.astype(np.float64), labels, 2.0**117, "squared_l2")
  np.testing.assert_allclose(float(value), want, rtol=1e-6)
  assert np.isfinite(np.asarray(grad)).all()
  x, labels = random_batch(10, 12, 3, 3)
  np.testing.assert_allclose(
    loss_fn(x * 1e18, labels, distance="squared_l2"),
    reference(x * 1e18, labels, 1.0, "squared_l2"),
    rtol=1e-4,
  )
  # The true loss overflows float32 here: Inf, never Inf - Inf = NaN.
  assert float(loss_fn(x * 1e20, labels, distance="squared_l2")) == np.inf
  per_anchor = np.asarray(loss_fn(x * 1e20, labels, distance="squared_l2", reduction="none"))
  assert not np.isnan(per_anchor).any() and (per_anchor == np.inf).any()


def test_pairwise_distances_of_huge_rows_overflow_to_inf_not_nan():
  x = np.array([[3e19, 0.0], [-3e19, 0.0], [3e19, 0.0], [2e19, 0.0]], np.float32)
  squared = np.asarray(pairwise_distances(x, x, "squared_l2"))
  assert not np.isnan(squared).any()
  np.testing.assert_array_equal(np.diag(squared), 0.0)
  assert squared[0, 1] == np.inf and squared[0, 2] == 0.0
  np.testing.assert_allclose(squared[0, 3], 1e38, rtol=1e-5)
  np.testing.assert_allclose(pairwise_distances(x, x, "l2")[0, 1], 6e19, rtol=1e-6)
