"""Detection metrics on the host: VOC-style AP at IoU 0.5 and COCO-style mAP@[.5:.95].

Per class, each image's detections are taken in descending score order and matched to the
same image's ground truth, by one of two rules:

- 'voc' (the VOC devkit): a detection is a true positive when its best-overlapping ground
  truth (IoU >= threshold) is not yet matched, else a false positive, even when another
  unmatched ground truth overlaps it enough.
- 'coco' (pycocotools): a detection matches the best-overlapping ground truth with IoU >=
  threshold among those still unmatched (the last of equally good ones), else it is a false
  positive. Only each image's `max_detections` (100) highest-scored detections of a class
  are counted, as pycocotools' maxDets, which caps per image and category.

Boxes are continuous xyxy (no +1 pixel in areas). Ground truth marked `difficult` (COCO's
`ignore`) is neither a true nor a false positive: under 'voc' when it is the best overlap;
under 'coco' when a detection matches it, which happens only if no regular ground truth is
left to match. Classes without ground truth are left out of the mean.

AP is the area under the precision envelope: all-point interpolation (VOC 2010 onwards)
or COCO's 101 recall points.
"""

from typing import Sequence

import numpy as np

from cnnjax.errors import UsageError
from cnnjax.ops.boxes import check_boxes, elementwise_box_iou

COCO_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.96, 0.05), 2).tolist())
COCO_MAX_DETECTIONS = 100
MATCHINGS = ("voc", "coco")
# Outcomes of a detection at one IoU threshold.
_FALSE_POSITIVE, _TRUE_POSITIVE, _IGNORED = 0, 1, 2


def average_precision(
  recall: np.ndarray, precision: np.ndarray, interpolation: str = "all"
) -> float:
  """AP from recall/precision arrays in detection order.

  Args:
    recall, precision: [D] cumulative values after each detection.
    interpolation: 'all' (VOC all-point area) or 'coco' (mean precision at 101 recall points).
  """
  if interpolation not in ("all", "coco"):
    raise UsageError(f"interpolation must be 'all' or 'coco', got {interpolation!r}.")
  recall, precision = np.asarray(recall, np.float64), np.asarray(precision, np.float64)
  if recall.size == 0:
    return 0.0
  # The precision envelope: the best precision at this recall or any higher one.
  envelope = np.maximum.accumulate(precision[::-1])[::-1]
  if interpolation == "coco":
    first_reaching = np.searchsorted(recall, np.linspace(0, 1, 101), side="left")
    reached = first_reaching < recall.size
    return float(
      np.mean(np.where(reached, envelope[np.minimum(first_reaching, recall.size - 1)], 0.0))
    )
  recall_steps = np.diff(np.concatenate([[0.0], recall]))
  return float(np.sum(recall_steps * envelope))


def _match_voc(overlaps: np.ndarray, difficult: np.ndarray, threshold: float) -> np.ndarray:
  """Outcomes [D] of detections (rows of overlaps [D, M], by score) under the VOC rule."""
  outcomes = np.full(overlaps.shape[0], _FALSE_POSITIVE)
  if overlaps.shape[1] == 0:
    return outcomes
  matched = np.zeros(overlaps.shape[1], bool)
  for d, row in enumerate(overlaps):
    best = int(np.argmax(row))
    if row[best] < threshold:
      continue
    if difficult[best]:
      outcomes[d] = _IGNORED
    elif not matched[best]:
      matched[best] = True
      outcomes[d] = _TRUE_POSITIVE
  return outcomes


def _match_coco(overlaps: np.ndarray, difficult: np.ndarray, threshold: float) -> np.ndarray:
  """Outcomes [D] of detections (rows of overlaps [D, M], by score) under pycocotools' rule."""
  outcomes = np.full(overlaps.shape[0], _FALSE_POSITIVE)
  matched = np.zeros(overlaps.shape[1], bool)
  # pycocotools caps the threshold so that a perfect overlap still matches at 1.0.
  threshold = min(threshold, 1 - 1e-10)
  for d, row in enumerate(overlaps):
    # Regular ground truth first; ignored ground truth only when no regular one matches.
    for group in (~difficult, difficult):
      candidates = np.flatnonzero(group & ~matched & (row >= threshold))
      if candidates.size:
        # The last of equally good candidates, as pycocotools' `<` comparison keeps it.
        best = candidates[candidates.size - 1 - int(np.argmax(row[candidates][::-1]))]
        matched[best] = True
        outcomes[d] = _IGNORED if difficult[best] else _TRUE_POSITIVE
        break
  return outcomes


def _class_ap(
  detections,
  ground_truth,
  label: int,
  thresholds: Sequence[float],
  interpolation: str,
  matching: str,
  max_detections: int | None,
) -> float | None:
  """AP of one class averaged over IoU thresholds; None when it has no (non-difficult) truth."""
  match = _match_coco if matching == "coco" else _match_voc
  num_positives = 0
  scores, outcomes = [], []
  for (det_boxes, det_scores, det_labels), (boxes, labels, difficult) in zip(
    detections, ground_truth
  ):
    truth = labels == label
    num_positives += int((~difficult[truth]).sum())
    mine = np.flatnonzero(det_labels == label)
    if not mine.size:
      continue
    # Stable, so that equal scores keep their input order (as the VOC devkit and pycocotools).
    mine = mine[np.argsort(-det_scores[mine], kind="stable")][:max_detections]
    overlaps = elementwise_box_iou(det_boxes[mine][:, None], boxes[truth][None, :], xp=np)
    scores.append(det_scores[mine])
    outcomes.append(np.stack([match(overlaps, difficult[truth], t) for t in thresholds], axis=1))
  if num_positives == 0:
    return None
  if not scores:
    return 0.0
  scores, outcomes = np.concatenate(scores), np.concatenate(outcomes)
  outcomes = outcomes[np.argsort(-scores, kind="stable")]
  aps = []
  for outcome in outcomes.T:
    outcome = outcome[outcome != _IGNORED]
    tp = np.cumsum(outcome == _TRUE_POSITIVE)
    fp = np.cumsum(outcome == _FALSE_POSITIVE)
    recall = tp / num_positives
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    aps.append(average_precision(recall, precision, interpolation))
  return float(np.mean(aps))


