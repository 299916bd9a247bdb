"""YOLOv1 decoding: class-specific confidences from raw linear outputs."""

import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.models import yolo


def test_decode_clips_confidence_and_class_scores_before_multiplying():
  # One cell, B = 1, C = 2: a box at the image centre.
  cell = jnp.array([0.5, 0.5, 0.5, 0.5, -0.5, -0.8, -0.9])
  # Raw, -0.5 x -0.8 = 0.4 would be a confident detection; clipped, the score is 0.
  _, scores, _, _ = yolo.decode(
    cell.reshape(1, 1, 1, 7), 1, (32, 32), score_threshold=0.0, max_detections=1
  )
  assert float(scores[0, 0]) == 0.0
  _, _, _, valid = yolo.decode(cell.reshape(1, 1, 1, 7), 1, (32, 32), max_detections=1)
  assert not np.asarray(valid).any()
  # Outputs above 1 count as 1: 1.3 x 0.5 scores 0.5, not 0.65.
  cell = cell.at[4].set(1.3).at[5].set(0.5)
  _, scores, _, _ = yolo.decode(cell.reshape(1, 1, 1, 7), 1, (32, 32), max_detections=1)
  assert float(scores[0, 0]) == pytest.approx(0.5)
