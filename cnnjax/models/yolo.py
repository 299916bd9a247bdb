"""YOLOv1 (Redmon et al., 2016): one network regresses boxes and classes on an S x S grid.

The detector is a backbone feature map, two 3x3 convs and two fully connected layers (as
the paper's last four layers) that output [N, S, S, B * 5 + C]; each cell's channels are
laid out as in `cnnjax.ops.yolo.split_yolo_output` (B boxes of x, y, sqrt w, sqrt h,
confidence, then C class scores). `decode` turns outputs into scored boxes with per-class NMS.

Backbones (`cnnjax.models.backbones`): `backbone="conv"` is a small built-in
conv-BN-ReLU/max-pool stack (for small images); any other name is a zoo model
(`cnnjax.models.create(name, num_classes=None)`) whose deepest named feature map (the last
of `cnnjax.models.feature_names`, the input of its global average pool) is used. That covers
the zoo's ResNets, DenseNets, MobileNets, GoogLeNet and NiN; classifiers that flatten a
fixed-size map into dense layers (AlexNet, VGG) are refused, since their dense layers would
be built and wasted.
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from cnnjax.errors import UsageError
from cnnjax.models import backbones
from cnnjax.models import layers
from cnnjax.models import registry
from cnnjax.ops import boxes as box_ops
from cnnjax.ops.yolo import split_yolo_output

Dtype = Any


class YOLOv1(nn.Module):
  """YOLOv1 detector head on a backbone.

  Attributes:
    num_classes: C.
    grid_size: S; the backbone map is resized to S x S by adaptive average pooling.
    num_boxes: B.
    backbone: 'conv' or a zoo model name.
    backbone_widths: block widths of the 'conv' backbone.
    backbone_kwargs: extra fields for a zoo backbone.
    head_width: channels of the two 3x3 head convs (1024 in the paper).
    hidden: width of the first fully connected layer (4096 in the paper).
    dropout_rate: dropout after it (0.5 in the paper).
  """

  num_classes: int = 20
  grid_size: int = 7
  num_boxes: int = 2
  backbone: str = "resnet18"
  backbone_widths: Sequence[int] = (32, 64, 128, 256)
  backbone_kwargs: dict | None = None
  head_width: int = 1024
  hidden: int = 4096
  dropout_rate: float = 0.5
  dtype: Dtype = jnp.float32
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """x: [N, H, W, C] -> [N, S, S, B * 5 + C]."""
    if self.num_classes is None or self.num_classes < 1:
      raise UsageError("YOLOv1 needs num_classes >= 1.")
    backbone = backbones.make_backbone(
      self.backbone, self.backbone_widths, self.backbone_kwargs, self.dtype, self.axis_name
    )
    features = backbones.feature_map(backbone, x, train)
    if features.shape[1:3] != (self.grid_size, self.grid_size):
      features = layers.AdaptiveAvgPool(self.grid_size)(features)
    leaky = functools.partial(nn.leaky_relu, negative_slope=0.1)
    for _ in range(2):
      features = leaky(nn.Conv(self.head_width, (3, 3), dtype=self.dtype)(features))
    flat = features.reshape(features.shape[0], -1)
    hidden = leaky(nn.Dense(self.hidden, dtype=self.dtype)(flat))
    hidden = nn.Dropout(self.dropout_rate, deterministic=not train)(hidden)
    channels = self.num_boxes * 5 + self.num_classes
    out = nn.Dense(self.grid_size * self.grid_size * channels, dtype=self.dtype)(hidden)
    return out.reshape(x.shape[0], self.grid_size, self.grid_size, channels).astype(jnp.float32)


def decode(
  predictions: jnp.ndarray,
  num_boxes: int,
  image_size: tuple[int, int],
  score_threshold: float = 0.05,
  iou_threshold: float = 0.5,
  max_detections: int = 100,
) -> box_ops.Detections:
  """YOLOv1 outputs -> detections after per-class NMS, with static shapes.

  Each box scores confidence x class score for its best class (the paper's class-specific
  confidence), both clipped to [0, 1] first: the outputs are linear, regressed toward
  targets in [0, 1], and two negative outputs must not multiply into a positive score.
  Boxes below `score_threshold` are dropped, the rest go through NMS per class.

  Args:
    predictions: [N, S, S, B * 5 + C].
    num_boxes: B.
    image_size: (height, width) in pixels, to scale the [0, 1] boxes.
    score_threshold, iou_threshold: as above.
    max_detections: D, the static number of returned detections per image.

  Returns:
    boxes [N, D, 4] xyxy pixels clipped to the image, scores [N, D], classes [N, D] int32,
    valid [N, D] bool; detections are in descending score order.
  """
  height, width = image_size
  boxes, _, confidences, class_scores = split_yolo_output(predictions, num_boxes)
  n = predictions.shape[0]
  boxes = boxes * jnp.array([width, height, width, height], boxes.dtype)
  boxes = box_ops.clip_boxes(boxes, height, width).reshape(n, -1, 4)
  classes = jnp.argmax(class_scores, axis=-1)
  best_class_score = jnp.clip(jnp.max(class_scores, axis=-1), 0.0, 1.0)
  scores = (jnp.clip(confidences, 0.0, 1.0) * best_class_score[..., None]).reshape(n, -1)
  classes = jnp.broadcast_to(classes[..., None], confidences.shape).reshape(n, -1)

  return box_ops.select_detections(
    boxes, scores, classes, score_threshold, iou_threshold, max_detections
  )


registry.register(
  "yolo_v1",
  functools.partial(YOLOv1, grid_size=7, num_boxes=2, num_classes=20),
  input_shape=(448, 448, 3),
)
