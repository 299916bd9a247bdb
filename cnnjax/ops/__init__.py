"""Array ops for detection: box IoU, box coding, NMS, RoI pool/align; all jit-compatible."""

from cnnjax.ops.boxes import (
  FAST_RCNN_WEIGHTS,
  batched_nms,
  box_area,
  box_iou,
  clip_boxes,
  decode_boxes,
  elementwise_box_iou,
  encode_boxes,
  generalized_box_iou,
  nms,
  select_detections,
)
from cnnjax.ops.roi import roi_align, roi_pool

__all__ = [
  "FAST_RCNN_WEIGHTS",
  "batched_nms",
  "box_area",
  "box_iou",
  "clip_boxes",
  "decode_boxes",
  "elementwise_box_iou",
  "encode_boxes",
  "generalized_box_iou",
  "nms",
  "roi_align",
  "roi_pool",
  "select_detections",
]
