"""YOLOv1, Fast R-CNN and R-CNN: output shapes, backbones, RoI sampling and decoding."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax import models
from cnnjax.errors import UsageError
from cnnjax.models import rcnn, yolo


def _shape(model, *args):
  variables = jax.eval_shape(model.init, jax.random.key(0), *args)
  return jax.eval_shape(model.apply, variables, *args)


def test_yolo_paper_output_and_zoo_backbones():
  model = models.create("yolo_v1", backbone="resnet18")
  x = jax.ShapeDtypeStruct((1, 448, 448, 3), jnp.float32)
  assert _shape(model, x).shape == (1, 7, 7, 30)
  small = models.create(
    "yolo_v1",
    backbone="conv",
    backbone_widths=(4, 8),
    grid_size=4,
    num_classes=3,
    head_width=8,
    hidden=16,
  )
  assert _shape(small, jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)).shape == (2, 4, 4, 13)
  with pytest.raises(UsageError, match="cannot serve as a detection backbone"):
    _shape(models.create("yolo_v1", backbone="vgg11"), x)


def test_region_models_output_shapes():
  images = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  proposals = jax.ShapeDtypeStruct((2, 5, 4), jnp.float32)
  for model in (
    models.create(
      "fast_rcnn", backbone="conv", backbone_widths=(4, 8), num_classes=3, hidden=16, pool_size=2
    ),
    models.create(
      "fast_rcnn",
      backbone="resnet18",
      num_classes=3,
      hidden=16,
      pool="roi_align",
      backbone_kwargs={"width": 8},
    ),
    models.create(
      "rcnn",
      backbone="conv",
      backbone_widths=(4,),
      num_classes=3,
      hidden=16,
      crop_size=8,
      context=1,
    ),
  ):
    logits, deltas = _shape(model, images, proposals)
    assert logits.shape == (2, 5, 4) and deltas.shape == (2, 5, 4, 4)
  with pytest.raises(UsageError, match="proposals must be"):
    _shape(
      models.create("fast_rcnn", backbone="conv", num_classes=3),
      images,
      jax.ShapeDtypeStruct((2, 5), jnp.float32),
    )


def test_warped_crops_resample_the_box():
  image = jnp.arange(16.0).reshape(1, 4, 4, 1)
  crops = rcnn.warp_crops(image, jnp.array([[[0.0, 0.0, 4.0, 4.0]]]), 4, 0.0)
  np.testing.assert_allclose(crops[0, ..., 0], image[0, ..., 0], atol=1e-6)


def test_warped_crops_show_zeros_for_context_beyond_the_image():
  # An 8x8 box grown by 2 of 12 crop pixels per side reaches 2 pixels past the image.
  image = jnp.ones((1, 8, 8, 1)) + jnp.arange(8.0)[None, :, None, None]
  crops = rcnn.warp_crops(image, jnp.array([[[0.0, 0.0, 8.0, 8.0]]]), 12, 2.0)
  expected = np.zeros((12, 12))
  expected[2:10, 2:10] = np.asarray(image[0, ..., 0])
  np.testing.assert_allclose(crops[0, ..., 0], expected, atol=1e-5)


def test_sample_rois_respects_fractions_and_labels():
  proposals = jnp.array(
    [
      [0, 0, 10, 10],
      [1, 1, 10, 10],
      [0, 0, 9, 11],
      [20, 20, 30, 30],
      [15, 0, 31, 12],
      [0, 20, 12, 31],
    ],
    jnp.float32,
  )
  gt = jnp.array([[0, 0, 10, 10], [0, 0, 0, 0]], jnp.float32)
  sample = functools.partial(rcnn.sample_rois, num_samples=8, background_iou=(0.0, 0.5))
  rois, labels, targets, weights = jax.jit(sample)(
    jax.random.key(0), proposals, jnp.ones(6, bool), gt, jnp.array([2, 0]), jnp.array([True, False])
  )
  labels, weights = np.asarray(labels), np.asarray(weights)
  assert (labels[weights > 0] > 0).sum() == 2  # 25% of 8 foreground
  assert set(labels[labels > 0]) == {3}  # class 2 -> label 3 (0 is background)
  assert (weights > 0).sum() == 2 + 3  # three background proposals, the rest padding
  assert np.asarray(rois).shape == (8, 4)
  assert np.abs(np.asarray(targets)[labels == 0]).sum() == 0


def test_decoders_give_static_valid_detections():
  predictions = jnp.zeros((1, 2, 2, 13)).at[0, 0, 0, :5].set(jnp.array([0.5, 0.5, 0.5, 0.5, 1.0]))
  predictions = predictions.at[0, 0, 0, 10].set(1.0)
  boxes, scores, classes, valid = yolo.decode(predictions, 2, (32, 32), max_detections=3)
  assert boxes.shape == (1, 3, 4) and int(valid.sum()) == 1
  np.testing.assert_allclose(boxes[0, 0], [4, 4, 12, 12], atol=1e-5)
  assert int(classes[0, 0]) == 0 and float(scores[0, 0]) == pytest.approx(1.0)
  logits = jnp.array([[[0.0, 5.0, 0.0], [5.0, 0.0, 0.0]]])
  proposals = jnp.array([[[0, 0, 8, 8], [4, 4, 9, 9]]], jnp.float32)
  out = rcnn.detect(
    logits,
    jnp.zeros((1, 2, 3, 4)),
    proposals,
    jnp.array([[True, True]]),
    (16, 16),
    score_threshold=0.5,
    max_detections=4,
  )
  assert int(out[3].sum()) == 1 and int(out[2][0, 0]) == 0
  np.testing.assert_allclose(out[0][0, 0], [0, 0, 8, 8], atol=1e-5)
