"""Box operations on xyxy boxes with torchvision.ops semantics and static shapes.

All functions are jit-compatible. Boxes are `[..., 4]` arrays `(x1, y1, x2, y2)`.

Malformed boxes (x2 < x1 or y2 < y1): when the boxes are concrete arrays (not traced under
jit) every function here raises `UsageError`. Under jit they cannot be inspected, so widths
and heights are clamped at zero: such a box has area 0 and IoU 0 with everything. Where
torchvision divides 0 by 0 (two zero-area boxes), these functions return 0, never NaN.
Wrong shapes and sizes raise `UsageError` under jit too.

IoUs (box_iou, generalized_box_iou, elementwise_box_iou, nms) are computed in at least
float32 and returned in the boxes' float dtype: float16 areas overflow at 65504, so the
union of a box with itself is already Inf once a side reaches 181 pixels.
"""

import math
from types import ModuleType
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from cnnjax.errors import UsageError

# Fast R-CNN's box-regression weights (torchvision's RoIHeads BoxCoder).
FAST_RCNN_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
# Largest log-scale change decode_boxes applies, as torchvision (a 1000/16 size ratio).
_MAX_LOG_SCALE = math.log(1000.0 / 16)
# Detections with static shapes: boxes [N, D, 4], scores [N, D], classes [N, D], valid [N, D].
Detections = tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray, jnp.ndarray]


def is_concrete(*values: Any) -> bool:
  """Whether all values hold data now (so they can be checked), rather than being traced."""
  return not any(isinstance(x, jax.core.Tracer) for x in values)


def check_int(value: Any, name: str, minimum: int | None = None) -> int:
  """`value` as an int; UsageError unless it is a Python or NumPy integer (>= minimum if set).

  For static sizes and counts (output lengths, grid sizes), which must be known when tracing.
  """
  if (
    isinstance(value, (bool, np.bool_))
    or not isinstance(value, (int, np.integer))
    or (minimum is not None and value < minimum)
  ):
    requirement = "an int" if minimum is None else f"an int >= {minimum}"
    raise UsageError(f"{name} must be {requirement}, got {value!r}.")
  return int(value)


def check_boxes(boxes: ArrayLike, name: str = "boxes", ndim: int | None = None) -> None:
  """Raises UsageError when `boxes` are not [..., 4] ([N, 4] with ndim=2) or, concrete, have
  x2 < x1 or y2 < y1 or coordinates that are not finite.

  Shapes are checked under jit too; traced values are not (see the module docstring for how
  they are handled).
  """
  shape = tuple(np.shape(boxes))
  if shape[-1:] != (4,) or (ndim is not None and len(shape) != ndim):
    layout = "[N, 4]" if ndim == 2 else "[..., 4]"
    raise UsageError(f"{name} must have shape {layout} (x1, y1, x2, y2), got {shape}.")
  if not is_concrete(boxes):
    return
  values = np.asarray(boxes)
  if not np.isfinite(values).all():
    raise UsageError(f"{name} contain NaN or Inf coordinates; drop or fix those boxes first.")
  if (values[..., 2] < values[..., 0]).any() or (values[..., 3] < values[..., 1]).any():
    raise UsageError(
      f"{name} have x2 < x1 or y2 < y1 in some box; pass (x1, y1, x2, y2) "
      "with x1 <= x2 and y1 <= y2."
    )


def box_area(boxes: ArrayLike, xp: ModuleType = jnp) -> jnp.ndarray:
  """boxes: [..., 4] -> areas [...]; malformed boxes have area 0.

  `xp` is the array module: jax.numpy (traceable), or numpy for float64 work on the host.
  """
  widths = xp.maximum(boxes[..., 2] - boxes[..., 0], 0)
  heights = xp.maximum(boxes[..., 3] - boxes[..., 1], 0)
  return widths * heights


def _safe_divide(
  numerator: jnp.ndarray, denominator: jnp.ndarray, xp: ModuleType = jnp
) -> jnp.ndarray:
  """numerator / denominator, 0 where denominator <= 0 (with finite gradients there)."""
  positive = denominator > 0
  return xp.where(positive, numerator / xp.where(positive, denominator, 1), 0)


def _iou_dtypes(boxes1: ArrayLike, boxes2: ArrayLike, xp: ModuleType = jnp):
  """(dtype to compute IoUs in, dtype to return them in) for these boxes.

  At least float32 inside, since float16 areas overflow at 65504; the boxes' float dtype
  outside (integer boxes give the dtype their division gives: float32, or float64 in NumPy).
  """
  dtype = xp.result_type(boxes1, boxes2)
  if not xp.issubdtype(dtype, xp.floating):
    dtype = xp.result_type(dtype, xp.float32)
  return xp.promote_types(dtype, xp.float32), dtype


