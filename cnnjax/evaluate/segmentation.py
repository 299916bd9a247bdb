"""Semantic segmentation metrics: a confusion matrix on device, mIoU and pixel accuracy from it.

The confusion matrix is additive, so the trainer sums it over batches and devices and the
metrics are computed once per split, as in the VOC and Cityscapes benchmarks.
"""

import jax
import jax.numpy as jnp
import numpy as np


def confusion_matrix(predictions: jax.Array, labels: jax.Array, num_classes: int,
                     ignore_index: int | None = None,
                     weights: jax.Array | None = None) -> jax.Array:
  """Counts [K, K] (rows: true class, columns: predicted class) of labelled pixels.

  Args:
    predictions: [...] int predicted class per pixel (e.g. argmax of logits).
    labels: [...] int true class per pixel; `ignore_index` and out-of-range labels do not count.
    num_classes: K.
    ignore_index: a label value to leave out.
    weights: optional [...] (broadcastable) 0/1 weights, e.g. to drop padded examples.

  Returns:
    float32 [K, K] counts.
  """
  counted = (labels >= 0) & (labels < num_classes)
  if ignore_index is not None:
    counted &= labels != ignore_index
  counted = counted.astype(jnp.float32)
  if weights is not None:
    counted = counted * jnp.broadcast_to(weights, counted.shape)
  index = jnp.clip(labels, 0, num_classes - 1) * num_classes + jnp.clip(predictions, 0,
                                                                         num_classes - 1)
  counts = jnp.zeros((num_classes * num_classes,), jnp.float32)
  counts = counts.at[index.ravel()].add(counted.ravel())
  return counts.reshape(num_classes, num_classes)


def per_class_iou(confusion: np.ndarray) -> np.ndarray:
  """[K] IoU of each class, NaN for classes absent from both labels and predictions."""
  confusion = np.asarray(confusion, np.float64)
  true_positive = np.diag(confusion)
  union = confusion.sum(0) + confusion.sum(1) - true_positive
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(union > 0, true_positive / union, np.nan)


def mean_iou(confusion: np.ndarray) -> float:
  """Mean IoU over the classes that occur in the labels or the predictions (0 if none)."""
  ious = per_class_iou(confusion)
  return float(np.nanmean(ious)) if np.isfinite(ious).any() else 0.0


def pixel_accuracy(confusion: np.ndarray) -> float:
  """Fraction of labelled pixels predicted correctly (0 if there are none)."""
  confusion = np.asarray(confusion, np.float64)
  total = confusion.sum()
  return float(np.trace(confusion) / total) if total > 0 else 0.0
