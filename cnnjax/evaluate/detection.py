"""Detection metrics on the host: VOC-style AP at IoU 0.5 and COCO-style mAP@[.5:.95].

Matching follows the VOC devkit: per class, detections over all images are taken in
descending score order; each is a true positive when its best-overlapping ground-truth box
in the same image (IoU >= threshold) is not yet matched, else a false positive. Boxes are
continuous xyxy (no +1 pixel in areas). Ground truth marked `difficult` is neither a true
nor a false positive, as in VOC. Classes without ground truth are left out of the mean.

AP is the area under the precision envelope: all-point interpolation (VOC 2010 onwards)
or COCO's 101 recall points.
"""

from typing import Sequence

import numpy as np

from cnnjax.errors import UsageError

COCO_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.96, 0.05), 2).tolist())


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
  """IoU of one box [4] with boxes [M, 4]; 0 for empty unions."""
  wh = np.maximum(np.minimum(box[2:], boxes[:, 2:]) - np.maximum(box[:2], boxes[:, :2]), 0)
  intersection = wh[:, 0] * wh[:, 1]
  area = lambda b: np.maximum(b[..., 2] - b[..., 0], 0) * np.maximum(b[..., 3] - b[..., 1], 0)
  union = area(box) + area(boxes) - intersection
  return np.where(union > 0, intersection / np.where(union > 0, union, 1), 0.0)


def average_precision(recall: np.ndarray, precision: np.ndarray,
                      interpolation: str = "all") -> float:
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
    return float(np.mean(np.where(reached, envelope[np.minimum(first_reaching, recall.size - 1)],
                                  0.0)))
  recall_steps = np.diff(np.concatenate([[0.0], recall]))
  return float(np.sum(recall_steps * envelope))


def _class_ap(detections, ground_truth, label: int, threshold: float,
              interpolation: str) -> float | None:
  """AP of one class at one IoU threshold; None when the class has no (non-difficult) truth."""
  truth = {}
  num_positives = 0
  for image, (boxes, labels, difficult) in enumerate(ground_truth):
    keep = labels == label
    truth[image] = (boxes[keep], difficult[keep], np.zeros(keep.sum(), bool))
    num_positives += int((~difficult[keep]).sum())
  if num_positives == 0:
    return None
  entries = [(score, image, box) for image, (boxes, scores, labels) in enumerate(detections)
             for box, score, det_label in zip(boxes, scores, labels) if det_label == label]
  entries.sort(key=lambda entry: -entry[0])
  true_positive = np.zeros(len(entries))
  false_positive = np.zeros(len(entries))
  for d, (_, image, box) in enumerate(entries):
    boxes, difficult, matched = truth[image]
    if len(boxes) == 0:
      false_positive[d] = 1
      continue
    overlaps = _iou(box, boxes)
    best = int(np.argmax(overlaps))
    if overlaps[best] >= threshold:
      if difficult[best]:
        continue
      if not matched[best]:
        matched[best] = True
        true_positive[d] = 1
      else:
        false_positive[d] = 1
    else:
      false_positive[d] = 1
  tp, fp = np.cumsum(true_positive), np.cumsum(false_positive)
  recall = tp / num_positives
  precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
  return average_precision(recall, precision, interpolation)


def _as_arrays(item, with_scores: bool):
  if with_scores:
    boxes, scores, labels = item
    return (np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(scores, np.float64).ravel(),
            np.asarray(labels).ravel())
  boxes, labels, *difficult = item
  labels = np.asarray(labels).ravel()
  difficult = (np.asarray(difficult[0], bool).ravel() if difficult
               else np.zeros(len(labels), bool))
  return np.asarray(boxes, np.float64).reshape(-1, 4), labels, difficult


def mean_average_precision(detections: Sequence, ground_truth: Sequence, num_classes: int,
                           iou_thresholds: Sequence[float] = (0.5,),
                           interpolation: str = "all") -> dict[str, float]:
  """Mean AP over classes (and IoU thresholds).

  Args:
    detections: per image (boxes [D, 4] xyxy, scores [D], labels [D]).
    ground_truth: per image (boxes [M, 4] xyxy, labels [M]) or (boxes, labels, difficult [M]).
    num_classes: classes are 0 .. num_classes - 1.
    iou_thresholds: IoU thresholds to average over.
    interpolation: 'all' (VOC) or 'coco'.

  Returns:
    {'map': mean over thresholds and classes with ground truth, 'ap/<class>': per-class AP
    averaged over thresholds}.
  """
  if len(detections) != len(ground_truth):
    raise UsageError(f"detections cover {len(detections)} images but ground truth "
                     f"{len(ground_truth)}; pass one entry per image to both.")
  detections = [_as_arrays(item, True) for item in detections]
  ground_truth = [_as_arrays(item, False) for item in ground_truth]
  results = {}
  for label in range(num_classes):
    aps = [_class_ap(detections, ground_truth, label, t, interpolation) for t in iou_thresholds]
    if aps[0] is not None:
      results[f"ap/{label}"] = float(np.mean(aps))
  per_class = [v for v in results.values()]
  results["map"] = float(np.mean(per_class)) if per_class else 0.0
  return results


def voc_map(detections: Sequence, ground_truth: Sequence, num_classes: int) -> float:
  """VOC mAP at IoU 0.5 with all-point interpolation."""
  return mean_average_precision(detections, ground_truth, num_classes, (0.5,), "all")["map"]


def coco_map(detections: Sequence, ground_truth: Sequence, num_classes: int) -> float:
  """COCO mAP averaged over IoU 0.50:0.05:0.95 with 101-point interpolation."""
  return mean_average_precision(detections, ground_truth, num_classes, COCO_THRESHOLDS,
                                "coco")["map"]
