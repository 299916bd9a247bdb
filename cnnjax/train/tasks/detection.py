"""Object detection tasks: YOLOv1 ("yolo") and Fast R-CNN / R-CNN over proposals ("region_cnn").

The batch needs 'image' uint8 [B, H, W, C], 'boxes' float32 [B, M, 4] pixel xyxy of the
stored image, 'box_labels' int32 [B, M] in [0, K) and 'box_valid' bool [B, M] (the
`shapes` and `voc` datasets). The eval step gives detections and ground truth in
model-input pixels; the default evaluator, "test" of kind "map", reports VOC mAP@0.5
('map50', all-point AP) and COCO mAP@[.5:.95] ('coco_map').

Config section `detection`:
  random_flip: horizontal flips of images and boxes in training. Boxes follow these flips
    and the resize to `input.size`; the image-only geometry of `config.input` (augment,
    center_crop, resize) is refused.
  score_threshold, nms_iou, max_detections: the test-time filter (per-class NMS).
  yolo: grid and box counts come from the model; lambda_coord, lambda_noobj weight its loss.
  region_cnn:
    num_proposals: R, selective-search proposals scored per test image (padded, masked);
    proposal_scales: Felzenszwalb scales of selective search;
    train_proposals: 'selective_search' (the papers; computed on the host, cached per image,
      so the first epoch pays for it) or 'jitter' (on device: every object's box randomly
      shifted and scaled, plus random boxes; the same IoU spread of foreground and
      background RoIs at no host cost). Evaluation always uses selective search;
    rois_per_image, foreground_fraction, foreground_iou, background_iou_low: RoI sampling.

Selective search runs in `jax.pure_callback` from the compiled step, on the uint8 image at the
model input size.
"""

import functools
import hashlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cnnjax import models
from cnnjax.errors import UsageError
from cnnjax.losses import detection as det_losses
from cnnjax.models import rcnn
from cnnjax.models import yolo
from cnnjax.data.proposals import selective_search
from cnnjax.train import tasks
from cnnjax.train.tasks import inputs

_PROPOSAL_CACHE: dict[tuple, np.ndarray] = {}


def _selective_search_batch(
  images: np.ndarray, num_proposals: int, scales: tuple[float, ...]
) -> np.ndarray:
  """Host side: uint8 images [b, H, W, C] -> float32 [b, R, 5], boxes xyxy then validity."""
  images = np.asarray(images)
  packed = np.zeros((images.shape[0], num_proposals, 5), np.float32)
  for i, image in enumerate(images):
    key = (hashlib.sha1(image.tobytes()).hexdigest(), image.shape, num_proposals, scales)
    if key not in _PROPOSAL_CACHE:
      _PROPOSAL_CACHE[key] = selective_search(image, scales=scales, max_proposals=num_proposals)
    found = _PROPOSAL_CACHE[key]
    packed[i, : len(found), :4] = found
    packed[i, : len(found), 4] = 1.0
  return packed


def selective_search_proposals(
  images: jax.Array, num_proposals: int, scales: tuple[float, ...]
) -> tuple[jax.Array, jax.Array]:
  """Selective search from inside jit: uint8 [b, H, W, C] -> ([b, R, 4], [b, R] bool)."""
  # One result, not two: JAX 0.10's TPU lowering of a multi-result callback inside
  # shard_map or pmap gives every result the first one's sharding and fails on the ranks.
  shape = jax.ShapeDtypeStruct((images.shape[0], num_proposals, 5), jnp.float32)
  packed = jax.pure_callback(
    lambda x: _selective_search_batch(x, num_proposals, tuple(scales)),
    shape,
    images,
    vmap_method="sequential",
  )
  return packed[..., :4], packed[..., 4] > 0.5


def jittered_proposals(
  key: jax.Array, boxes: jax.Array, valid: jax.Array, size: int, per_object: int, num_random: int
) -> tuple[jax.Array, jax.Array]:
  """Training proposals around the objects of one image, on device.

  Args:
    key: PRNG key; boxes: [M, 4] pixel xyxy; valid: [M] bool; size: image side.
    per_object: jittered copies of each object's box (centre shifted by up to 30% of its
      size, sides scaled by up to e^0.5).
    num_random: boxes at random positions with sides of 10-70% of the image.

  Returns:
    proposals [M * per_object + num_random, 4] clipped to the image, and their validity.
  """
  shift_key, scale_key, centre_key, side_key = jax.random.split(key, 4)
  m = boxes.shape[0]
  wh = boxes[:, 2:] - boxes[:, :2]
  centre = (boxes[:, :2] + boxes[:, 2:]) / 2
  shift = jax.random.uniform(shift_key, (m, per_object, 2), minval=-0.3, maxval=0.3)
  scale = jnp.exp(jax.random.uniform(scale_key, (m, per_object, 2), minval=-0.5, maxval=0.5))
  new_centre = centre[:, None] + shift * wh[:, None]
  new_wh = wh[:, None] * scale
  jittered = jnp.concatenate([new_centre - new_wh / 2, new_centre + new_wh / 2], -1)
  random_centre = jax.random.uniform(centre_key, (num_random, 2), maxval=size)
  random_wh = jax.random.uniform(side_key, (num_random, 2), minval=0.1, maxval=0.7) * size
  random_boxes = jnp.concatenate([random_centre - random_wh / 2, random_centre + random_wh / 2], -1)
  proposals = jnp.clip(jnp.concatenate([jittered.reshape(-1, 4), random_boxes]), 0, size)
  positive = (proposals[:, 2] - proposals[:, 0] >= 1) & (proposals[:, 3] - proposals[:, 1] >= 1)
  proposal_valid = jnp.concatenate([jnp.repeat(valid, per_object), jnp.ones(num_random, bool)])
  return proposals, proposal_valid & positive


