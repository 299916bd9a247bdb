"""VOC and COCO mAP and segmentation mIoU against hand-computed examples."""

import numpy as np
import pytest

from cnnjax.errors import UsageError
from cnnjax.evaluate import detection, segmentation


def _truth(boxes, labels, difficult=None):
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  labels = np.asarray(labels)
  return (boxes, labels) if difficult is None else (boxes, labels, np.asarray(difficult))


def test_voc_all_point_ap_by_hand():
  truth = [_truth([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0])]
  # TP (0.9), FP far away (0.8), TP (0.7): recall .5 .5 1, precision 1 .5 2/3.
  dets = [
    (np.array([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 31]]), [0.9, 0.8, 0.7], [0, 0, 0])
  ]
  assert detection.voc_map(dets, truth, 1) == pytest.approx(0.5 + 0.5 * 2 / 3)
  coco_101 = (51 * 1.0 + 50 * 2 / 3) / 101
  result = detection.mean_average_precision(dets, truth, 1, (0.5,), "coco")
  assert result["map"] == pytest.approx(coco_101)


def test_duplicates_difficult_and_missing_classes():
  truth = [_truth([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1], [False, True]), _truth([], [])]
  dets = [
    (np.array([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]]), [0.9, 0.8, 0.95], [1, 1, 1]),
    (np.array([[0, 0, 5, 5]]), [0.85], [1]),
  ]
  # Difficult match ignored; 0.9 TP; 0.85 FP (image without truth); 0.8 duplicate FP.
  result = detection.mean_average_precision(dets, truth, 3)
  assert result["ap/1"] == pytest.approx(1.0)
  assert set(result) == {"ap/1", "map"}  # classes 0 and 2 have no truth
  # With the stray 0.85 box now ahead of the only match, precision at full recall is 1/2.
  dets[0] = (dets[0][0], [0.7, 0.8, 0.95], [1, 1, 1])
  assert detection.voc_map(dets, truth, 3) == pytest.approx(0.5)


def test_false_positive_before_true_positive_halves_precision():
  truth = [_truth([[0, 0, 10, 10]], [0])]
  dets = [(np.array([[30, 30, 40, 40], [0, 0, 10, 10]]), [0.9, 0.8], [0, 0])]
  assert detection.voc_map(dets, truth, 1) == pytest.approx(0.5)


def test_coco_map_over_thresholds():
  truth = [_truth([[0, 0, 10, 10]], [0])]
  dets = [(np.array([[0, 0, 10, 7.5]]), [1.0], [0])]  # IoU 0.75: a hit at .50 ... .75
  assert detection.coco_map(dets, truth, 1) == pytest.approx(0.6)
  assert detection.voc_map([(np.zeros((0, 4)), [], [])], truth, 1) == 0.0


def test_coco_matching_takes_the_best_unmatched_ground_truth():
  truth = [_truth([[0, 0, 10, 10], [0, 2, 10, 12]], [0, 0])]  # A, B
  dets = [(np.array([[0, 0, 10, 10], [0, 0.5, 10, 10.5]]), [0.9, 0.8], [0, 0])]  # D1, D2
  # IoUs: D1-A = 1, D1-B = 80 / 120; D2-A = 95 / 105 = 0.905, D2-B = 85 / 115 = 0.739.
  # D1 takes A at every threshold. Under COCO matching D2 then takes B, the best unmatched
  # ground truth, where 0.739 >= t: a true positive at t = .50 .. .70 (5 thresholds, AP 1)
  # and a false positive at t = .75 .. .95 (5 thresholds), where after D1 precision is 1 up
  # to recall 1/2 and recall never rises further: 51 of the 101 recall points, AP 51 / 101.
  assert detection.coco_map(dets, truth, 1) == pytest.approx((5 * 1.0 + 5 * 51 / 101) / 10)
  # VOC matching compares D2 only with its best overlap A, already taken: a false positive
  # at every threshold, so the same thresholds and interpolation give 51 / 101.
  voc_rule = detection.mean_average_precision(dets, truth, 1, detection.COCO_THRESHOLDS, "coco")
  assert voc_rule["map"] == pytest.approx(51 / 101)
  assert detection.voc_map(dets, truth, 1) == pytest.approx(0.5)


def test_coco_counts_each_images_100_best_detections_per_class():
  truth = [_truth([[0, 0, 10, 10]], [0])]
  misses = np.tile([[50.0, 50, 60, 60]], (100, 1))
  boxes = np.concatenate([misses, [[0, 0, 10, 10]]])
  # The only hit scores below 100 misses: the 101st detection is not counted.
  dets = [(boxes, np.r_[np.full(100, 0.9), 0.5], np.zeros(101, int))]
  assert detection.coco_map(dets, truth, 1) == 0.0
  # A hit of another class does not push this class's hit out.
  dets = [(boxes, np.r_[np.full(100, 0.9), 0.5], np.r_[np.ones(100, int), 0])]
  assert detection.coco_map(dets, truth, 2) == pytest.approx(1.0)


@pytest.mark.parametrize(
  "detections, ground_truth, message",
  [
    ([(np.zeros((2, 4)), [0.5], [0, 0])], [_truth([[0, 0, 1, 1]], [0])], "2 boxes, 1 scores"),
    ([(np.zeros((1, 4)), [0.5], [0])], [_truth([[0, 0, 1, 1]], [0, 0])], "1 boxes, 2 labels"),
    ([(np.zeros((1, 4)), [0.5], [3])], [_truth([[0, 0, 1, 1]], [0])], "detection labels"),
    ([(np.zeros((1, 4)), [0.5], [0])], [_truth([[0, 0, 1, 1]], [-1])], "ground-truth labels"),
    ([(np.array([[5, 0, 1, 1]]), [0.5], [0])], [_truth([[0, 0, 1, 1]], [0])], "x2 < x1"),
    ([(np.zeros((1, 4)), [0.5], [0])], [_truth([[0, 3, 1, 1]], [0])], "x2 < x1"),
  ],
)
def test_inconsistent_detections_or_truth_raise(detections, ground_truth, message):
  with pytest.raises(UsageError, match=message):
    detection.voc_map(detections, ground_truth, 2)


def test_segmentation_confusion_miou_and_accuracy():
  labels = np.array([[0, 0, 1, 1], [2, 2, 255, 1]])
  preds = np.array([[0, 1, 1, 1], [2, 0, 2, 1]])
  confusion = np.asarray(segmentation.confusion_matrix(preds, labels, 3, ignore_index=255))
  expected = np.array([[1, 1, 0], [0, 3, 0], [1, 0, 1]])
  np.testing.assert_array_equal(confusion, expected)
  # IoU: class 0 = 1 / 3, class 1 = 3 / 4, class 2 = 1 / 2.
  assert segmentation.mean_iou(confusion) == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)
  assert segmentation.pixel_accuracy(confusion) == pytest.approx(5 / 7)
  assert segmentation.mean_iou(np.zeros((3, 3))) == 0.0
