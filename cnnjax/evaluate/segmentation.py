"""Semantic segmentation metrics: a confusion matrix on device, mIoU and pixel accuracy from it.

The confusion matrix is additive, so the trainer sums it over batches and devices and the
metrics are computed once per split, as in the VOC and Cityscapes benchmarks. Counts are
integers: float32 stops counting at 2^24 pixels (64 images of 512 x 512 already pass it),
so each call counts in int32 and the host sums calls in int64.
"""

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.errors import UsageError


def confusion_matrix(
  predictions: jax.Array,
  labels: jax.Array,
  num_classes: int,
  ignore_index: int | None = None,
  weights: jax.Array | None = None,
) -> jax.Array:
  """Counts [K, K] (rows: true class, columns: predicted class) of labelled pixels.

  Args:
    predictions: [...] int predicted class per pixel (e.g. argmax of logits); values outside
      [0, K) are clipped into it.
    labels: [...] int true class per pixel; `ignore_index` and out-of-range labels do not count.
    num_classes: K.
    ignore_index: a label value to leave out. Pixels predicted as it still count, in its
      column; see `per_class_iou` for how an ignored class inside [0, K) is scored.
    weights: optional [...] (broadcastable) 0/1 mask, e.g. to drop padded examples: a pixel
      counts where its weight is nonzero.

  Returns:
    int32 [K, K] counts, exact up to 2^31 - 1 pixels per call; sum calls in int64.

  Raises:
    UsageError: for predictions or labels that are not integers.
  """
  predictions, labels = jnp.asarray(predictions), jnp.asarray(labels)
  for name, values in (("predictions", predictions), ("labels", labels)):
    if not jnp.issubdtype(values.dtype, jnp.integer):
      raise UsageError(
        f"confusion_matrix: {name} must be integer class ids, got "
        f"{values.dtype}; take the argmax of logits, or cast masks with "
        ".astype(jnp.int32)."
      )
  # In int32, so that label * K + prediction cannot wrap around in uint8 masks.
  predictions, labels = predictions.astype(jnp.int32), labels.astype(jnp.int32)
  counted = (labels >= 0) & (labels < num_classes)
  if ignore_index is not None:
    counted &= labels != ignore_index
  if weights is not None:
    counted &= jnp.broadcast_to(weights, counted.shape) != 0
  index = jnp.clip(labels, 0, num_classes - 1) * num_classes + jnp.clip(
    predictions, 0, num_classes - 1
  )
  counts = jnp.zeros((num_classes * num_classes,), jnp.int32)
  counts = counts.at[index.ravel()].add(counted.ravel().astype(jnp.int32))
  return counts.reshape(num_classes, num_classes)


def per_class_iou(confusion: np.ndarray, ignore_index: int | None = None) -> np.ndarray:
  """[K] IoU of each class, NaN for classes absent from both labels and predictions.

  An `ignore_index` inside [0, K) is NaN too, so that `mean_iou` leaves it out, as
  torchmetrics does: its row is empty by construction, so its IoU would be 0 as soon as
  one pixel is predicted as it and undefined otherwise, a jump of 1/K in the mean that
  measures nothing. Pixels predicted as it still lower the IoU of their true class.

  Args:
    confusion: [K, K] counts from `confusion_matrix` (summed over batches).
    ignore_index: the `ignore_index` the counts were taken with; values outside [0, K)
      change nothing.
  """
  confusion = np.asarray(confusion, np.float64)  # Exact for counts below 2^53.
  true_positive = np.diag(confusion)
  union = confusion.sum(0) + confusion.sum(1) - true_positive
  with np.errstate(invalid="ignore", divide="ignore"):
    ious = np.where(union > 0, true_positive / union, np.nan)
  if ignore_index is not None and 0 <= ignore_index < len(ious):
    ious[ignore_index] = np.nan
  return ious


def mean_iou(confusion: np.ndarray, ignore_index: int | None = None) -> float:
  """Mean IoU over the classes that occur in the labels or the predictions (0 if none).

  `ignore_index` as in `per_class_iou`: an ignored class inside [0, K) is left out.
  """
  ious = per_class_iou(confusion, ignore_index)
  return float(np.nanmean(ious)) if np.isfinite(ious).any() else 0.0


def pixel_accuracy(confusion: np.ndarray) -> float:
  """Fraction of labelled pixels predicted correctly (0 if there are none)."""
  confusion = np.asarray(confusion, np.float64)
  total = confusion.sum()
  return float(np.trace(confusion) / total) if total > 0 else 0.0
