"""Box IoU, GIoU, box coding and NMS against NumPy loops and torchvision.ops."""

import jax
import numpy as np
import pytest

from cnnjax import ops
from cnnjax.errors import UsageError


def _random_boxes(rng, n, size=20.0):
  """Random boxes incl. degenerate (zero width/height), identical and out-of-image ones."""
  xy = rng.uniform(-5, size, (n, 2))
  wh = rng.uniform(0, size / 2, (n, 2))
  boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
  boxes[0, 2] = boxes[0, 0]  # zero width
  boxes[1, 3] = boxes[1, 1]  # zero height
  boxes[2] = boxes[3]  # identical pair
  boxes[4] = [size + 5, size + 5, size + 9, size + 8]  # outside the image
  return boxes


def _iou_loop(a, b, dtype=np.float64):
  """IoUs computed in `dtype`, in torchvision's order of operations."""
  out = np.zeros((len(a), len(b)), np.float64)
  for i, p in enumerate(np.asarray(a, dtype)):
    for j, q in enumerate(np.asarray(b, dtype)):
      iw = max(min(p[2], q[2]) - max(p[0], q[0]), 0)
      ih = max(min(p[3], q[3]) - max(p[1], q[1]), 0)
      inter = iw * ih
      union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter
      out[i, j] = inter / union if union > 0 else 0.0
  return out


def _nms_loop(boxes, scores, threshold):
  """torchvision's NMS: IoU in float32 (the boxes' dtype) compared with a float64 threshold."""
  order = sorted(range(len(boxes)), key=lambda i: (-scores[i], i))
  keep, removed = [], set()
  iou = _iou_loop(boxes, boxes, np.float32)
  for i in order:
    if i in removed:
      continue
    keep.append(i)
    removed.update(j for j in order if iou[i, j] > threshold)
  return keep


def _whole_pixel_boxes(rng, n):
  """Small integer boxes: many IoUs are exact fractions such as 6/20, equal to a threshold."""
  xy = rng.integers(0, 8, (n, 2))
  return np.concatenate([xy, xy + rng.integers(1, 6, (n, 2))], axis=1).astype(np.float32)


def test_box_iou_matches_loop_and_torchvision():
  rng = np.random.default_rng(0)
  a, b = _random_boxes(rng, 12), _random_boxes(rng, 9)
  ours = np.asarray(ops.box_iou(a, b))
  np.testing.assert_allclose(ours, _iou_loop(a, b), atol=1e-6)
  torchvision = pytest.importorskip("torchvision")
  import torch

  theirs = torchvision.ops.box_iou(torch.tensor(a), torch.tensor(b)).numpy()
  # torchvision divides 0 by 0 for pairs of empty boxes; this library returns 0 there.
  np.testing.assert_allclose(ours, np.nan_to_num(theirs), atol=1e-5)


def test_identical_zero_area_boxes_give_zero_not_nan():
  boxes = np.array([[3, 3, 3, 3], [3, 3, 3, 3]], np.float32)
  assert np.array_equal(np.asarray(ops.box_iou(boxes, boxes)), np.zeros((2, 2)))
  assert np.isfinite(np.asarray(ops.generalized_box_iou(boxes, boxes))).all()


def test_generalized_iou_matches_torchvision():
  rng = np.random.default_rng(1)
  a, b = _random_boxes(rng, 10)[5:], _random_boxes(rng, 8)[5:]
  torchvision = pytest.importorskip("torchvision")
  import torch

  theirs = torchvision.ops.generalized_box_iou(torch.tensor(a), torch.tensor(b)).numpy()
  np.testing.assert_allclose(np.asarray(ops.generalized_box_iou(a, b)), theirs, atol=1e-5)


def test_encode_decode_round_trip_and_torchvision_coder():
  rng = np.random.default_rng(2)
  boxes, refs = _random_boxes(rng, 16)[5:] + [0, 0, 1, 1], _random_boxes(rng, 16)[5:] + [0, 0, 1, 1]
  deltas = ops.encode_boxes(boxes, refs)
  np.testing.assert_allclose(np.asarray(ops.decode_boxes(deltas, refs)), boxes, atol=1e-4)
  pytest.importorskip("torchvision")
  import torch
  from torchvision.models.detection import _utils

  coder = _utils.BoxCoder(ops.FAST_RCNN_WEIGHTS)
  theirs = coder.encode_single(torch.tensor(boxes), torch.tensor(refs)).numpy()
  np.testing.assert_allclose(np.asarray(deltas), theirs, rtol=1e-5, atol=1e-5)


