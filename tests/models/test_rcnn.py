"""Fast R-CNN and R-CNN edge cases: RoI scale, empty proposals and ground truth, padding."""

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax import models
from cnnjax.errors import UsageError
from cnnjax.models import rcnn
from cnnjax.ops import roi as roi_ops

PROPOSALS = jnp.array(
  [
    [0, 0, 10, 10],
    [1, 1, 10, 10],
    [20, 20, 30, 30],
    [15, 0, 31, 12],
    [0, 20, 12, 31],
    [2, 2, 9, 9],
  ],
  jnp.float32,
)


def test_fast_rcnn_maps_rois_with_the_power_of_two_stride(monkeypatch):
  # ResNet-18 has stride 32, but 100 x 64 images give a 4 x 2 map: 4 / 100 is not 1 / 32.
  scaled = []
  real_roi_pool = roi_ops.roi_pool

  def spy(*args, **kwargs):
    bound = inspect.signature(real_roi_pool).bind(*args, **kwargs)
    bound.apply_defaults()
    scaled.append(np.asarray(bound.arguments["boxes"]) * bound.arguments["spatial_scale"])
    return real_roi_pool(*args, **kwargs)

  monkeypatch.setattr(roi_ops, "roi_pool", spy)
  model = models.create(
    "fast_rcnn",
    backbone="resnet18",
    num_classes=2,
    hidden=8,
    pool_size=2,
    backbone_kwargs={"width": 8},
  )
  proposals = jnp.array([[[0, 0, 64, 100], [32, 16, 48, 96]]], jnp.float32)
  model.init(jax.random.key(0), jnp.zeros((1, 100, 64, 3)), proposals)
  np.testing.assert_array_equal(scaled[0], proposals[0] / 32)


def _empty_outputs(model, train):
  """Outputs for [2, 0, 4] proposals and the variables after the call."""
  images, proposals = jnp.zeros((2, 16, 16, 3)), jnp.zeros((2, 0, 4))
  variables = model.init(jax.random.key(0), images, proposals)
  full = model.init(jax.random.key(0), images, jnp.zeros((2, 3, 4)))
  assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, full)
  if not train:
    return model.apply(variables, images, proposals), variables
  outputs, updates = model.apply(
    variables,
    images,
    proposals,
    train=True,
    mutable=["batch_stats"],
    rngs={"dropout": jax.random.key(1)},
  )
  return outputs, {**variables, **updates}


@pytest.mark.parametrize(
  "name, kwargs",
  [
    ("fast_rcnn", dict(backbone="conv", backbone_widths=(4, 8), pool_size=2)),
    ("rcnn", dict(backbone="conv", backbone_widths=(4,), crop_size=8, context=1)),
  ],
)
@pytest.mark.parametrize("train", [False, True])
def test_region_models_take_empty_proposals(name, kwargs, train):
  model = models.create(name, num_classes=3, hidden=8, **kwargs)
  (logits, deltas), variables = _empty_outputs(model, train)
  assert logits.shape == (2, 0, 4) and deltas.shape == (2, 0, 4, 4)
  # No NaN from averaging an empty batch of crops into the BatchNorm statistics.
  assert all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(variables))
  boxes, scores, classes, valid = rcnn.detect(
    logits, deltas, jnp.zeros((2, 0, 4)), jnp.zeros((2, 0), bool), (16, 16), max_detections=5
  )
  assert boxes.shape == (2, 5, 4) and scores.shape == classes.shape == valid.shape == (2, 5)
  assert not np.asarray(valid).any()


def test_detect_never_returns_invalid_proposals():
  logits = jnp.array([[[0.0, 1.0], [0.0, 5.0], [0.0, 2.0]]])
  proposals = jnp.array([[[0, 0, 4, 4], [10, 10, 14, 14], [20, 20, 24, 24]]], jnp.float32)
  proposal_valid = jnp.array([[True, False, True]])
  boxes, scores, _, valid = rcnn.detect(
    logits,
    jnp.zeros((1, 3, 2, 4)),
    proposals,
    proposal_valid,
    (32, 32),
    score_threshold=0.0,
    max_detections=3,
  )
  assert int(valid.sum()) == 2
  np.testing.assert_allclose(boxes[0][np.asarray(valid[0])], proposals[0, [2, 0]], atol=1e-5)


def _sample(proposal_valid, gt_boxes, gt_labels, gt_valid, num_samples=4):
  sample = functools.partial(rcnn.sample_rois, num_samples=num_samples, background_iou=(0.0, 0.5))
  return sample(jax.random.key(0), PROPOSALS, proposal_valid, gt_boxes, gt_labels, gt_valid)


@pytest.mark.parametrize("num_slots", [0, 2])
def test_sample_rois_without_ground_truth_gives_background(num_slots):
  proposal_valid = jnp.array([True, True, True, False, True, True])
  gt_boxes = jnp.tile(jnp.array([[0, 0, 10, 10]], jnp.float32), (num_slots, 1))
  rois, labels, targets, weights = _sample(
    proposal_valid, gt_boxes, jnp.zeros(num_slots, jnp.int32), jnp.zeros(num_slots, bool)
  )
  # Four of the five valid proposals, all background; the invalid one is never drawn.
  assert np.asarray(weights).tolist() == [1, 1, 1, 1]
  assert not np.asarray(labels).any() and not np.asarray(targets).any()
  assert not any((np.asarray(roi) == np.asarray(PROPOSALS[3])).all() for roi in rois)


def test_sample_rois_refuses_more_samples_than_candidates():
  with pytest.raises(UsageError, match="num_samples=9 is more than the 6 proposals plus 2"):
    _sample(jnp.ones(6, bool), jnp.zeros((2, 4)), jnp.zeros(2, jnp.int32), jnp.ones(2, bool), 9)
