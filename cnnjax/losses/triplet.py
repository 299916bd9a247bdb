"""Triplet losses with online mining: semi-hard (as TensorFlow Addons), batch-hard, batch-all.

All three take embeddings [B, D] and integer labels [B]. An anchor-positive pair is two
different samples with the same label; a negative has another label. Distances are
computed in float32 (bfloat16 and float16 inputs are upcast) and are safe at zero: the
gradient of the distance between identical embeddings is zero, never NaN. A batch without
any positive pair or without any negative gives loss 0 and zero gradients.

Huge embeddings: distances are computed between embeddings divided by a power of two near
their largest magnitude, and each term's difference of distances is scaled back before the
margin is added, so no overflowed distance is ever subtracted from another (Inf - Inf).
Terms are therefore right whenever they fit in float32 and +Inf or 0 when the true value
overflows, never NaN; a loss whose sum overflows float32 is +Inf. Gradients stay finite
while the distances fit in float32, and for 'squared_l2' while max |x| is below 2^64
(about 1.8e19).

NaN or Inf in the embeddings: the loss is NaN (with NaN gradients) whenever the batch has
any term, even for the other anchors, so a diverged model shows in the loss instead of
being hidden by the mining. An empty batch raises UsageError.

With `axis_name` set (inside `jax.shard_map` or `jax.pmap`), `embeddings` and `labels` are
this device's shard: its rows are the anchors, and positives and negatives come from the
global batch gathered with `jax.lax.all_gather`. For reduction 'mean' and 'sum' the value
returned is the loss of the global batch, identical on every device, and
`jax.lax.pmean(grads, axis_name)` of the per-device gradients in the train step equals
the single-device gradient on the concatenated batch exactly, under pmap and shard_map
alike (the exact convention is in the `cnnjax.losses` package doc). 'none' returns this
device's per-anchor values.
"""

import functools
from typing import Literal

import jax
import jax.numpy as jnp

from cnnjax.errors import UsageError
from cnnjax.losses import _common
from cnnjax.losses._common import AxisName

Distance = Literal["l2", "squared_l2", "cosine"]
DISTANCES = ("l2", "squared_l2", "cosine")
# Elements of one [anchors, B, B] chunk of triplet_all_loss: bounds its working memory.
_ALL_TRIPLETS_CHUNK_ELEMENTS = 1 << 22
_STATIC_ARGUMENTS = ("distance", "axis_name", "reduction", "return_metrics")


def _check_distance(distance: str, loss_name: str) -> None:
  if distance not in DISTANCES:
    raise UsageError(f"{loss_name}: distance={distance!r} is unknown; use one of {DISTANCES}.")


def pairwise_distances(a: jax.Array, b: jax.Array, distance: Distance = "l2") -> jax.Array:
  """Distances between every row of `a` and every row of `b`.

  Args:
    a: [M, D] embeddings (any float dtype; computed in float32).
    b: [N, D] embeddings.
    distance: 'l2' (Euclidean), 'squared_l2', or 'cosine' (1 - cosine similarity; a zero
      vector is at distance 1 from everything).

  Returns:
    [M, N] float32 distances, clamped at 0; Inf where a distance overflows float32, NaN
    everywhere when an input holds NaN or Inf. Gradients are finite while the distances
    fit in float32, and zero for the 'l2' distance between identical rows.
  """
  _check_distance(distance, "pairwise_distances")
  _common.check_embeddings(a, "a", "pairwise_distances")
  _common.check_embeddings(b, "b", "pairwise_distances")
  if a.shape[1] != b.shape[1]:
    raise UsageError(
      f"pairwise_distances: a is {tuple(a.shape)} and b is {tuple(b.shape)}; "
      "their embedding sizes must match."
    )
  return _pairwise_distances(a, b, distance=distance)


@functools.partial(jax.jit, static_argnames=("distance",))
def _pairwise_distances(a, b, *, distance):
  scaled, scale = _scaled_distances(a, b, distance)
  return _rescale(scaled, scale, distance)


def _scaled_distances(a: jax.Array, b: jax.Array, distance: str) -> tuple[jax.Array, jax.Array]:
  """(distances [M, N] between a / s and b / s, s), with s = power_of_two_scale(a, b)."""
  a, b = a.astype(jnp.float32), b.astype(jnp.float32)
  scale = _common.power_of_two_scale(a, b)
  a, b = a / scale, b / scale
  dot = functools.partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)
  if distance == "cosine":
    cosine = dot(_common.l2_normalize(a), _common.l2_normalize(b).T)
    return jnp.maximum(1.0 - cosine, 0.0), scale
  squared = (
    jnp.sum(jnp.square(a), axis=1)[:, None]
    + jnp.sum(jnp.square(b), axis=1)[None, :]
    - 2.0 * dot(a, b.T)
  )
  # Rounding can make it slightly negative; a NaN must stay NaN.
  squared = jnp.where(squared < 0, 0.0, squared)
  if distance == "squared_l2":
    return squared, scale
  return _common.safe_sqrt(squared), scale


