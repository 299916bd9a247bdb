"""Segmentation and detection losses against NumPy loops; empty cases stay finite."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.errors import UsageError
from cnnjax.losses import detection, segmentation


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_pixel_cross_entropy_matches_loop_with_ignore_index():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
  labels = rng.integers(0, 5, (2, 3, 4))
  labels[0, 0, :2] = 255
  total, count = 0.0, 0
  for n, i, j in np.ndindex(labels.shape):
    if labels[n, i, j] != 255:
      total -= math.log(_softmax(logits[n, i, j].astype(np.float64))[labels[n, i, j]])
      count += 1
  ours = segmentation.pixel_cross_entropy(logits, labels, ignore_index=255)
  np.testing.assert_allclose(float(ours), total / count, rtol=1e-5)
  per_pixel = segmentation.pixel_cross_entropy(logits, labels, 255, reduction="none")
  assert per_pixel.shape == labels.shape and float(per_pixel[0, 0, 0]) == 0.0


def test_soft_dice_matches_loop():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
  labels = rng.integers(0, 3, (2, 4, 4))
  probs = _softmax(logits.astype(np.float64))
  expected = []
  for n in range(2):
    dices = []
    for c in range(3):
      p, t = probs[n, ..., c], (labels[n] == c).astype(np.float64)
      dices.append((2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1))
    expected.append(1 - np.mean(dices))
  np.testing.assert_allclose(
    segmentation.soft_dice_loss(logits, labels, reduction="none"), expected, rtol=1e-5
  )


def test_all_ignored_pixels_give_zero_loss_and_gradient():
  logits = jnp.ones((1, 2, 2, 3))
  labels = jnp.full((1, 2, 2), 255)
  for loss in (
    lambda x: segmentation.pixel_cross_entropy(x, labels, 255),
    lambda x: segmentation.soft_dice_loss(x, labels, 255),
  ):
    value, grad = jax.jit(jax.value_and_grad(loss))(logits)
    assert np.isfinite(float(value)) and np.array_equal(np.asarray(grad), np.zeros((1, 2, 2, 3)))


def test_mask_labels_out_of_range():
  logits = jnp.zeros((1, 2, 2, 3))
  labels = np.array([[[0, 1], [2, 7]]])
  with pytest.raises(UsageError, match="mask labels must lie in \\[0, 3\\)"):
    segmentation.pixel_cross_entropy(logits, labels)
  with pytest.raises(UsageError, match="mask labels"):
    segmentation.soft_dice_loss(logits, labels)
  # Traced, the out-of-range pixel is left out like an ignored one.
  traced = jax.jit(segmentation.pixel_cross_entropy)(logits, labels)
  np.testing.assert_allclose(float(traced), math.log(3), rtol=1e-6)


def _yolo_loop(pred, boxes, labels, valid, num_boxes, l_coord=5.0, l_noobj=0.5):
  n, s, _, _ = pred.shape
  total = np.zeros(n)
  for i in range(n):
    owner = {}
    for m in range(len(boxes[i])):
      if not valid[i, m]:
        continue
      x1, y1, x2, y2 = boxes[i, m]
      cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
      cell = (min(int(cy * s), s - 1), min(int(cx * s), s - 1))
      area = (x2 - x1) * (y2 - y1)
      if cell not in owner or area > owner[cell][1]:
        owner[cell] = (m, area)
    for r in range(s):
      for c in range(s):
        out = pred[i, r, c]
        ious = []
        for b in range(num_boxes):
          x, y, sw, sh = out[5 * b : 5 * b + 4]
          px, py, w, h = (c + x) / s, (r + y) / s, sw**2, sh**2
          box = np.array([px - w / 2, py - h / 2, px + w / 2, py + h / 2])
          if (r, c) in owner:
            gt = boxes[i, owner[(r, c)][0]]
            iw = max(min(box[2], gt[2]) - max(box[0], gt[0]), 0)
            ih = max(min(box[3], gt[3]) - max(box[1], gt[1]), 0)
            union = w * h + (gt[2] - gt[0]) * (gt[3] - gt[1]) - iw * ih
            ious.append(iw * ih / union if union > 0 else 0.0)
        resp = int(np.argmax(ious)) if (r, c) in owner else -1
        for b in range(num_boxes):
          conf = out[5 * b + 4]
          if b == resp:
            m = owner[(r, c)][0]
            gt = boxes[i, m]
            tx = (gt[0] + gt[2]) / 2 * s - c
            ty = (gt[1] + gt[3]) / 2 * s - r
            tw, th = math.sqrt(gt[2] - gt[0]), math.sqrt(gt[3] - gt[1])
            x, y, sw, sh = out[5 * b : 5 * b + 4]
            total[i] += l_coord * ((x - tx) ** 2 + (y - ty) ** 2 + (sw - tw) ** 2 + (sh - th) ** 2)
            total[i] += (conf - ious[b]) ** 2
          else:
            total[i] += l_noobj * conf**2
        if (r, c) in owner:
          target = np.eye(pred.shape[-1] - 5 * num_boxes)[labels[i, owner[(r, c)][0]]]
          total[i] += ((out[5 * num_boxes :] - target) ** 2).sum()
  return total


def test_yolo_loss_matches_loop_including_shared_cells_and_empty_images():
  rng = np.random.default_rng(2)
  s, num_boxes, num_classes = 3, 2, 4
  pred = rng.uniform(0, 1, (3, s, s, num_boxes * 5 + num_classes)).astype(np.float32)
  boxes = np.array(
    [
      [[0.1, 0.1, 0.5, 0.4], [0.15, 0.12, 0.3, 0.2], [0.6, 0.5, 0.95, 1.0]],
      [[0.0, 0.0, 1.0, 1.0], [0, 0, 0, 0], [0, 0, 0, 0]],
      [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
    ],
    np.float32,
  )
  labels = np.array([[1, 3, 0], [2, 0, 0], [0, 0, 0]])
  valid = np.array([[True, True, True], [True, False, False], [False, False, False]])

  def per_image(p):
    return detection.yolo_v1_loss(p, boxes, labels, valid, num_boxes, reduction="none")

  ours, grads = jax.jit(lambda p: (per_image(p), jax.grad(lambda q: per_image(q).sum())(p)))(pred)
  np.testing.assert_allclose(ours, _yolo_loop(pred, boxes, labels, valid, num_boxes), rtol=1e-5)
  assert np.isfinite(np.asarray(grads)).all()


def test_yolo_loss_rejects_pixel_coordinates_and_bad_boxes():
  pred = np.zeros((1, 2, 2, 11), np.float32)
  labels, valid = np.zeros((1, 1), np.int32), np.ones((1, 1), bool)
  with pytest.raises(UsageError, match="normalised"):
    detection.yolo_v1_loss(pred, np.array([[[0, 0, 30, 30]]], np.float32), labels, valid)
  with pytest.raises(UsageError, match="x2 < x1"):
    detection.yolo_v1_loss(pred, np.array([[[0.5, 0, 0.2, 0.3]]], np.float32), labels, valid)
  with pytest.raises(UsageError, match="box labels"):
    detection.yolo_v1_loss(pred, np.array([[[0, 0, 0.2, 0.3]]], np.float32), labels + 1, valid)


def test_fast_rcnn_loss_matches_loop():
  rng = np.random.default_rng(3)
  num_rois, num_outputs = 6, 4
  logits = rng.normal(size=(num_rois, num_outputs)).astype(np.float32)
  deltas = rng.normal(size=(num_rois, num_outputs * 4)).astype(np.float32)
  labels = np.array([0, 1, 3, 0, 2, 1])
  targets = rng.normal(size=(num_rois, 4)).astype(np.float32)
  weights = np.array([1, 1, 1, 1, 1, 0], np.float32)
  total = 0.0
  for r in range(num_rois):
    if not weights[r]:
      continue
    total -= math.log(_softmax(logits[r].astype(np.float64))[labels[r]])
    if labels[r] > 0:
      for d, t in zip(deltas[r, 4 * labels[r] : 4 * labels[r] + 4], targets[r]):
        x = abs(d - t)
        total += 0.5 * x * x if x < 1 else x - 0.5
  loss, metrics = detection.fast_rcnn_loss(
    logits, deltas, labels, targets, weights, return_metrics=True
  )
  np.testing.assert_allclose(float(loss), total / 5, rtol=1e-5)
  assert 0 <= float(metrics["accuracy"]) <= 1


def test_fast_rcnn_loss_without_foreground_or_rois_is_finite():
  logits = jnp.zeros((3, 3))
  deltas = jnp.zeros((3, 3, 4))
  loss, metrics = detection.fast_rcnn_loss(
    logits, deltas, jnp.zeros(3, jnp.int32), jnp.zeros((3, 4)), return_metrics=True
  )
  assert float(metrics["box_loss"]) == 0.0 and np.isfinite(float(loss))
  loss = detection.fast_rcnn_loss(
    logits, deltas, jnp.zeros(3, jnp.int32), jnp.zeros((3, 4)), weights=jnp.zeros(3)
  )
  assert float(loss) == 0.0
  with pytest.raises(UsageError, match="RoI labels"):
    detection.fast_rcnn_loss(logits, deltas, np.array([0, 1, 3]), jnp.zeros((3, 4)))


def test_yolo_loss_without_ground_truth_slots_equals_all_invalid():
  pred = np.random.default_rng(4).uniform(0, 1, (2, 2, 2, 13)).astype(np.float32)

  def empty(p):
    return detection.yolo_v1_loss(
      p, np.zeros((2, 0, 4), np.float32), np.zeros((2, 0), np.int32), np.zeros((2, 0), bool)
    )

  padded = detection.yolo_v1_loss(
    pred, np.zeros((2, 1, 4), np.float32), np.zeros((2, 1), np.int32), np.zeros((2, 1), bool)
  )
  value, grad = jax.value_and_grad(empty)(pred)
  np.testing.assert_allclose(float(value), float(padded), rtol=1e-6)
  assert np.isfinite(np.asarray(grad)).all()


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_smooth_l1_matches_torch_and_is_l1_at_beta_zero(beta):
  x = np.array([-2.0, -0.5, -0.25, 0.0, 0.25, 0.5, 3.0], np.float32)
  value, grad = jax.value_and_grad(lambda v: detection.smooth_l1(v, beta).sum())(x)
  expected = [abs(v) - 0.5 * beta if abs(v) >= beta else 0.5 * v * v / beta for v in x]
  np.testing.assert_allclose(detection.smooth_l1(x, beta), expected, rtol=1e-6)
  assert np.isfinite(float(value)) and np.isfinite(np.asarray(grad)).all()
  if beta == 0.0:
    np.testing.assert_array_equal(grad, np.sign(x))
  torch = pytest.importorskip("torch")
  theirs = torch.nn.functional.smooth_l1_loss(
    torch.tensor(x), torch.zeros(7), reduction="none", beta=beta
  ).numpy()
  np.testing.assert_allclose(detection.smooth_l1(x, beta), theirs, rtol=1e-6)


def test_smooth_l1_rejects_negative_beta_and_fast_rcnn_loss_takes_beta_zero():
  with pytest.raises(UsageError, match="beta=-1.0 is negative"):
    detection.smooth_l1(jnp.ones(3), -1.0)
  logits, deltas = jnp.zeros((2, 3)), jnp.zeros((2, 3, 4))

  def loss_fn(d):
    return detection.fast_rcnn_loss(logits, d, jnp.array([1, 2]), jnp.zeros((2, 4)), beta=0.0)

  value, grad = jax.value_and_grad(loss_fn)(deltas.at[0, 1, 0].set(0.5))
  np.testing.assert_allclose(float(value), math.log(3) + 0.5 / 2, rtol=1e-6)
  assert np.isfinite(np.asarray(grad)).all()


@pytest.mark.parametrize(
  "loss_fn, what",
  [
    (
      lambda: segmentation.pixel_cross_entropy(
        jnp.zeros((0, 4, 4, 3)), jnp.zeros((0, 4, 4), jnp.int32)
      ),
      "images",
    ),
    (
      lambda: segmentation.soft_dice_loss(jnp.zeros((0, 4, 4, 3)), jnp.zeros((0, 4, 4), jnp.int32)),
      "images",
    ),
    (
      lambda: detection.yolo_v1_loss(
        jnp.zeros((0, 2, 2, 13)),
        jnp.zeros((0, 1, 4)),
        jnp.zeros((0, 1), jnp.int32),
        jnp.zeros((0, 1), bool),
      ),
      "images",
    ),
    (
      lambda: detection.fast_rcnn_loss(
        jnp.zeros((0, 3)), jnp.zeros((0, 3, 4)), jnp.zeros(0, jnp.int32), jnp.zeros((0, 4))
      ),
      "RoIs",
    ),
  ],
)
def test_empty_batches_raise_instead_of_nan(loss_fn, what):
  with pytest.raises(UsageError, match=f"the batch is empty \\(0 {what}\\)"):
    loss_fn()


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_beta_and_smooth_raise(value):
  with pytest.raises(UsageError, match="beta=.* is not a finite"):
    detection.smooth_l1(jnp.ones(3), value)
  with pytest.raises(UsageError, match="smooth=.* is not a finite"):
    segmentation.soft_dice_loss(
      jnp.zeros((1, 2, 2, 3)), jnp.zeros((1, 2, 2), jnp.int32), smooth=value
    )
  with pytest.raises(UsageError, match="smooth=0.0 is too small"):
    segmentation.soft_dice_loss(
      jnp.zeros((1, 2, 2, 3)), jnp.zeros((1, 2, 2), jnp.int32), smooth=0.0
    )