def test_encode_of_zero_size_boxes_is_finite():
  boxes = np.array([[1, 1, 1, 1]], np.float32)
  assert np.isfinite(np.asarray(ops.encode_boxes(boxes, boxes))).all()


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.7])
def test_nms_matches_loop_and_torchvision(threshold):
  rng = np.random.default_rng(3)
  boxes = _random_boxes(rng, 40)
  scores = rng.permutation(40).astype(np.float32)
  indices, valid = jax.jit(ops.nms, static_argnums=(2, 3))(boxes, scores, threshold, 50)
  kept = np.asarray(indices)[np.asarray(valid)].tolist()
  assert kept == _nms_loop(boxes, scores, threshold)
  assert not np.asarray(valid)[len(kept) :].any()
  torchvision = pytest.importorskip("torchvision")
  import torch

  theirs = torchvision.ops.nms(torch.tensor(boxes), torch.tensor(scores), threshold).tolist()
  assert kept == theirs


def test_nms_removes_a_box_whose_iou_equals_the_threshold():
  # IoU = 6 / 20 = 0.3: float32(6 / 20) is above the double 0.3, so torchvision removes it.
  boxes = np.array([[0, 0, 4, 5], [0, 0, 2, 3]], np.float32)
  indices, valid = ops.nms(boxes, np.array([0.9, 0.8], np.float32), 0.3, 2)
  assert np.asarray(indices)[np.asarray(valid)].tolist() == [0] == _nms_loop(boxes, [0.9, 0.8], 0.3)


@pytest.mark.parametrize("threshold", [0.2, 0.3, 0.5, 0.6])
def test_nms_on_whole_pixel_boxes_with_tied_scores(threshold):
  rng = np.random.default_rng(5)
  batches = [
    (
      _whole_pixel_boxes(rng, 24),
      rng.integers(0, 4, 24).astype(np.float32),
      rng.integers(0, 3, 24).astype(np.int32),
    )
    for _ in range(25)
  ]
  nms = jax.jit(ops.nms, static_argnums=(2, 3))
  batched = jax.jit(ops.batched_nms, static_argnums=(3, 4))
  ours, ours_batched, expected, expected_batched = [], [], [], []
  for boxes, scores, classes in batches:
    indices, valid = nms(boxes, scores, threshold, 24)
    ours.append(np.asarray(indices)[np.asarray(valid)].tolist())
    expected.append(_nms_loop(boxes, scores, threshold))
    indices, valid = batched(boxes, scores, classes, threshold, 24)
    ours_batched.append(np.asarray(indices)[np.asarray(valid)].tolist())
    per_class = []
    for c in range(3):
      members = np.flatnonzero(classes == c)
      per_class += [members[i] for i in _nms_loop(boxes[members], scores[members], threshold)]
    # Ties keep the lower index first, as the stable score sort of the loop does.
    expected_batched.append(sorted(per_class, key=lambda i: (-scores[i], i)))
  assert ours == expected and ours_batched == expected_batched
  torchvision = pytest.importorskip("torchvision")
  import torch

  assert ours == [
    torchvision.ops.nms(torch.tensor(b), torch.tensor(s), threshold).tolist() for b, s, _ in batches
  ]
  assert ours_batched == [
    torchvision.ops.batched_nms(
      torch.tensor(b), torch.tensor(s), torch.tensor(c), threshold
    ).tolist()
    for b, s, c in batches
  ]


def test_nms_truncates_to_max_output_and_handles_no_boxes():
  boxes = np.array([[0, 0, 1, 1], [5, 5, 6, 6], [9, 9, 10, 10]], np.float32)
  indices, valid = ops.nms(boxes, np.array([0.1, 0.9, 0.5], np.float32), 0.5, 2)
  assert np.asarray(indices).tolist() == [1, 2] and np.asarray(valid).all()
  indices, valid = ops.nms(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), 0.5, 3)
  assert indices.shape == (3,) and not np.asarray(valid).any()


def test_batched_nms_matches_torchvision():
  rng = np.random.default_rng(4)
  boxes = _random_boxes(rng, 30)
  scores = rng.permutation(30).astype(np.float32)
  classes = rng.integers(0, 3, 30).astype(np.int32)
  indices, valid = ops.batched_nms(boxes, scores, classes, 0.4, 30)
  kept = np.asarray(indices)[np.asarray(valid)].tolist()
  expected = []
  for c in range(3):
    members = np.flatnonzero(classes == c)
    expected += [members[i] for i in _nms_loop(boxes[members], scores[members], 0.4)]
  assert kept == sorted(expected, key=lambda i: -scores[i])
  torchvision = pytest.importorskip("torchvision")
  import torch

  theirs = torchvision.ops.batched_nms(
    torch.tensor(boxes), torch.tensor(scores), torch.tensor(classes), 0.4
  ).tolist()
  assert kept == theirs


