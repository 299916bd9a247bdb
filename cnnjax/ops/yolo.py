"""YOLOv1's output layout as an array op: splitting [N, S, S, B * 5 + C] predictions.

Shared by the model (`cnnjax.models.yolo.decode`) and the loss
(`cnnjax.losses.detection.yolo_v1_loss`); jit-compatible, with static shapes.
"""

import jax
import jax.numpy as jnp

from cnnjax.errors import UsageError


def split_yolo_output(
  predictions: jax.Array, num_boxes: int
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Splits YOLOv1 outputs into boxes, confidences and class scores.

  Each cell predicts `num_boxes` boxes as (x, y, sqrt w, sqrt h, confidence), with (x, y)
  the box centre's offset inside the cell in [0, 1] and w, h relative to the image, then
  C class scores. The network predicts the square roots of w and h directly, which is the
  paper's square-rooted loss on a quantity that stays differentiable at zero.

  Args:
    predictions: [N, S, S, B * 5 + C].
    num_boxes: B.

  Returns:
    boxes: [N, S, S, B, 4] xyxy in image-relative [0, 1] coordinates.
    raw: [N, S, S, B, 4] the predicted (x, y, sqrt w, sqrt h).
    confidences: [N, S, S, B].
    class_scores: [N, S, S, C].
  """
  n, rows, cols, channels = predictions.shape
  if channels <= 5 * num_boxes:
    raise UsageError(
      f"YOLO outputs need B * 5 + C channels with C >= 1, got {channels} for B={num_boxes}."
    )
  per_box = predictions[..., : 5 * num_boxes].reshape(n, rows, cols, num_boxes, 5)
  raw, confidences = per_box[..., :4], per_box[..., 4]
  col_index = jnp.arange(cols, dtype=predictions.dtype)[None, None, :, None]
  row_index = jnp.arange(rows, dtype=predictions.dtype)[None, :, None, None]
  center_x = (col_index + raw[..., 0]) / cols
  center_y = (row_index + raw[..., 1]) / rows
  width, height = jnp.square(raw[..., 2]), jnp.square(raw[..., 3])
  boxes = jnp.stack(
    [center_x - width / 2, center_y - height / 2, center_x + width / 2, center_y + height / 2],
    axis=-1,
  )
  return boxes, raw, confidences, predictions[..., 5 * num_boxes :]