def _intersection_union(
  boxes1: ArrayLike, boxes2: ArrayLike, xp: ModuleType = jnp
) -> tuple[jnp.ndarray, jnp.ndarray]:
  """boxes1 [..., 4] and boxes2 [..., 4], broadcast -> intersection and union areas [...].

  Computed in at least float32 (see `_iou_dtypes`).
  """
  compute_dtype, _ = _iou_dtypes(boxes1, boxes2, xp)
  boxes1, boxes2 = boxes1.astype(compute_dtype), boxes2.astype(compute_dtype)
  top_left = xp.maximum(boxes1[..., :2], boxes2[..., :2])
  bottom_right = xp.minimum(boxes1[..., 2:], boxes2[..., 2:])
  wh = xp.maximum(bottom_right - top_left, 0)
  intersection = wh[..., 0] * wh[..., 1]
  union = box_area(boxes1, xp) + box_area(boxes2, xp) - intersection
  return intersection, union


def elementwise_box_iou(boxes1: ArrayLike, boxes2: ArrayLike, xp: ModuleType = jnp) -> jnp.ndarray:
  """IoU of boxes1[..., 4] with boxes2[..., 4], broadcast against each other; 0 for empty unions.

  Unchecked (callers check or mask), so it runs inside traced code. `xp` is the array
  module: jax.numpy by default, numpy for float64 evaluation on the host. Computed in at
  least float32, returned in the boxes' float dtype.
  """
  intersection, union = _intersection_union(boxes1, boxes2, xp)
  return _safe_divide(intersection, union, xp).astype(_iou_dtypes(boxes1, boxes2, xp)[1])


def box_iou(boxes1: jnp.ndarray, boxes2: jnp.ndarray) -> jnp.ndarray:
  """Pairwise intersection over union.

  Args:
    boxes1: [N, 4] xyxy.
    boxes2: [M, 4] xyxy.

  Returns:
    [N, M] IoU in [0, 1] in the boxes' float dtype; 0 where the union is empty (torchvision
    gives NaN there).
  """
  check_boxes(boxes1, "boxes1", ndim=2)
  check_boxes(boxes2, "boxes2", ndim=2)
  return elementwise_box_iou(jnp.asarray(boxes1)[:, None], jnp.asarray(boxes2)[None, :])


def generalized_box_iou(boxes1: jnp.ndarray, boxes2: jnp.ndarray) -> jnp.ndarray:
  """Pairwise generalised IoU (Rezatofighi et al., 2019): IoU - |C \\ (A u B)| / |C|.

  Args:
    boxes1: [N, 4] xyxy.
    boxes2: [M, 4] xyxy.

  Returns:
    [N, M] GIoU in [-1, 1] in the boxes' float dtype; the enclosing-box term is 0 when the
    enclosing box is empty.
  """
  check_boxes(boxes1, "boxes1", ndim=2)
  check_boxes(boxes2, "boxes2", ndim=2)
  boxes1, boxes2 = jnp.asarray(boxes1)[:, None], jnp.asarray(boxes2)[None, :]
  compute_dtype, dtype = _iou_dtypes(boxes1, boxes2)
  boxes1, boxes2 = boxes1.astype(compute_dtype), boxes2.astype(compute_dtype)
  intersection, union = _intersection_union(boxes1, boxes2)
  iou = _safe_divide(intersection, union)
  top_left = jnp.minimum(boxes1[..., :2], boxes2[..., :2])
  bottom_right = jnp.maximum(boxes1[..., 2:], boxes2[..., 2:])
  wh = jnp.maximum(bottom_right - top_left, 0)
  enclosing = wh[..., 0] * wh[..., 1]
  return (iou - _safe_divide(enclosing - union, enclosing)).astype(dtype)


def _centers_sizes(boxes: jnp.ndarray):
  widths = boxes[..., 2] - boxes[..., 0]
  heights = boxes[..., 3] - boxes[..., 1]
  return boxes[..., 0] + 0.5 * widths, boxes[..., 1] + 0.5 * heights, widths, heights


def encode_boxes(
  boxes: jnp.ndarray, references: jnp.ndarray, weights: Sequence[float] = FAST_RCNN_WEIGHTS
) -> jnp.ndarray:
  """Regression targets that move `references` onto `boxes` (R-CNN parametrisation).

  dx = wx (x - xr) / wr, dy = wy (y - yr) / hr, dw = ww log(w / wr), dh = wh log(h / hr),
  with centres (x, y) and sizes (w, h), as torchvision's BoxCoder.encode_single.

  Args:
    boxes: [..., 4] target boxes, xyxy.
    references: [..., 4] proposals or anchors, xyxy, same shape.
    weights: (wx, wy, ww, wh).

  Returns:
    [..., 4] deltas. Zero-size boxes or references give finite (clamped) deltas, not Inf.
  """
  wx, wy, ww, wh = weights
  rx, ry, rw, rh = _centers_sizes(references)
  bx, by, bw, bh = _centers_sizes(boxes)
  tiny = jnp.finfo(jnp.result_type(boxes, jnp.float32)).tiny
  rw, rh = jnp.maximum(rw, tiny), jnp.maximum(rh, tiny)
  bw, bh = jnp.maximum(bw, tiny), jnp.maximum(bh, tiny)
  return jnp.stack(
    [wx * (bx - rx) / rw, wy * (by - ry) / rh, ww * jnp.log(bw / rw), wh * jnp.log(bh / rh)],
    axis=-1,
  )