def _rescale(values: jax.Array, scale: jax.Array, distance: str) -> jax.Array:
  """Distances (or differences of distances) between rows divided by `scale` -> unscaled."""
  if distance == "cosine":
    return values
  if distance == "l2":
    return values * scale
  # Two products: scale ** 2 alone overflows from 2^64, and then 0 * Inf would be NaN.
  return values * scale * scale


def _check_arguments(
  embeddings: jax.Array,
  labels: jax.Array,
  margin: float,
  distance: str,
  reduction: str,
  loss_name: str,
) -> None:
  _common.check_embeddings(embeddings, "embeddings", loss_name)
  if labels.ndim != 1 or labels.shape[0] != embeddings.shape[0]:
    raise UsageError(
      f"{loss_name}: labels must be [{embeddings.shape[0]}] to match embeddings "
      f"{tuple(embeddings.shape)}, got shape {tuple(labels.shape)}."
    )
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise UsageError(
      f"{loss_name}: labels must be integer class ids, got {labels.dtype}; "
      "cast them with .astype(jnp.int32)."
    )
  _common.check_batch(embeddings.shape[0], loss_name, "embeddings")
  _common.check_number(margin, "margin", loss_name, 0.0, "a finite margin >= 0")
  _check_distance(distance, loss_name)
  _common.check_reduction(reduction, loss_name)


def _pair_masks(
  embeddings: jax.Array, labels: jax.Array, distance: str, axis_name: AxisName | None
):
  """Scaled distances [b, B] from local anchors to the global batch, their scale (see
  `_scaled_distances`; the same on every device), positive and negative masks [b, B]."""
  all_embeddings, first_row = _common.gather_global(embeddings, axis_name)
  all_labels, _ = _common.gather_global(labels, axis_name)
  distances, scale = _scaled_distances(embeddings, all_embeddings, distance)
  row_ids = first_row + jnp.arange(embeddings.shape[0])
  same_label = labels[:, None] == all_labels[None, :]
  not_self = row_ids[:, None] != jnp.arange(all_labels.shape[0])[None, :]
  return distances, scale, same_label & not_self, ~same_label


def triplet_semihard_loss(
  embeddings: jax.Array,
  labels: jax.Array,
  margin: float = 1.0,
  distance: Distance = "l2",
  axis_name: AxisName | None = None,
  reduction: str = "mean",
  return_metrics: bool = False,
) -> _common.Loss:
  """Triplet loss with online semi-hard negative mining, as TensorFlow Addons defines it.

  For every anchor-positive pair (a, p) the negative is the one nearest to a among those
  strictly farther from a than p; if there is none, the farthest negative from a. The term
  is max(d(a, p) - d(a, n) + margin, 0). Each anchor's row of distances is sorted once
  (negatives first among equal distances) and a reverse cumulative minimum gives every
  position its next negative: O(B^2) memory and O(B^2 log B) time, no B x B x B tensor.
  Gradients flow through d(a, p) and the selected d(a, n); the selection is piecewise
  constant. Deliberate differences from TFA: a batch of one class (no negative) gives 0
  (TFA: margin + mean d(a, p), taking 0 as the "farthest negative" distance), and a batch
  whose labels are all distinct (no positive pair) gives 0 (TFA: NaN, 0 / 0 pairs).

  Args:
    embeddings: [B, D] float embeddings (this device's shard when axis_name is set).
    labels: [B] integer class ids.
    margin: non-negative margin.
    distance: 'l2' (default, as in TFA), 'squared_l2' or 'cosine'.
    axis_name: named device axis to mine across (see the module doc).
    reduction: 'mean' (over all anchor-positive pairs of the global batch), 'sum', or
      'none' ([B] per-anchor sums over that anchor's pairs, so 'none' sums to 'sum').
    return_metrics: also return a dict of global diagnostics: num_pairs, fallback_fraction
      (pairs that fell back to the farthest negative), active_fraction (pairs with positive
      loss), mean_positive_distance and mean_negative_distance (of the selected negatives).

  Returns:
    The loss (a scalar, or [B] for 'none'), and the metrics dict if requested.
  """
  _check_arguments(embeddings, labels, margin, distance, reduction, "triplet_semihard_loss")
  return _semihard(
    embeddings,
    labels,
    margin,
    distance=distance,
    axis_name=axis_name,
    reduction=reduction,
    return_metrics=return_metrics,
  )