def _checked_labels(labels, num_classes: int, what: str) -> np.ndarray:
  labels = np.asarray(labels).ravel()
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise UsageError(
      f"{what} must lie in [0, {num_classes}), found {labels.min()}.."
      f"{labels.max()}; pass 0-based class indices and the right num_classes."
    )
  return labels


def _checked_boxes(boxes, what: str) -> np.ndarray:
  boxes = np.asarray(boxes, np.float64)
  if boxes.size == 0:
    return boxes.reshape(0, 4)
  if boxes.ndim != 2 or boxes.shape[1] != 4:
    raise UsageError(f"{what} must be [D, 4] xyxy, got shape {boxes.shape}.")
  check_boxes(boxes, what)
  return boxes


def _check_lengths(image: int, kind: str, **arrays: np.ndarray) -> None:
  lengths = {name: len(values) for name, values in arrays.items()}
  if len(set(lengths.values())) > 1:
    found = ", ".join(f"{length} {name}" for name, length in lengths.items())
    raise UsageError(f"image {image}: {kind} have {found}; pass one of each per box.")


def _as_detections(item, image: int, num_classes: int):
  boxes, scores, labels = item
  boxes = _checked_boxes(boxes, f"detection boxes of image {image}")
  scores = np.asarray(scores, np.float64).ravel()
  labels = _checked_labels(labels, num_classes, f"detection labels of image {image}")
  _check_lengths(image, "detection arrays", boxes=boxes, scores=scores, labels=labels)
  return boxes, scores, labels


def _as_truth(item, image: int, num_classes: int):
  boxes, labels, *difficult = item
  boxes = _checked_boxes(boxes, f"ground-truth boxes of image {image}")
  labels = _checked_labels(labels, num_classes, f"ground-truth labels of image {image}")
  difficult = np.asarray(difficult[0], bool).ravel() if difficult else np.zeros(len(labels), bool)
  _check_lengths(image, "ground-truth arrays", boxes=boxes, labels=labels, difficult=difficult)
  return boxes, labels, difficult


def mean_average_precision(
  detections: Sequence,
  ground_truth: Sequence,
  num_classes: int,
  iou_thresholds: Sequence[float] = (0.5,),
  interpolation: str = "all",
  matching: str = "voc",
  max_detections: int | None = None,
) -> dict[str, float]:
  """Mean AP over classes (and IoU thresholds).

  Args:
    detections: per image (boxes [D, 4] xyxy, scores [D], labels [D]).
    ground_truth: per image (boxes [M, 4] xyxy, labels [M]) or (boxes, labels, difficult [M]).
    num_classes: classes are 0 .. num_classes - 1; labels outside raise UsageError.
    iou_thresholds: IoU thresholds to average over.
    interpolation: 'all' (VOC) or 'coco'.
    matching: 'voc' or 'coco' (see the module doc).
    max_detections: count only each image's highest-scored detections of each class, this
      many (all when None).

  Returns:
    {'map': mean over thresholds and classes with ground truth, 'ap/<class>': per-class AP
    averaged over thresholds}.

  Raises:
    UsageError: for different numbers of images, of boxes, scores and labels in one image,
      labels outside [0, num_classes), or boxes with x2 < x1, y2 < y1 or non-finite values.
  """
  if len(detections) != len(ground_truth):
    raise UsageError(
      f"detections cover {len(detections)} images but ground truth "
      f"{len(ground_truth)}; pass one entry per image to both."
    )
  if matching not in MATCHINGS:
    raise UsageError(f"matching must be one of {MATCHINGS}, got {matching!r}.")
  detections = [_as_detections(item, i, num_classes) for i, item in enumerate(detections)]
  ground_truth = [_as_truth(item, i, num_classes) for i, item in enumerate(ground_truth)]
  results = {}
  for label in range(num_classes):
    ap = _class_ap(
      detections, ground_truth, label, iou_thresholds, interpolation, matching, max_detections
    )
    if ap is not None:
      results[f"ap/{label}"] = ap
  per_class = list(results.values())
  results["map"] = float(np.mean(per_class)) if per_class else 0.0
  return results


def voc_map(detections: Sequence, ground_truth: Sequence, num_classes: int) -> float:
  """VOC mAP at IoU 0.5 with all-point interpolation and VOC matching."""
  return mean_average_precision(detections, ground_truth, num_classes, (0.5,), "all")["map"]


def coco_map(detections: Sequence, ground_truth: Sequence, num_classes: int) -> float:
  """COCO mAP over IoU 0.50:0.05:0.95: COCO matching, 100 detections, 101-point interpolation."""
  return mean_average_precision(
    detections, ground_truth, num_classes, COCO_THRESHOLDS, "coco", "coco", COCO_MAX_DETECTIONS
  )["map"]