def decode_boxes(
  deltas: jnp.ndarray, references: jnp.ndarray, weights: Sequence[float] = FAST_RCNN_WEIGHTS
) -> jnp.ndarray:
  """Inverse of `encode_boxes`: apply deltas [..., 4] to references [..., 4] -> boxes [..., 4].

  Log-scale deltas are clamped at log(1000/16), as torchvision's BoxCoder.decode_single,
  so that an untrained regressor cannot overflow exp().
  """
  wx, wy, ww, wh = weights
  rx, ry, rw, rh = _centers_sizes(references)
  dx, dy = deltas[..., 0] / wx, deltas[..., 1] / wy
  dw = jnp.minimum(deltas[..., 2] / ww, _MAX_LOG_SCALE)
  dh = jnp.minimum(deltas[..., 3] / wh, _MAX_LOG_SCALE)
  cx, cy = dx * rw + rx, dy * rh + ry
  w, h = jnp.exp(dw) * rw, jnp.exp(dh) * rh
  return jnp.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)


def clip_boxes(boxes: jnp.ndarray, height: int, width: int) -> jnp.ndarray:
  """Clips boxes [..., 4] to the image [0, width] x [0, height]."""
  x = jnp.clip(boxes[..., 0::2], 0, width)
  y = jnp.clip(boxes[..., 1::2], 0, height)
  return jnp.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], axis=-1)


def _largest_at_most(threshold: ArrayLike, dtype: jnp.dtype) -> ArrayLike:
  """The largest `dtype` number <= threshold; a traced threshold is returned unchanged.

  torchvision compares an IoU computed in the boxes' precision with the threshold as a
  double. For an IoU x of that precision, x > threshold exactly when x > this number,
  whereas rounding the threshold to nearest (0.3 -> 0.30000001 in float32) keeps boxes
  whose IoU, 6/20 say, rounds to the same float32 as the threshold.
  """
  try:
    value = float(threshold)
  except (TypeError, jax.errors.ConcretizationTypeError):
    return threshold
  rounded = np.asarray(value, dtype)
  if float(rounded) > value:
    rounded = np.nextafter(rounded, np.asarray(-np.inf, dtype))
  return rounded


def _at_least_float32(boxes: ArrayLike) -> jnp.ndarray:
  """Boxes as a float array of at least float32 precision (float16 areas overflow at 65504)."""
  boxes = jnp.asarray(boxes)
  return boxes.astype(jnp.promote_types(boxes.dtype, jnp.float32))


def _check_nms_arguments(
  boxes: ArrayLike,
  scores: ArrayLike,
  iou_threshold: ArrayLike,
  max_output: int,
  classes: ArrayLike | None = None,
) -> None:
  """Raises UsageError for arguments of nms and batched_nms that cannot give a right answer."""
  check_boxes(boxes, ndim=2)
  num_boxes = np.shape(boxes)[0]
  if np.shape(scores) != (num_boxes,):
    raise UsageError(
      f"scores must be [N] = [{num_boxes}], one per box, got shape {np.shape(scores)}."
    )
  if classes is not None and np.shape(classes) != (num_boxes,):
    raise UsageError(
      f"classes must be [N] = [{num_boxes}], one per box, got shape {np.shape(classes)}."
    )
  check_int(max_output, "max_output", 0)
  if is_concrete(iou_threshold) and np.isnan(np.asarray(iou_threshold)).any():
    raise UsageError("iou_threshold is NaN; pass a number such as 0.5.")