class _Detection(tasks.Task):
  """What YOLO and the region CNNs share: box inputs, flips and mAP evaluation."""

  produces = frozenset(
    {
      "count",
      "det_boxes",
      "det_scores",
      "det_classes",
      "det_valid",
      "gt_boxes",
      "gt_labels",
      "gt_valid",
    }
  )

  @classmethod
  def config_defaults(cls):
    section = ml_collections.ConfigDict()
    section.random_flip = True
    section.score_threshold = 0.05
    section.nms_iou = 0.5
    section.max_detections = 20
    section.lambda_coord = 5.0
    section.lambda_noobj = 0.5
    section.num_proposals = 64
    section.proposal_scales = (50.0, 100.0, 200.0)
    section.train_proposals = "jitter"
    section.jitter_per_object = 8
    section.jitter_random = 16
    section.rois_per_image = 32
    section.foreground_fraction = 0.25
    section.foreground_iou = 0.5
    section.background_iou_low = 0.0
    return {"detection": section}

  @classmethod
  def choices(cls):
    return {"detection.train_proposals": ("jitter", "selective_search")}

  @classmethod
  def default_evals(cls):
    return {"test": tasks.eval_config("map")}

  def _check_data(self):
    missing = {"boxes", "box_labels", "box_valid"} - set(self.data.features)
    if missing:
      raise UsageError(
        f"dataset {self.config.dataset} has no boxes; use shapes or voc for detection."
      )
    inputs.check_targets_follow(self.config, "boxes")

  def preprocess(self, batch, rng, train):
    size = self.input_shape[0]
    images = inputs.prepare_images(
      batch["image"], rng, train, self.config.input, self.config.dataset, size, self.dtype
    )
    stored = batch["image"].shape[2]
    boxes = batch["boxes"].astype(jnp.float32) * (size / stored)
    raw = batch["image"]
    if train and self.config.detection.random_flip:
      flip = jax.vmap(lambda key: jax.random.bernoulli(key, 0.5))(
        tasks.example_keys(jax.random.fold_in(rng, 1), images.shape[0])
      )
      images = jnp.where(flip[:, None, None, None], images[:, :, ::-1], images)
      raw = jnp.where(flip[:, None, None, None], raw[:, :, ::-1], raw)
      flipped = jnp.stack(
        [size - boxes[..., 2], boxes[..., 1], size - boxes[..., 0], boxes[..., 3]], axis=-1
      )
      boxes = jnp.where(flip[:, None, None], flipped, boxes)
    return {
      **batch,
      "image": images,
      "raw_image": raw,
      "boxes": boxes,
      "box_labels": batch["box_labels"].astype(jnp.int32),
      "box_valid": batch["box_valid"].astype(bool),
    }

  def _outputs(self, detections, batch):
    boxes, scores, classes, valid = detections
    return {
      "det_boxes": boxes,
      "det_scores": scores,
      "det_classes": classes,
      "det_valid": valid,
      "gt_boxes": batch["boxes"],
      "gt_labels": batch["box_labels"],
      "gt_valid": batch["box_valid"],
    }


