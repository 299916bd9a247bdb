"""VOC and COCO mAP and segmentation mIoU against hand-computed examples."""

import numpy as np
import pytest

from cnnjax.evaluate import detection, segmentation


def _truth(boxes, labels, difficult=None):
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  labels = np.asarray(labels)
  return (boxes, labels) if difficult is None else (boxes, labels, np.asarray(difficult))


def test_voc_all_point_ap_by_hand():
  truth = [_truth([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0])]
  # TP (0.9), FP far away (0.8), TP (0.7): recall .5 .5 1, precision 1 .5 2/3.
  dets = [(np.array([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 31]]), [0.9, 0.8, 0.7],
           [0, 0, 0])]
  assert detection.voc_map(dets, truth, 1) == pytest.approx(0.5 + 0.5 * 2 / 3)
  coco_101 = (51 * 1.0 + 50 * 2 / 3) / 101
  result = detection.mean_average_precision(dets, truth, 1, (0.5,), "coco")
  assert result["map"] == pytest.approx(coco_101)


def test_duplicates_difficult_and_missing_classes():
  truth = [_truth([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1], [False, True]), _truth([], [])]
  dets = [(np.array([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]]), [0.9, 0.8, 0.95],
           [1, 1, 1]),
          (np.array([[0, 0, 5, 5]]), [0.85], [1])]
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
