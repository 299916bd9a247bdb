"""Fast R-CNN (Girshick, 2015) and R-CNN (Girshick et al., 2014) over region proposals.

Both score a fixed number R of proposals per image (padded, with a validity mask) and
output K + 1 class logits (0 = background) and per-class box deltas (`encode_boxes` with
Fast R-CNN's weights) for every proposal:

- FastRCNN runs the backbone once per image, pools each proposal from the shared feature
  map (`roi_pool` or `roi_align`) and classifies it with two fully connected layers.
- RCNN warps every proposal's crop of the image (with `context` pixels of padding, as the
  paper's 16 at 227x227) to a fixed size and runs a whole CNN on each crop: the historical
  baseline whose per-proposal cost Fast R-CNN removes. It trains its classifier with softmax
  (the paper fine-tunes with softmax, then fits SVMs; the SVM stage is left out).

Call: `model.apply(variables, images [N, H, W, C], proposals [N, R, 4], train=...)` with
proposals in pixel xyxy; returns (class_logits [N, R, K + 1], box_deltas [N, R, K + 1, 4]).
`sample_rois` draws the training RoIs; `detect` turns outputs into detections.
"""

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax.errors import UsageError
from cnnjax.models import backbones
from cnnjax.models import registry
from cnnjax.ops import boxes as box_ops
from cnnjax.ops import roi as roi_ops

Dtype = Any


class DetectionHead(nn.Module):
  """Two fully connected layers, then class logits [R, K + 1] and box deltas [R, K + 1, 4]."""

  num_classes: int
  hidden: int
  dropout_rate: float
  dtype: Dtype

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> tuple[jnp.ndarray, jnp.ndarray]:
    """x: [R, D] -> ([R, K + 1], [R, K + 1, 4])."""
    for _ in range(2):
      x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype)(x))
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    outputs = self.num_classes + 1
    logits = nn.Dense(
      outputs, kernel_init=nn.initializers.normal(0.01), dtype=self.dtype, name="cls_score"
    )(x)
    deltas = nn.Dense(
      outputs * 4, kernel_init=nn.initializers.normal(0.001), dtype=self.dtype, name="bbox_pred"
    )(x)
    return (logits.astype(jnp.float32), deltas.reshape(x.shape[0], outputs, 4).astype(jnp.float32))


def _check_proposals(images: jnp.ndarray, proposals: jnp.ndarray) -> None:
  if proposals.ndim != 3 or proposals.shape[0] != images.shape[0] or proposals.shape[2] != 4:
    raise UsageError(
      f"proposals must be [N, R, 4] = [{images.shape[0]}, R, 4] pixel xyxy, got "
      f"{tuple(proposals.shape)}; pad each image's proposals to the same R."
    )


def _feature_scale(feature_size: int, image_size: int) -> float:
  """The backbone's scale along one axis, feature_size / image_size rounded to a power of two.

  Backbone strides are powers of two, but a map's side is rounded from image / stride (4
  cells for 100 pixels at stride 32), so the plain ratio would misplace RoIs; torchvision's
  MultiScaleRoIAlign infers its scales the same way.
  """
  return 2.0 ** round(math.log2(feature_size / image_size))


