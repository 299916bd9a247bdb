"""Integer confusion counts past float32's 2^24, mIoU against numpy, an ignored class."""

import numpy as np
import pytest

from cnnjax.errors import UsageError
from cnnjax.evaluate import segmentation


def test_counts_do_not_stall_at_two_to_the_24():
  n = 2**24 + 10
  zeros = np.zeros(n, np.int32)
  confusion = np.asarray(segmentation.confusion_matrix(zeros, zeros, 2))
  assert confusion.dtype == np.int32
  np.testing.assert_array_equal(confusion, [[16_777_226, 0], [0, 0]])
  # The host sums calls in int64, past int32's range too.
  total = sum(np.asarray(confusion, np.int64) for _ in range(200))
  assert total[0, 0] == 200 * 16_777_226


def _reference_ious(predictions, labels, num_classes, ignore_index, mask):
  """IoU per class (None where undefined) straight from the pixels, in Python ints."""
  counted = (labels >= 0) & (labels < num_classes) & (labels != ignore_index) & mask
  ious = []
  for c in range(num_classes):
    truth, predicted = counted & (labels == c), counted & (predictions == c)
    union = int((truth | predicted).sum())
    ious.append(int((truth & predicted).sum()) / union if union else None)
  return ious


def test_miou_from_integer_counts_equals_numpy_reference():
  rng = np.random.default_rng(0)
  num_classes = 5
  predictions = rng.integers(0, num_classes, (2, 6, 16, 16))
  labels = rng.integers(-1, num_classes + 1, (2, 6, 16, 16))  # Out of range: not counted.
  labels[labels == 3] = 255
  valid = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])  # The first batch is padded.
  mask = np.broadcast_to(valid[:, :, None, None].astype(bool), labels.shape)
  # Two calls, summed in int64 as the trainer does.
  confusion = sum(
    np.asarray(
      segmentation.confusion_matrix(
        predictions[b], labels[b], num_classes, 255, valid[b][:, None, None]
      ),
      np.int64,
    )
    for b in range(2)
  )
  ious = _reference_ious(predictions, labels, num_classes, 255, mask)
  assert ious[3] == 0.0  # Never a label (all 255), but predicted: a false-positive-only class.
  got = segmentation.per_class_iou(confusion)
  np.testing.assert_array_equal(got, [np.nan if iou is None else iou for iou in ious])
  assert segmentation.mean_iou(confusion) == sum(ious) / num_classes
  counted = (labels >= 0) & (labels < num_classes) & (labels != 255) & mask
  assert segmentation.pixel_accuracy(confusion) == (
    int((counted & (predictions == labels)).sum()) / int(counted.sum())
  )


def test_ignore_index_inside_the_class_range_is_left_out_of_the_mean():
  labels = np.array([0, 0, 1, 1, 2, 2])
  predictions = np.array([0, 1, 1, 1, 2, 0])  # Pixels predicted as the ignored class 0.
  confusion = np.asarray(segmentation.confusion_matrix(predictions, labels, 3, ignore_index=0))
  np.testing.assert_array_equal(confusion, [[0, 0, 0], [0, 2, 0], [1, 0, 1]])
  # Class 1: 2 / 2; class 2: 1 / 2 (its pixel predicted as 0 is a miss).
  np.testing.assert_array_equal(
    segmentation.per_class_iou(confusion, ignore_index=0), [np.nan, 1.0, 0.5]
  )
  assert segmentation.mean_iou(confusion, ignore_index=0) == 0.75
  # Without it the empty row scores 0 because of that one pixel, a 1/K jump.
  assert segmentation.mean_iou(confusion) == 0.5
  # An ignore_index outside the classes (VOC's 255) changes nothing.
  assert segmentation.mean_iou(confusion, ignore_index=255) == 0.5
  never_predicted = np.asarray(segmentation.confusion_matrix(labels, labels, 3, ignore_index=0))
  assert segmentation.mean_iou(never_predicted, ignore_index=0) == 1.0
  assert segmentation.mean_iou(never_predicted) == 1.0


def test_uint8_masks_do_not_wrap_and_floats_raise():
  labels = np.array([20, 20, 19, 0], np.uint8)
  predictions = np.array([20, 19, 19, 20], np.uint8)
  confusion = np.asarray(segmentation.confusion_matrix(predictions, labels, 21))
  # 20 * 21 + 20 = 440 would wrap to 184 in uint8.
  assert (confusion[20, 20], confusion[20, 19], confusion[19, 19], confusion[0, 20]) == (1, 1, 1, 1)
  assert confusion.sum() == 4
  with pytest.raises(UsageError, match="labels must be integer class ids, got float32"):
    segmentation.confusion_matrix(predictions, labels.astype(np.float32), 21)