@functools.partial(jax.jit, static_argnames=_STATIC_ARGUMENTS)
def _semihard(embeddings, labels, margin, *, distance, axis_name, reduction, return_metrics):
  distances, scale, positive, negative = _pair_masks(embeddings, labels, distance, axis_name)
  num_columns = distances.shape[1]
  columns = jnp.broadcast_to(jnp.arange(num_columns, dtype=jnp.int32), distances.shape)
  # Sort each anchor's row by distance, negatives first among equal distances, so that the
  # first negative after a positive's position is the nearest one strictly farther. The
  # tie-break key also carries the column: c for a negative, num_columns + c otherwise.
  _, sorted_code = jax.lax.sort(
    (jax.lax.stop_gradient(distances), jnp.where(negative, columns, num_columns + columns)),
    dimension=1,
    num_keys=2,
  )
  sorted_negative = sorted_code < num_columns
  order = jnp.where(sorted_negative, sorted_code, sorted_code - num_columns)
  positions = columns
  next_negative = jax.lax.cummin(
    jnp.where(sorted_negative, positions, num_columns), axis=1, reverse=True
  )
  last_negative = jnp.max(jnp.where(sorted_negative, positions, -1), axis=1, keepdims=True)
  has_semihard = next_negative < num_columns
  chosen = jnp.where(has_semihard, next_negative, jnp.maximum(last_negative, 0))
  # Pairs are indexed by (anchor, sorted position); gradients reach the original columns.
  positive = jnp.take_along_axis(positive, order, axis=1)
  positive_distances = jnp.take_along_axis(distances, order, axis=1)
  negative_distances = jnp.take_along_axis(
    distances, jnp.take_along_axis(order, chosen, axis=1), axis=1
  )

  valid = positive & (last_negative >= 0)
  gap = _rescale(positive_distances - negative_distances, scale, distance) + margin
  pair_losses = jnp.where(valid, jax.nn.relu(gap), 0.0)
  num_pairs = jnp.sum(valid)
  loss = _common.reduce_terms(jnp.sum(pair_losses, axis=1), num_pairs, reduction, axis_name)
  if not return_metrics:
    return loss
  total_pairs = _common.global_sum(num_pairs, axis_name)

  def pair_mean(values):
    return _common.count_ratio(_common.global_sum(jnp.sum(values), axis_name), total_pairs)

  def mean_distance(values):
    # Averaged before rescaling, so that a sum of huge distances cannot overflow.
    return _rescale(pair_mean(jnp.where(valid, values, 0.0)), scale, distance)

  metrics = {
    "num_pairs": total_pairs,
    "fallback_fraction": pair_mean(valid & ~has_semihard),
    "active_fraction": pair_mean(valid & (gap > 0)),
    "mean_positive_distance": mean_distance(positive_distances),
    "mean_negative_distance": mean_distance(negative_distances),
  }
  return loss, metrics


def triplet_hard_loss(
  embeddings: jax.Array,
  labels: jax.Array,
  margin: float = 1.0,
  distance: Distance = "l2",
  axis_name: AxisName | None = None,
  reduction: str = "mean",
  return_metrics: bool = False,
) -> _common.Loss:
  """Batch-hard triplet loss: per anchor, its farthest positive against its nearest negative.

  Each anchor with at least one positive and one negative contributes
  max(max_p d(a, p) - min_n d(a, n) + margin, 0); the gradient goes to the one selected
  positive and negative (the first by column on exact ties). O(B^2) memory and time.
  Deliberately unlike TFA, 'mean' averages over the valid anchors (with a positive and a
  negative); TFA averages over all anchors, a missing positive counting as 0.

  Args:
    embeddings: [B, D] float embeddings (this device's shard when axis_name is set).
    labels: [B] integer class ids.
    margin: non-negative margin.
    distance: 'l2', 'squared_l2' or 'cosine'.
    axis_name: named device axis to mine across (see the module doc).
    reduction: 'mean' (over valid anchors of the global batch), 'sum', or 'none' ([B],
      0 for anchors without a positive or a negative).
    return_metrics: also return num_anchors, active_fraction, mean_positive_distance and
      mean_negative_distance (of the hardest ones), global over devices.

  Returns:
    The loss (a scalar, or [B] for 'none'), and the metrics dict if requested.
  """
  _check_arguments(embeddings, labels, margin, distance, reduction, "triplet_hard_loss")
  return _hard(
    embeddings,
    labels,
    margin,
    distance=distance,
    axis_name=axis_name,
    reduction=reduction,
    return_metrics=return_metrics,
  )