def test_malformed_boxes_raise_when_concrete_and_give_zero_iou_under_jit():
  bad = np.array([[5, 0, 1, 4]], np.float32)
  good = np.array([[0, 0, 4, 4]], np.float32)
  with pytest.raises(UsageError, match="x2 < x1"):
    ops.box_iou(bad, good)
  with pytest.raises(UsageError, match="x2 < x1"):
    ops.nms(bad, np.ones(1, np.float32), 0.5, 1)
  assert float(jax.jit(ops.box_iou)(bad, good)[0, 0]) == 0.0


@pytest.mark.parametrize("side", [100.0, 181.0, 256.0, 1000.0])
def test_float16_boxes_compute_iou_in_float32(side):
  # float16 areas overflow at 65504: a box's union with itself is Inf from a 181-pixel side.
  boxes = np.array([[0, 0, side, side], [side / 2, 0, side * 1.5, side]], np.float16)
  iou = ops.box_iou(boxes, boxes)
  assert iou.dtype == np.float16
  np.testing.assert_allclose(np.asarray(iou, np.float32), [[1, 1 / 3], [1 / 3, 1]], rtol=1e-3)
  np.testing.assert_allclose(
    np.asarray(ops.generalized_box_iou(boxes, boxes), np.float32),
    [[1, 1 / 3], [1 / 3, 1]],
    rtol=1e-3,
  )
  indices, valid = ops.nms(
    np.concatenate([boxes, boxes]), np.array([4, 3, 2, 1], np.float16), 0.5, 4
  )
  assert np.asarray(indices)[np.asarray(valid)].tolist() == [0, 1]
  indices, valid = ops.batched_nms(
    np.concatenate([boxes, boxes]), np.ones(4, np.float16), np.array([0, 1, 0, 1]), 0.9, 4
  )
  assert sorted(np.asarray(indices)[np.asarray(valid)].tolist()) == [0, 1]


def test_float16_iou_matches_float32_iou_of_the_same_boxes():
  rng = np.random.default_rng(6)
  boxes = _random_boxes(rng, 20, size=600.0).astype(np.float16)
  ours = np.asarray(ops.box_iou(boxes, boxes), np.float32)
  np.testing.assert_allclose(ours, _iou_loop(boxes, boxes, np.float32), atol=1e-3)


@pytest.mark.parametrize(
  "call, message",
  [
    (
      lambda: ops.nms(np.zeros((3, 4), np.float32), np.zeros(2, np.float32), 0.5, 3),
      r"scores must be \[N\] = \[3\]",
    ),
    (
      lambda: ops.nms(np.zeros((3, 4), np.float32), np.zeros(3, np.float32), 0.5, -1),
      "max_output must be an int >= 0",
    ),
    (
      lambda: ops.nms(np.zeros((3, 4), np.float32), np.zeros(3, np.float32), 0.5, 2.0),
      "max_output must be an int >= 0",
    ),
    (
      lambda: ops.nms(np.array([0, 0, 1, 1], np.float32), np.zeros(4, np.float32), 0.5, 1),
      r"boxes must have shape \[N, 4\]",
    ),
    (
      lambda: ops.nms(np.zeros((3, 4), np.float32), np.zeros(3, np.float32), float("nan"), 3),
      "iou_threshold is NaN",
    ),
    (
      lambda: ops.batched_nms(
        np.zeros((3, 4), np.float32), np.zeros(3, np.float32), np.zeros(4, np.int32), 0.5, 3
      ),
      r"classes must be \[N\] = \[3\]",
    ),
    (
      lambda: ops.box_iou(np.array([0, 0, 1, 1], np.float32), np.zeros((2, 4), np.float32)),
      r"boxes1 must have shape \[N, 4\]",
    ),
    (
      lambda: jax.jit(ops.nms, static_argnums=(2, 3))(
        np.zeros((3, 4), np.float32), np.zeros(4, np.float32), 0.5, 3
      ),
      r"scores must be \[N\] = \[3\]",
    ),
  ],
)
def test_bad_nms_and_iou_arguments_raise_usage_errors(call, message):
  with pytest.raises(UsageError, match=message):
    call()
