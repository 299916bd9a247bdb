"""Selective search region proposals (Uijlings et al., 2013), on the host in NumPy.

The image is over-segmented by Felzenszwalb and Huttenlocher's graph-based method
(scikit-image), then adjacent regions are merged greedily, most similar pair first, until
one region is left. Similarity is the sum of four terms in [0, 1]:

  colour   intersection of 25-bin per-channel colour histograms,
  texture  intersection of 10-bin histograms of Gaussian derivatives in 8 orientations,
  size     1 - (size_i + size_j) / image size (merge small regions early),
  fill     1 - (bounding box of both - size_i - size_j) / image size (merge regions that
           fill each other's gaps).

Every region of the hierarchy (initial and merged) is a proposal. Several segmentation
scales diversify the set, as in the paper's "fast" mode.
"""

import heapq
from typing import Sequence

import numpy as np
import scipy.ndimage
import skimage.segmentation

from cnnjax.errors import UsageError

_COLOUR_BINS = 25
_TEXTURE_BINS = 10
_ORIENTATIONS = 8


def _histograms(labels: np.ndarray, values: np.ndarray, bins: int, num_regions: int) -> np.ndarray:
  """Per-region L1-normalised histograms of `values` [H, W, D] in [0, 1] -> [R, D * bins]."""
  binned = np.minimum((values * bins).astype(np.int64), bins - 1)
  depth = values.shape[-1]
  index = (labels[..., None] * depth + np.arange(depth)) * bins + binned
  counts = np.bincount(index.ravel(), minlength=num_regions * depth * bins)
  counts = counts.reshape(num_regions, depth * bins).astype(np.float64)
  return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)


def _texture(image: np.ndarray) -> np.ndarray:
  """[H, W, 3] in [0, 1] -> [H, W, 3 * 8] oriented Gaussian derivatives rescaled to [0, 1]."""
  responses = []
  for channel in range(image.shape[-1]):
    dy = scipy.ndimage.gaussian_filter(image[..., channel], 1.0, order=(1, 0))
    dx = scipy.ndimage.gaussian_filter(image[..., channel], 1.0, order=(0, 1))
    for angle in np.arange(_ORIENTATIONS) * (2 * np.pi / _ORIENTATIONS):
      responses.append(np.maximum(np.cos(angle) * dx + np.sin(angle) * dy, 0))
  stacked = np.stack(responses, axis=-1)
  peak = stacked.max(axis=(0, 1), keepdims=True)
  return stacked / np.where(peak > 0, peak, 1)


def _adjacent_pairs(labels: np.ndarray) -> set[tuple[int, int]]:
  """Pairs (i < j) of region labels that touch horizontally, vertically or diagonally."""
  pairs = set()
  for a, b in (
    (labels[:, :-1], labels[:, 1:]),
    (labels[:-1, :], labels[1:, :]),
    (labels[:-1, :-1], labels[1:, 1:]),
    (labels[:-1, 1:], labels[1:, :-1]),
  ):
    differ = a != b
    lo = np.minimum(a[differ], b[differ])
    hi = np.maximum(a[differ], b[differ])
    pairs.update(zip(lo.tolist(), hi.tolist()))
  return pairs