def nms(
  boxes: jnp.ndarray, scores: jnp.ndarray, iou_threshold: float, max_output: int
) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Greedy non-maximum suppression with torchvision's semantics and a static output size.

  Repeatedly keeps the highest-scored remaining box and removes every remaining box whose
  IoU with it is greater than `iou_threshold`. Runs `max_output` rounds of O(N) work each,
  so memory stays O(N) (no N x N IoU matrix). IoUs are computed in float32 (float16 and
  bfloat16 boxes are upcast, float64 ones kept) and compared with the threshold as
  torchvision compares them, with the threshold as a double, so IoUs equal to the threshold
  in exact arithmetic (whole-pixel boxes) give the same result. A traced threshold is
  compared in that dtype instead.

  Args:
    boxes: [N, 4] xyxy.
    scores: [N].
    iou_threshold: boxes with IoU > threshold against a kept box are dropped (not NaN).
    max_output: static length of the result, an int >= 0.

  Returns:
    indices: [max_output] int32 indices into `boxes`, kept boxes in descending score order,
      padded with 0 after the last kept box.
    valid: [max_output] bool, True for the kept entries.
  """
  _check_nms_arguments(boxes, scores, iou_threshold, max_output)
  boxes, scores = _at_least_float32(boxes), jnp.asarray(scores)
  num_boxes = boxes.shape[0]
  if num_boxes == 0:
    return jnp.zeros((max_output,), jnp.int32), jnp.zeros((max_output,), bool)
  threshold = _largest_at_most(iou_threshold, boxes.dtype)
  # A stable descending sort: among equal scores the lower index wins, NaN scores come last.
  order = jnp.argsort(-scores, stable=True).astype(jnp.int32)
  sorted_boxes = boxes[order]

  def keep_next(alive, _):
    position = jnp.argmax(alive)  # the first alive box in score order
    found = alive[position]
    iou = elementwise_box_iou(sorted_boxes[position], sorted_boxes)
    alive = alive & (iou <= threshold)
    alive = alive.at[position].set(False)
    return alive, (jnp.where(found, order[position], 0), found)

  _, (indices, valid) = jax.lax.scan(
    keep_next, jnp.ones((num_boxes,), bool), None, length=max_output
  )
  return indices, valid


def batched_nms(
  boxes: jnp.ndarray,
  scores: jnp.ndarray,
  classes: jnp.ndarray,
  iou_threshold: float,
  max_output: int,
) -> tuple[jnp.ndarray, jnp.ndarray]:
  """NMS within each class: boxes of different classes never suppress each other.

  Shifts each class's boxes by class * (coordinate range + 1) so that classes cannot
  overlap, then runs one `nms`, as torchvision's batched_nms.

  Args:
    boxes: [N, 4] xyxy.
    scores: [N].
    classes: [N] int class of each box.
    iou_threshold: as `nms`.
    max_output: static length of the result.

  Returns:
    (indices [max_output], valid [max_output]) as `nms`, over all classes together.
  """
  _check_nms_arguments(boxes, scores, iou_threshold, max_output, classes)
  if np.shape(boxes)[0] == 0:
    return nms(boxes, scores, iou_threshold, max_output)
  # Upcast before shifting: shifted float16 coordinates would lose most of their digits.
  boxes, classes = _at_least_float32(boxes), jnp.asarray(classes)
  span = jnp.max(boxes) - jnp.min(boxes) + 1
  shifted = boxes + (classes.astype(boxes.dtype) * span)[:, None]
  return nms(shifted, scores, iou_threshold, max_output)


def select_detections(
  boxes: jnp.ndarray,
  scores: jnp.ndarray,
  classes: jnp.ndarray,
  score_threshold: float,
  iou_threshold: float,
  max_detections: int,
  valid: jnp.ndarray | None = None,
) -> Detections:
  """Score threshold then per-class NMS over a batch of candidate detections.

  Args:
    boxes: [N, P, 4] xyxy; scores: [N, P]; classes: [N, P] int.
    score_threshold: candidates scoring below it are dropped.
    iou_threshold: as `nms`.
    max_detections: D, the static number of detections per image.
    valid: [N, P] bool, which candidates are real (padding is never returned, whatever
      its score); all when None.

  Returns:
    boxes [N, D, 4], scores [N, D] (0 where invalid), classes [N, D] int32, valid [N, D]
    bool, in descending score order.
  """
  n, num_candidates = scores.shape
  if num_candidates == 0:
    return (
      jnp.zeros((n, max_detections, 4), boxes.dtype),
      jnp.zeros((n, max_detections)),
      jnp.zeros((n, max_detections), jnp.int32),
      jnp.zeros((n, max_detections), bool),
    )
  if valid is None:
    valid = jnp.ones((n, num_candidates), bool)

  def one_image(image_boxes, image_scores, image_classes, image_valid):
    candidate = (image_scores >= score_threshold) & image_valid
    # Dropped candidates sort after every kept one, so they never suppress a real box.
    masked = jnp.where(candidate, image_scores, -jnp.inf)
    keep, kept = batched_nms(image_boxes, masked, image_classes, iou_threshold, max_detections)
    kept = kept & candidate[keep]
    return (
      image_boxes[keep],
      jnp.where(kept, image_scores[keep], 0.0),
      image_classes[keep].astype(jnp.int32),
      kept,
    )

  return jax.vmap(one_image)(boxes, scores, classes, jnp.asarray(valid, bool))
