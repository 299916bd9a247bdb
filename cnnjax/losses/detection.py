"""Detection losses: YOLOv1's sum-squared loss and Fast R-CNN's multi-task loss.

Both are pure array functions with static shapes (ground truth padded to M boxes with a
validity mask), jit- and grad-safe: images without objects and batches without positive
RoIs give finite losses, while an empty batch (no images, no RoIs) raises UsageError.
Concrete inputs are checked (box order, coordinate range, label range) and raise
UsageError; traced inputs cannot be checked, and the docstrings say what happens to bad
values then.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnnjax.errors import UsageError
from cnnjax.losses import _common
from cnnjax.ops.boxes import check_boxes, elementwise_box_iou, is_concrete
from cnnjax.ops.yolo import split_yolo_output


def _check_ground_truth(
  boxes, labels, valid, num_classes: int, loss_name: str, normalised: bool
) -> None:
  if not is_concrete(boxes, labels, valid):
    return
  boxes, labels, valid = np.asarray(boxes), np.asarray(labels), np.asarray(valid, bool)
  kept_boxes, kept_labels = boxes[valid], labels[valid]
  if not kept_boxes.size:
    return
  check_boxes(kept_boxes, f"{loss_name}: ground-truth boxes")
  if normalised and (kept_boxes.min() < -1e-3 or kept_boxes.max() > 1 + 1e-3):
    raise UsageError(
      f"{loss_name}: boxes must be normalised to [0, 1] (divide pixel "
      "coordinates by the image size)."
    )
  if kept_labels.min() < 0 or kept_labels.max() >= num_classes:
    raise UsageError(
      f"{loss_name}: box labels must lie in [0, {num_classes}), found "
      f"{kept_labels.min()}..{kept_labels.max()}."
    )


def _yolo_targets(
  boxes: jax.Array, labels: jax.Array, valid: jax.Array, grid: int, num_classes: int
):
  """One image's targets: each object goes to the cell holding its centre.

  Args:
    boxes: [M, 4] xyxy in [0, 1]; labels: [M]; valid: [M].

  Returns:
    has_object [S*S] bool, target boxes [S*S, 4], target (x, y, sqrt w, sqrt h) [S*S, 4]
    and one-hot classes [S*S, C]. A cell holding several centres takes the largest object
    (the lowest index on ties), as the paper allows one object per cell.
  """
  center = (boxes[:, :2] + boxes[:, 2:]) / 2
  cell_xy = jnp.clip(jnp.floor(center * grid), 0, grid - 1)
  cell = (cell_xy[:, 1] * grid + cell_xy[:, 0]).astype(jnp.int32)
  wh = jnp.maximum(boxes[:, 2:] - boxes[:, :2], 0)
  priority = jnp.where(valid, wh[:, 0] * wh[:, 1] + 1.0, 0.0)  # +1: empty boxes still count
  claims = jnp.where(cell[:, None] == jnp.arange(grid * grid)[None, :], priority[:, None], 0.0)
  owner = jnp.argmax(claims, axis=0)
  has_object = jnp.max(claims, axis=0) > 0
  offsets = center[owner] * grid - cell_xy[owner]
  raw = jnp.concatenate([offsets, _common.safe_sqrt(wh[owner])], axis=-1)
  classes = jax.nn.one_hot(jnp.clip(labels[owner], 0, num_classes - 1), num_classes)
  return has_object, boxes[owner], raw, classes


def yolo_v1_loss(
  predictions: jax.Array,
  boxes: jax.Array,
  labels: jax.Array,
  valid: jax.Array,
  num_boxes: int = 2,
  lambda_coord: float = 5.0,
  lambda_noobj: float = 0.5,
  reduction: str = "mean",
  return_metrics: bool = False,
) -> _common.Loss:
  """YOLOv1's sum-squared loss (Redmon et al., 2016).

  For each object, the cell holding its centre is responsible, and of that cell's B boxes
  the one with the highest IoU with the object (current predictions, no gradient):

    lambda_coord * [(x - x*)^2 + (y - y*)^2 + (sqrt w - sqrt w*)^2 + (sqrt h - sqrt h*)^2]
    + (C - IoU)^2 for responsible boxes + lambda_noobj * C^2 for all other boxes
    + sum over classes of (p - p*)^2 for cells holding an object,

  summed over the grid of each image.

  Args:
    predictions: [N, S, S, B * 5 + C], laid out as in
      `cnnjax.ops.yolo.split_yolo_output`.
    boxes: [N, M, 4] ground truth xyxy normalised to [0, 1] by the image size; M may be 0.
    labels: [N, M] int classes in [0, C).
    valid: [N, M] bool, which of the M padded boxes are real.
    num_boxes: B.
    lambda_coord, lambda_noobj: the paper's 5 and 0.5.
    reduction: 'mean' over images, 'sum', or 'none' ([N]).
    return_metrics: also return a dict of the summed terms (averaged over images).

  Returns:
    The loss, and with `return_metrics` a (loss, metrics) pair. Traced labels outside
    [0, C) are clipped into range; concrete ones raise UsageError.
  """
  _common.check_reduction(reduction, "yolo_v1_loss")
  n, grid, grid_w, _ = predictions.shape
  _common.check_batch(n, "yolo_v1_loss", "images")
  if grid != grid_w:
    raise UsageError(
      f"yolo_v1_loss: predictions must be on a square S x S grid, got {grid}x{grid_w}."
    )
  pred_boxes, pred_raw, confidences, class_scores = split_yolo_output(
    predictions.astype(jnp.float32), num_boxes
  )
  num_classes = class_scores.shape[-1]
  _check_ground_truth(boxes, labels, valid, num_classes, "yolo_v1_loss", normalised=True)
  if jnp.shape(boxes)[1] == 0:
    # No ground-truth slots: one invalid slot gives the target arrays something to index.
    boxes = jnp.zeros((n, 1, 4))
    labels = jnp.zeros((n, 1), jnp.int32)
    valid = jnp.zeros((n, 1), bool)
  has_object, target_boxes, target_raw, target_classes = jax.vmap(
    _yolo_targets, in_axes=(0, 0, 0, None, None)
  )(
    jnp.asarray(boxes, jnp.float32),
    jnp.asarray(labels),
    jnp.asarray(valid, bool),
    grid,
    num_classes,
  )
  cells = grid * grid
  pred_boxes = pred_boxes.reshape(n, cells, num_boxes, 4)
  pred_raw = pred_raw.reshape(n, cells, num_boxes, 4)
  confidences = confidences.reshape(n, cells, num_boxes)
  class_scores = class_scores.reshape(n, cells, num_classes)
  iou = jax.lax.stop_gradient(elementwise_box_iou(pred_boxes, target_boxes[:, :, None, :]))
  responsible = jax.nn.one_hot(jnp.argmax(iou, axis=-1), num_boxes) * has_object[..., None]
  coord = jnp.sum(jnp.square(pred_raw - target_raw[:, :, None, :]), axis=-1)
  coord_loss = lambda_coord * jnp.sum(responsible * coord, axis=(1, 2))
  object_loss = jnp.sum(responsible * jnp.square(confidences - iou), axis=(1, 2))
  no_object_loss = lambda_noobj * jnp.sum((1 - responsible) * jnp.square(confidences), axis=(1, 2))
  class_loss = jnp.sum(
    has_object[..., None] * jnp.square(class_scores - target_classes), axis=(1, 2)
  )
  per_image = coord_loss + object_loss + no_object_loss + class_loss
  if reduction == "none":
    loss = per_image
  else:
    loss = jnp.sum(per_image) if reduction == "sum" else jnp.mean(per_image)
  if not return_metrics:
    return loss
  metrics = {
    "coord_loss": coord_loss.mean(),
    "object_loss": object_loss.mean(),
    "no_object_loss": no_object_loss.mean(),
    "class_loss": class_loss.mean(),
    "responsible_iou": _common.count_ratio(jnp.sum(responsible * iou), jnp.sum(responsible)),
  }
  return loss, metrics


def smooth_l1(x: jax.Array, beta: float = 1.0) -> jax.Array:
  """Elementwise smooth L1 (as torch): 0.5 x^2 / beta where |x| < beta, |x| - 0.5 beta elsewhere.

  beta = 0 is plain L1, |x|, with finite gradients. A negative or non-finite beta raises
  UsageError when concrete; traced, a negative one also gives |x| - 0.5 beta.
  """
  _common.check_number(beta, "beta", "smooth_l1", 0.0, "a finite beta >= 0 (0 is plain L1)")
  # |x| whose gradient at 0 is sign(0) = 0, as torch's L1 (jnp.abs gives 1 there).
  magnitude = x * jax.lax.stop_gradient(jnp.sign(x))
  # The quadratic branch is never taken when beta is 0; the safe divisor keeps its gradient
  # (which `where` still computes) finite.
  quadratic = 0.5 * jnp.square(x) / jnp.where(beta > 0, beta, 1.0)
  return jnp.where(magnitude < beta, quadratic, magnitude - 0.5 * beta)


def fast_rcnn_loss(
  class_logits: jax.Array,
  box_deltas: jax.Array,
  labels: jax.Array,
  regression_targets: jax.Array,
  weights: jax.Array | None = None,
  box_loss_weight: float = 1.0,
  beta: float = 1.0,
  reduction: str = "mean",
  return_metrics: bool = False,
) -> _common.Loss:
  """Fast R-CNN's multi-task loss (Girshick, 2015): L = L_cls + lambda [u >= 1] L_loc.

  L_cls is the softmax cross-entropy over K + 1 classes (0 = background); L_loc sums the
  smooth L1 of the 4 deltas predicted for the RoI's true class against its regression
  targets, for foreground RoIs only. Both are averaged over the counted RoIs (as
  torchvision's fastrcnn_loss), so a batch without foreground RoIs has L_loc = 0.

  Args:
    class_logits: [R, K + 1].
    box_deltas: [R, K + 1, 4] or [R, (K + 1) * 4] per-class deltas (`encode_boxes`).
    labels: [R] int in [0, K]; 0 is background.
    regression_targets: [R, 4] deltas of each RoI's matched ground truth.
    weights: [R] bool or 0/1 float, which RoIs count (padding is 0); all when None.
    box_loss_weight: lambda.
    beta: smooth L1 transition point (1 in the paper; 0 gives L1).
    reduction: 'mean' over counted RoIs, 'sum', or 'none' ([R]).
    return_metrics: also return {'class_loss', 'box_loss', 'accuracy', 'foreground'}.

  Returns:
    The loss, and with `return_metrics` a (loss, metrics) pair. Traced labels outside
    [0, K] are clipped into range; concrete ones raise UsageError.
  """
  _common.check_reduction(reduction, "fast_rcnn_loss")
  num_rois, num_outputs = class_logits.shape
  _common.check_batch(num_rois, "fast_rcnn_loss", "RoIs")
  box_deltas = box_deltas.reshape(num_rois, num_outputs, 4).astype(jnp.float32)
  if is_concrete(labels) and np.size(labels):
    values = np.asarray(labels)
    if values.min() < 0 or values.max() >= num_outputs:
      raise UsageError(
        f"fast_rcnn_loss: RoI labels must lie in [0, {num_outputs}) "
        f"(0 = background), found {values.min()}..{values.max()}."
      )
  labels = jnp.clip(labels, 0, num_outputs - 1)
  weights = (
    jnp.ones((num_rois,), jnp.float32) if weights is None else jnp.asarray(weights, jnp.float32)
  )
  class_losses = (
    optax.softmax_cross_entropy_with_integer_labels(class_logits.astype(jnp.float32), labels)
    * weights
  )
  chosen = jnp.take_along_axis(box_deltas, labels[:, None, None], axis=1)[:, 0]
  foreground = (labels > 0).astype(jnp.float32) * weights
  box_losses = (
    box_loss_weight
    * foreground
    * jnp.sum(smooth_l1(chosen - regression_targets.astype(jnp.float32), beta), axis=-1)
  )
  per_roi = class_losses + box_losses
  count = jnp.sum(weights)
  if reduction == "none":
    loss = per_roi
  elif reduction == "sum":
    loss = jnp.sum(per_roi)
  else:
    loss = _common.count_ratio(jnp.sum(per_roi), count)
  if not return_metrics:
    return loss
  correct = (jnp.argmax(class_logits, axis=-1) == labels).astype(jnp.float32) * weights
  metrics = {
    "class_loss": _common.count_ratio(jnp.sum(class_losses), count),
    "box_loss": _common.count_ratio(jnp.sum(box_losses), count),
    "accuracy": _common.count_ratio(jnp.sum(correct), count),
    "foreground": _common.count_ratio(jnp.sum(foreground), count),
  }
  return loss, metrics