def _hierarchy(image: np.ndarray, labels: np.ndarray) -> list[tuple[int, np.ndarray]]:
  """Greedy hierarchical grouping; returns (merge level, xyxy box) of every region.

  Level 0 is the initial segmentation; a merged region's level is the merge step that made
  it, so larger levels are coarser regions.
  """
  labels = np.unique(labels, return_inverse=True)[1].reshape(labels.shape)
  num_regions = int(labels.max()) + 1
  image_size = float(labels.size)
  colour = _histograms(labels, image, _COLOUR_BINS, num_regions)
  texture = _histograms(labels, _texture(image), _TEXTURE_BINS, num_regions)
  sizes = np.bincount(labels.ravel(), minlength=num_regions).astype(np.float64)
  rows, cols = np.indices(labels.shape)
  flat = labels.ravel()
  boxes = np.stack(
    [
      scipy.ndimage.minimum(cols.ravel(), flat, np.arange(num_regions)),
      scipy.ndimage.minimum(rows.ravel(), flat, np.arange(num_regions)),
      scipy.ndimage.maximum(cols.ravel(), flat, np.arange(num_regions)) + 1,
      scipy.ndimage.maximum(rows.ravel(), flat, np.arange(num_regions)) + 1,
    ],
    axis=1,
  ).astype(np.float64)
  regions = {
    i: {"colour": colour[i], "texture": texture[i], "size": sizes[i], "box": boxes[i]}
    for i in range(num_regions)
  }
  neighbours: dict[int, set[int]] = {i: set() for i in range(num_regions)}
  for i, j in _adjacent_pairs(labels):
    neighbours[i].add(j)
    neighbours[j].add(i)

  def similarity(a: dict, b: dict) -> float:
    box = np.concatenate(
      [np.minimum(a["box"][:2], b["box"][:2]), np.maximum(a["box"][2:], b["box"][2:])]
    )
    box_area = (box[2] - box[0]) * (box[3] - box[1])
    return (
      np.minimum(a["colour"], b["colour"]).sum()
      + np.minimum(a["texture"], b["texture"]).sum()
      + 1
      - (a["size"] + b["size"]) / image_size
      + 1
      - (box_area - a["size"] - b["size"]) / image_size
    )

  # A max-heap of candidate merges; entries whose regions were merged away are skipped.
  heap = [
    (-similarity(regions[i], regions[j]), i, j) for i in neighbours for j in neighbours[i] if i < j
  ]
  heapq.heapify(heap)
  proposals = [(0, region["box"]) for region in regions.values()]
  level, next_id = 0, num_regions
  while heap:
    _, i, j = heapq.heappop(heap)
    if i not in regions or j not in regions:
      continue
    a, b = regions.pop(i), regions.pop(j)
    total = a["size"] + b["size"]
    merged = {
      "colour": (a["size"] * a["colour"] + b["size"] * b["colour"]) / total,
      "texture": (a["size"] * a["texture"] + b["size"] * b["texture"]) / total,
      "size": total,
      "box": np.concatenate(
        [np.minimum(a["box"][:2], b["box"][:2]), np.maximum(a["box"][2:], b["box"][2:])]
      ),
    }
    level += 1
    new = next_id
    next_id += 1
    neighbours[new] = (neighbours.pop(i) | neighbours.pop(j)) - {i, j}
    for k in neighbours[new]:
      neighbours[k] -= {i, j}
      neighbours[k].add(new)
      heapq.heappush(heap, (-similarity(merged, regions[k]), min(k, new), max(k, new)))
    regions[new] = merged
    proposals.append((level, merged["box"]))
  return proposals


def selective_search(
  image: np.ndarray,
  scales: Sequence[float] = (50, 100, 200),
  sigma: float = 0.8,
  min_size: int | None = None,
  max_proposals: int | None = None,
  seed: int = 0,
) -> np.ndarray:
  """Region proposals for one image.

  Args:
    image: [H, W, 3] (or [H, W, 1]) uint8 or float in [0, 1].
    scales: Felzenszwalb `scale` values; one hierarchy per scale.
    sigma: Gaussian smoothing before segmentation.
    min_size: smallest initial segment in pixels; default 1/400 of the image area (at least 4).
    max_proposals: keep at most this many, ranked as in the paper: each proposal's merge
      position counted from the top of its hierarchy, times a random factor in (0, 1].
    seed: seed of that random factor.

  Returns:
    float32 [K, 4] unique (x1, y1, x2, y2) pixel-edge boxes (x2, y2 exclusive), best first.
  """
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] not in (1, 3):
    raise UsageError(f"selective_search takes one [H, W, 3] image, got shape {image.shape}.")
  if image.shape[0] < 2 or image.shape[1] < 2:
    raise UsageError(
      f"selective_search needs an image of at least 2x2 pixels, got "
      f"{image.shape[0]}x{image.shape[1]}."
    )
  values = image.astype(np.float64)
  if np.issubdtype(image.dtype, np.integer):
    values /= 255.0
  values = np.clip(values, 0.0, 1.0)
  if values.shape[-1] == 1:
    values = np.repeat(values, 3, axis=-1)
  if min_size is None:
    min_size = max(4, image.shape[0] * image.shape[1] // 400)
  rng = np.random.default_rng(seed)
  ranked = []
  for scale in scales:
    segments = skimage.segmentation.felzenszwalb(
      values, scale=scale, sigma=sigma, min_size=min_size, channel_axis=-1
    )
    proposals = _hierarchy(values, segments)
    top_level = max(level for level, _ in proposals)
    for level, box in proposals:
      ranked.append(((top_level - level + 1) * rng.uniform(1e-6, 1.0), tuple(box)))
  ranked.sort(key=lambda item: item[0])
  unique = list(dict.fromkeys(box for _, box in ranked))
  if max_proposals is not None:
    unique = unique[:max_proposals]
  return np.asarray(unique, np.float32).reshape(-1, 4)
