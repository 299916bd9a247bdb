"""Selective search: proposals cover the objects of generated shapes images."""

import numpy as np
import pytest

from cnnjax.data.builders import shapes
from cnnjax.errors import UsageError
from cnnjax.data.proposals import selective_search


def _iou(box, boxes):
  top_left = np.maximum(box[:2], boxes[:, :2])
  bottom_right = np.minimum(box[2:], boxes[:, 2:])
  inter = np.prod(np.maximum(bottom_right - top_left, 0), axis=1)

  def area(b):
    return (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])

  return inter / (area(box) + area(boxes) - inter)


@pytest.mark.parametrize("index", range(4))
def test_proposals_cover_every_object(index):
  example = shapes.render(np.random.default_rng((7, index)), 64, 4)
  proposals = selective_search(example["image"])
  assert proposals.ndim == 2 and proposals.shape[1] == 4 and proposals.dtype == np.float32
  assert (proposals[:, 2] > proposals[:, 0]).all() and (proposals[:, 3] > proposals[:, 1]).all()
  assert proposals.min() >= 0 and proposals.max() <= 64
  assert len(np.unique(proposals, axis=0)) == len(proposals)
  for box in example["boxes"][example["box_valid"]]:
    assert _iou(box, proposals).max() > 0.5


def test_max_proposals_and_grayscale():
  example = shapes.render(np.random.default_rng(0), 32, 2)
  gray = example["image"].mean(-1, keepdims=True).astype(np.uint8)
  proposals = selective_search(gray, max_proposals=5)
  assert proposals.shape == (5, 4)


def test_bad_image_shape():
  with pytest.raises(UsageError, match="one \\[H, W, 3\\] image"):
    selective_search(np.zeros((2, 8, 8, 3), np.uint8))