class YOLO(_Detection):
  """YOLOv1 (`config.model = "yolo_v1"`) trained with the paper's sum-squared loss."""

  produces = _Detection.produces | {"loss"}

  def create_model(self):
    self._check_data()
    model = models.create(self.config.model, **self.backbone_kwargs(self.data.num_classes))
    if not isinstance(model, yolo.YOLOv1):
      raise UsageError(f"task 'yolo' needs model yolo_v1, got {self.config.model!r}.")
    return model

  def _loss(self, outputs, batch, reduction="mean"):
    size = self.input_shape[0]
    return det_losses.yolo_v1_loss(
      outputs,
      batch["boxes"] / size,
      batch["box_labels"],
      batch["box_valid"],
      self.model.num_boxes,
      self.config.detection.lambda_coord,
      self.config.detection.lambda_noobj,
      reduction=reduction,
      return_metrics=True,
    )

  def loss_fn(self, params, batch_stats, batch, rng, train):
    variables = {"params": params, "batch_stats": batch_stats}
    outputs, new_batch_stats = self.apply(variables, batch["image"], train=train, rng=rng)
    loss, metrics = self._loss(outputs, batch)
    return loss, ({"loss": loss, **metrics}, new_batch_stats)

  def eval_step(self, variables, batch):
    outputs = self.model.apply(variables, batch["image"], train=False)
    losses, _ = self._loss(outputs, batch, reduction="none")
    valid = batch["valid"].astype(jnp.float32)
    section = self.config.detection
    size = self.input_shape[0]
    detections = yolo.decode(
      outputs,
      self.model.num_boxes,
      (size, size),
      section.score_threshold,
      section.nms_iou,
      section.max_detections,
    )
    return (
      {"loss": jnp.sum(losses * valid), "count": jnp.sum(valid)},
      self._outputs(detections, batch),
    )


class RegionCNN(_Detection):
  """Fast R-CNN (`fast_rcnn`) or R-CNN (`rcnn`) over region proposals."""

  def create_model(self):
    self._check_data()
    model = models.create(self.config.model, **self.backbone_kwargs(self.data.num_classes))
    if not isinstance(model, (rcnn.FastRCNN, rcnn.RCNN)):
      raise UsageError(
        f"task 'region_cnn' needs model fast_rcnn or rcnn, got {self.config.model!r}."
      )
    return model

  def init_variables(self, rng):
    dummy = jnp.zeros((1, *self.input_shape), self.dtype)
    proposals = jnp.zeros((1, self.config.detection.rois_per_image, 4), jnp.float32)
    variables = self.model.init({"params": rng, "dropout": rng}, dummy, proposals, train=False)
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}

  def _proposals(self, batch, rng, train: bool):
    """Training proposals (`detection.train_proposals`), or selective search to evaluate."""
    section = self.config.detection
    size = self.input_shape[0]
    if train and section.train_proposals == "jitter":
      keys = tasks.example_keys(jax.random.fold_in(rng, 2), batch["image"].shape[0])
      return jax.vmap(jittered_proposals, in_axes=(0, 0, 0, None, None, None))(
        keys,
        batch["boxes"],
        batch["box_valid"],
        size,
        section.jitter_per_object,
        section.jitter_random,
      )
    raw = batch["raw_image"]
    if raw.shape[1:3] != (size, size):
      # Search the image the model sees, so proposals are in its pixels (and cheaper).
      resized = jax.image.resize(
        raw.astype(jnp.float32), (raw.shape[0], size, size, raw.shape[3]), method="bilinear"
      )
      raw = jnp.clip(jnp.round(resized), 0, 255).astype(jnp.uint8)
    return selective_search_proposals(raw, section.num_proposals, tuple(section.proposal_scales))

  def loss_fn(self, params, batch_stats, batch, rng, train):
    section = self.config.detection
    proposals, proposal_valid = self._proposals(batch, rng, train=True)
    keys = tasks.example_keys(jax.random.fold_in(rng, 3), proposals.shape[0])
    sample = functools.partial(
      rcnn.sample_rois,
      num_samples=section.rois_per_image,
      foreground_fraction=section.foreground_fraction,
      foreground_iou=section.foreground_iou,
      background_iou=(section.background_iou_low, section.foreground_iou),
    )
    rois, labels, targets, weights = jax.vmap(sample)(
      keys, proposals, proposal_valid, batch["boxes"], batch["box_labels"], batch["box_valid"]
    )
    variables = {"params": params, "batch_stats": batch_stats}
    (logits, deltas), new_batch_stats = self.apply(
      variables, batch["image"], rois, train=train, rng=rng
    )
    loss, metrics = det_losses.fast_rcnn_loss(
      logits.reshape(-1, logits.shape[-1]),
      deltas.reshape(-1, deltas.shape[-2], 4),
      labels.reshape(-1),
      targets.reshape(-1, 4),
      weights.reshape(-1),
      return_metrics=True,
    )
    return loss, ({"loss": loss, **metrics}, new_batch_stats)

  def eval_step(self, variables, batch):
    section = self.config.detection
    size = self.input_shape[0]
    proposals, proposal_valid = self._proposals(batch, None, train=False)
    logits, deltas = self.model.apply(variables, batch["image"], proposals, train=False)
    detections = rcnn.detect(
      logits,
      deltas,
      proposals,
      proposal_valid,
      (size, size),
      section.score_threshold,
      section.nms_iou,
      section.max_detections,
    )
    valid = batch["valid"].astype(jnp.float32)
    return {"count": jnp.sum(valid)}, self._outputs(detections, batch)


tasks.register("yolo", YOLO)
tasks.register("region_cnn", RegionCNN)