@functools.partial(jax.jit, static_argnames=_STATIC_ARGUMENTS)
def _hard(embeddings, labels, margin, *, distance, axis_name, reduction, return_metrics):
  distances, scale, positive, negative = _pair_masks(embeddings, labels, distance, axis_name)
  keys = jax.lax.stop_gradient(distances)
  hardest_positive = jnp.argmax(jnp.where(positive, keys, -jnp.inf), axis=1)[:, None]
  hardest_negative = jnp.argmin(jnp.where(negative, keys, jnp.inf), axis=1)[:, None]
  positive_distances = jnp.take_along_axis(distances, hardest_positive, axis=1)[:, 0]
  negative_distances = jnp.take_along_axis(distances, hardest_negative, axis=1)[:, 0]
  valid = jnp.any(positive, axis=1) & jnp.any(negative, axis=1)
  gap = _rescale(positive_distances - negative_distances, scale, distance) + margin
  anchor_losses = jnp.where(valid, jax.nn.relu(gap), 0.0)
  num_valid = jnp.sum(valid)
  loss = _common.reduce_terms(anchor_losses, num_valid, reduction, axis_name)
  if not return_metrics:
    return loss
  total = _common.global_sum(num_valid, axis_name)

  def anchor_mean(values):
    return _common.count_ratio(_common.global_sum(jnp.sum(values), axis_name), total)

  def mean_distance(values):
    # Averaged before rescaling, so that a sum of huge distances cannot overflow.
    return _rescale(anchor_mean(jnp.where(valid, values, 0.0)), scale, distance)

  metrics = {
    "num_anchors": total,
    "active_fraction": anchor_mean(valid & (gap > 0)),
    "mean_positive_distance": mean_distance(positive_distances),
    "mean_negative_distance": mean_distance(negative_distances),
  }
  return loss, metrics


def triplet_all_loss(
  embeddings: jax.Array,
  labels: jax.Array,
  margin: float = 1.0,
  distance: Distance = "l2",
  axis_name: AxisName | None = None,
  reduction: str = "mean",
  return_metrics: bool = False,
) -> _common.Loss:
  """Batch-all triplet loss: every valid (anchor, positive, negative) triplet.

  The terms are max(d(a, p) - d(a, n) + margin, 0) over all valid triplets; 'mean'
  divides their sum by the number of triplets with a positive loss (the "active" ones).
  Time is O(B^3) by definition; memory stays O(B^2) because anchors are processed in
  chunks, each rematerialised in the backward pass.

  Args:
    embeddings: [B, D] float embeddings (this device's shard when axis_name is set).
    labels: [B] integer class ids.
    margin: non-negative margin.
    distance: 'l2', 'squared_l2' or 'cosine'.
    axis_name: named device axis to mine across (see the module doc).
    reduction: 'mean' (over active triplets of the global batch), 'sum', or 'none' ([B]
      per-anchor sums over that anchor's triplets).
    return_metrics: also return num_triplets, num_active and active_fraction (global),
      counted in float32.

  Returns:
    The loss (a scalar, or [B] for 'none'), and the metrics dict if requested.
  """
  _check_arguments(embeddings, labels, margin, distance, reduction, "triplet_all_loss")
  return _all(
    embeddings,
    labels,
    margin,
    distance=distance,
    axis_name=axis_name,
    reduction=reduction,
    return_metrics=return_metrics,
  )


@functools.partial(jax.jit, static_argnames=_STATIC_ARGUMENTS)
def _all(embeddings, labels, margin, *, distance, axis_name, reduction, return_metrics):
  distances, scale, positive, negative = _pair_masks(embeddings, labels, distance, axis_name)
  num_columns = distances.shape[1]

  @jax.checkpoint
  def anchor_terms(row):
    anchor_distances, anchor_positive, anchor_negative = row
    # [positive, negative]
    gap = _rescale(anchor_distances[:, None] - anchor_distances[None, :], scale, distance) + margin
    valid = anchor_positive[:, None] & anchor_negative[None, :]
    active = valid & (gap > 0)
    return (
      jnp.sum(jnp.where(valid, jax.nn.relu(gap), 0.0)),
      jnp.sum(active, dtype=jnp.float32),
      jnp.sum(valid, dtype=jnp.float32),
    )

  chunk = max(1, _ALL_TRIPLETS_CHUNK_ELEMENTS // (num_columns * num_columns))
  anchor_losses, num_active, num_valid = jax.lax.map(
    anchor_terms, (distances, positive, negative), batch_size=chunk
  )
  loss = _common.reduce_terms(anchor_losses, jnp.sum(num_active), reduction, axis_name)
  if not return_metrics:
    return loss
  total_active = _common.global_sum(jnp.sum(num_active), axis_name)
  total_valid = _common.global_sum(jnp.sum(num_valid), axis_name)
  metrics = {
    "num_triplets": total_valid,
    "num_active": total_active,
    "active_fraction": _common.count_ratio(total_active, total_valid),
  }
  return loss, metrics