class FastRCNN(nn.Module):
  """Fast R-CNN: shared backbone map, RoI pooling, fully connected heads.

  Attributes:
    num_classes: K object classes (the background class is added).
    backbone: 'conv' (built-in) or a zoo model name; its deepest feature map
      (`cnnjax.models.backbones.feature_map`) is pooled per RoI.
    backbone_widths, backbone_kwargs: as in `cnnjax.models.yolo.YOLOv1`.
    pool: 'roi_pool' (the paper) or 'roi_align'.
    pool_size: RoI grid side (7 for VGG16 in the paper).
    hidden: width of the two fully connected layers (4096 in the paper).
    dropout_rate: dropout after each of them.
  """

  num_classes: int = 20
  backbone: str = "resnet18"
  backbone_widths: Sequence[int] = (32, 64, 128, 256)
  backbone_kwargs: dict | None = None
  pool: str = "roi_pool"
  pool_size: int = 7
  hidden: int = 1024
  dropout_rate: float = 0.5
  dtype: Dtype = jnp.float32
  axis_name: str | None = None

  @nn.compact
  def __call__(
    self, images: jnp.ndarray, proposals: jnp.ndarray, train: bool = False
  ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """images [N, H, W, C], proposals [N, R, 4] -> ([N, R, K + 1], [N, R, K + 1, 4])."""
    _check_proposals(images, proposals)
    if self.pool not in ("roi_pool", "roi_align"):
      raise UsageError(f"FastRCNN pool must be 'roi_pool' or 'roi_align', got {self.pool!r}.")
    backbone = backbones.make_backbone(
      self.backbone, self.backbone_widths, self.backbone_kwargs, self.dtype, self.axis_name
    )
    features = backbones.feature_map(backbone, images, train)
    n, num_rois, _ = proposals.shape
    # The RoI ops take one scale; scaling the boxes per axis by powers of two first is exact
    # and also right when the two axes' strides differ.
    scale_x = _feature_scale(features.shape[2], images.shape[2])
    scale_y = _feature_scale(features.shape[1], images.shape[1])
    flat_boxes = proposals.reshape(n * num_rois, 4) * jnp.array(
      [scale_x, scale_y] * 2, proposals.dtype
    )
    image_index = jnp.repeat(jnp.arange(n, dtype=jnp.int32), num_rois)
    if self.pool == "roi_pool":
      pooled = roi_ops.roi_pool(features, flat_boxes, image_index, self.pool_size)
    else:
      pooled = roi_ops.roi_align(
        features, flat_boxes, image_index, self.pool_size, sampling_ratio=2
      )
    head = DetectionHead(self.num_classes, self.hidden, self.dropout_rate, self.dtype)
    logits, deltas = head(pooled.reshape(n * num_rois, math.prod(pooled.shape[1:])), train)
    outputs = self.num_classes + 1
    return logits.reshape(n, num_rois, outputs), deltas.reshape(n, num_rois, outputs, 4)


def warp_crops(
  images: jnp.ndarray, proposals: jnp.ndarray, crop_size: int, context: float
) -> jnp.ndarray:
  """R-CNN's warped regions: each box grown by `context` crop pixels, resized bilinearly.

  Args:
    images: [N, H, W, C]; proposals: [N, R, 4] pixel xyxy.

  Returns:
    [N * R, crop_size, crop_size, C]; parts of a grown box outside the image are 0.
  """
  n, num_rois, _ = proposals.shape
  # The paper pads so that `context` pixels of the warped crop show surrounding image.
  width = proposals[..., 2] - proposals[..., 0]
  height = proposals[..., 3] - proposals[..., 1]
  inner = crop_size - 2 * context
  pad_x = width * context / inner
  pad_y = height * context / inner
  # roi_align clamps boxes to the map, so the zeros beyond the image are made explicit:
  # a margin wide enough for any grown box of a proposal inside the image.
  margin = math.ceil(max(images.shape[1:3]) * context / inner) + 1
  padded = jnp.pad(images, ((0, 0), (margin, margin), (margin, margin), (0, 0)))
  grown = (
    jnp.stack(
      [
        proposals[..., 0] - pad_x,
        proposals[..., 1] - pad_y,
        proposals[..., 2] + pad_x,
        proposals[..., 3] + pad_y,
      ],
      axis=-1,
    )
    + margin
  )
  image_index = jnp.repeat(jnp.arange(n, dtype=jnp.int32), num_rois)
  # roi_align with one sample per output pixel and aligned=True is a bilinear resize of
  # the box.
  return roi_ops.roi_align(
    padded, grown.reshape(-1, 4), image_index, crop_size, sampling_ratio=1, aligned=True
  )


class RCNN(nn.Module):
  """R-CNN: a CNN from the zoo on every warped proposal, then class and box heads.

  Attributes:
    num_classes: K object classes (the background class is added).
    backbone: zoo model name (its pooled features are used) or 'conv'.
    backbone_widths, backbone_kwargs: as in `FastRCNN`.
    crop_size: side of the warped crops (227 in the paper).
    context: pixels of context around each box in the warped crop (16 in the paper).
    hidden, dropout_rate: the fully connected head on the CNN's features.
  """

  num_classes: int = 20
  backbone: str = "alexnet"
  backbone_widths: Sequence[int] = (32, 64, 128, 256)
  backbone_kwargs: dict | None = None
  crop_size: int = 227
  context: float = 16.0
  hidden: int = 1024
  dropout_rate: float = 0.5
  dtype: Dtype = jnp.float32
  axis_name: str | None = None

  @nn.compact
  def __call__(
    self, images: jnp.ndarray, proposals: jnp.ndarray, train: bool = False
  ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """images [N, H, W, C], proposals [N, R, 4] -> ([N, R, K + 1], [N, R, K + 1, 4])."""
    _check_proposals(images, proposals)
    if not 0 <= 2 * self.context < self.crop_size:
      raise UsageError(f"R-CNN context must be in [0, crop_size / 2), got {self.context}.")
    n, num_rois, _ = proposals.shape
    outputs = self.num_classes + 1
    if num_rois == 0 and not self.is_initializing():
      # Nothing to classify; the CNN's BatchNorm would average an empty batch into NaN.
      return jnp.zeros((n, 0, outputs)), jnp.zeros((n, 0, outputs, 4))
    crops = warp_crops(images, proposals, self.crop_size, self.context).astype(self.dtype)
    backbone = backbones.make_backbone(
      self.backbone,
      self.backbone_widths,
      self.backbone_kwargs,
      self.dtype,
      self.axis_name,
      feature_map=False,
    )
    features = backbone(crops, train=train)
    if self.backbone == "conv":
      features = jnp.mean(features, axis=(1, 2))
    head = DetectionHead(self.num_classes, self.hidden, self.dropout_rate, self.dtype)
    logits, deltas = head(features.reshape(n * num_rois, math.prod(features.shape[1:])), train)
    return logits.reshape(n, num_rois, outputs), deltas.reshape(n, num_rois, outputs, 4)


def sample_rois(
  key: jax.Array,
  proposals: jnp.ndarray,
  proposal_valid: jnp.ndarray,
  gt_boxes: jnp.ndarray,
  gt_labels: jnp.ndarray,
  gt_valid: jnp.ndarray,
  num_samples: int,
  foreground_fraction: float = 0.25,
  foreground_iou: float = 0.5,
  background_iou: tuple[float, float] = (0.1, 0.5),
  box_weights: Sequence[float] = box_ops.FAST_RCNN_WEIGHTS,
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """Fast R-CNN's RoI sampling for one image, with static shapes.

  The ground-truth boxes join the proposals (as in torchvision). RoIs with IoU >=
  `foreground_iou` to some object are foreground and take its class; those with IoU in
  [background_iou[0], background_iou[1]) are background. Up to `foreground_fraction` of the
  samples are foreground, drawn at random; background fills the rest; slots left over (too
  few candidates) are padding with weight 0. Invalid ground truth overlaps nothing, so an
  image without objects gives only background RoIs.

  Args:
    key: PRNG key.
    proposals: [P, 4] pixel xyxy; proposal_valid: [P] bool.
    gt_boxes: [M, 4]; gt_labels: [M] int in [0, K); gt_valid: [M] bool. M may be 0.
    num_samples: S, the static number of sampled RoIs, at most P + M (else UsageError).

  Returns:
    rois [S, 4], labels [S] int32 (0 background, 1 + class otherwise), regression targets
    [S, 4] (zeros for background), weights [S] float32 (1 for real samples).
  """
  if num_samples > proposals.shape[0] + gt_boxes.shape[0]:
    raise UsageError(
      f"sample_rois: num_samples={num_samples} is more than the "
      f"{proposals.shape[0]} proposals plus {gt_boxes.shape[0]} ground-truth "
      "slots; pad the proposals (marked invalid) or sample fewer RoIs."
    )
  if gt_boxes.shape[0] == 0:
    # No ground-truth slots: one invalid slot gives the matching arrays something to index.
    gt_boxes = jnp.zeros((1, 4), proposals.dtype)
    gt_labels = jnp.zeros((1,), jnp.int32)
    gt_valid = jnp.zeros((1,), bool)
  candidates = jnp.concatenate([proposals, gt_boxes], axis=0)
  candidate_valid = jnp.concatenate([proposal_valid, gt_valid], axis=0)
  iou = box_ops.box_iou(candidates, gt_boxes)
  # Valid candidates have IoU 0 with invalid ground truth, so they can still be background;
  # invalid candidates get -1, below every IoU range, so they are never sampled.
  iou = jnp.where(gt_valid[None, :], iou, 0.0)
  iou = jnp.where(candidate_valid[:, None], iou, -1.0)
  best_iou = jnp.max(iou, axis=1)
  matched = jnp.argmax(iou, axis=1)
  foreground = best_iou >= foreground_iou
  background = (best_iou >= background_iou[0]) & (best_iou < background_iou[1])
  noise = jax.random.uniform(key, best_iou.shape)
  max_foreground = int(round(num_samples * foreground_fraction))

  def rank(mask):
    """0-based position of each masked candidate in a random order (others: large)."""
    order = jnp.argsort(jnp.where(mask, noise, 2.0))
    ranks = jnp.empty_like(order).at[order].set(jnp.arange(order.shape[0]))
    return jnp.where(mask, ranks, order.shape[0])

  take_foreground = rank(foreground) < max_foreground
  num_background = num_samples - jnp.sum(take_foreground)
  take_background = rank(background) < num_background
  selected = take_foreground | take_background
  # Foreground first, then background, then padding.
  priority = jnp.where(take_foreground, 3.0, jnp.where(take_background, 2.0, 0.0)) + noise
  _, index = jax.lax.top_k(priority, num_samples)
  rois = candidates[index]
  is_foreground = take_foreground[index]
  labels = jnp.where(is_foreground, gt_labels[matched[index]] + 1, 0).astype(jnp.int32)
  targets = box_ops.encode_boxes(gt_boxes[matched[index]], rois, box_weights)
  targets = jnp.where(is_foreground[:, None], targets, 0.0)
  return rois, labels, targets, selected[index].astype(jnp.float32)


def detect(
  class_logits: jnp.ndarray,
  box_deltas: jnp.ndarray,
  proposals: jnp.ndarray,
  proposal_valid: jnp.ndarray,
  image_size: tuple[int, int],
  score_threshold: float = 0.05,
  iou_threshold: float = 0.3,
  max_detections: int = 100,
  box_weights: Sequence[float] = box_ops.FAST_RCNN_WEIGHTS,
) -> box_ops.Detections:
  """Per-class boxes and scores of every proposal, then per-class NMS (the paper's test).

  Args:
    class_logits: [N, R, K + 1]; box_deltas: [N, R, K + 1, 4]; proposals: [N, R, 4];
    proposal_valid: [N, R] bool; invalid (padding) proposals are never returned, whatever
      `score_threshold`. R may be 0.
    image_size: (height, width), to clip boxes.

  Returns:
    boxes [N, D, 4], scores [N, D], classes [N, D] int32 (0-based object classes),
    valid [N, D] bool, in descending score order.
  """
  height, width = image_size
  n, num_rois, outputs = class_logits.shape
  probs = jax.nn.softmax(class_logits, axis=-1)[..., 1:]
  refs = jnp.broadcast_to(proposals[:, :, None, :], (n, num_rois, outputs - 1, 4))
  boxes = box_ops.decode_boxes(box_deltas[:, :, 1:], refs, box_weights)
  candidates = num_rois * (outputs - 1)
  boxes = box_ops.clip_boxes(boxes, height, width).reshape(n, candidates, 4)
  scores = probs.reshape(n, candidates)
  classes = jnp.broadcast_to(jnp.arange(outputs - 1), (n, num_rois, outputs - 1))
  valid = jnp.broadcast_to(proposal_valid[..., None], (n, num_rois, outputs - 1))
  return box_ops.select_detections(
    boxes,
    scores,
    classes.reshape(n, candidates),
    score_threshold,
    iou_threshold,
    max_detections,
    valid.reshape(n, candidates),
  )


# Fast R-CNN scales a PASCAL VOC image's shorter side to 600 (500x375 -> 800x600); R-CNN
# crops its proposals from the image as it is.
registry.register("fast_rcnn", FastRCNN, input_shape=(600, 800, 3))
registry.register("rcnn", RCNN, input_shape=(375, 500, 3))
