"""RoI pooling (Fast R-CNN) and RoI align (Mask R-CNN) with torchvision.ops semantics.

Both take NHWC features, boxes [K, 4] xyxy in input-image coordinates (scaled to the
feature map by `spatial_scale`) and the image index of each box, and return [K, oh, ow, C].
Shapes are static, so both run under jit; gradients flow to the features, not the boxes
(as in torchvision).

Handling of unusual input, the same under jit as eagerly unless noted:
- Boxes partly or wholly outside the feature map are clamped to it before the bins and
  samples are laid out, so time is bounded by the map for any finite box (1e30 included)
  and every output lies within the range of the features of the box's image (roi_align
  also clips float32 rounding of its averages to that range). Boxes on the map give
  torchvision's results; for the others this deliberately differs from torchvision, which
  counts bins (roi_pool) or samples (roi_align) off the map as 0.
  roi_pool clamps the rounded corner cells to [0, W - 1] x [0, H - 1] (a far corner that
  rounds to W or H names a cell past the map, so the whole-image box is clamped too); no
  bin is then empty, and a box wholly off the map pools the edge cells it lies beyond.
  roi_align clamps the scaled corners to [0, W] x [0, H] before the aligned offset
  ([-0.5, W - 0.5] x [-0.5, H - 0.5] after it), where every sample reads the map (the
  whole-image box is unchanged); with aligned=False, whose RoIs are at least one cell, x1
  and y1 are also kept at most W - 1 and H - 1. A box wholly off the map along an axis
  becomes there, with aligned=False, the 1-cell RoI at that edge ([0, 1] or [W - 1, W]);
  with aligned=True, a zero-extent RoI on the edge: with sampling_ratio > 0 it gives the
  edge row or column, with adaptive sampling it has no samples and gives 0, as any
  zero-size aligned box does in torchvision.
- Malformed boxes (x2 < x1 or y2 < y1): UsageError when the boxes are concrete. Traced, they
  follow torchvision: roi_pool and roi_align(aligned=False) treat them as at least 1x1 feature
  cells, roi_align(aligned=True) returns zeros. Traced NaN corners give zeros.
- batch_indices outside [0, N): UsageError when concrete; traced, those RoIs give zeros.
- No boxes (K = 0): an empty [0, oh, ow, C] result.
- Integer features: roi_pool takes their exact maximum in their dtype; roi_align, an
  average, raises UsageError (cast the features to a float dtype first).
"""

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.errors import UsageError
from cnnjax.ops.boxes import check_boxes, check_int, is_concrete


def _output_size(size: int | Sequence[int]) -> tuple[int, int]:
  """(oh, ow) from oh or (oh, ow); UsageError unless each is an int >= 1."""
  if isinstance(size, (int, np.integer)):
    size = (size, size)
  if not isinstance(size, (tuple, list)) or len(size) != 2:
    raise UsageError(f"output_size must be an int or a pair (oh, ow) of ints, got {size!r}.")
  return check_int(size[0], "output_size", 1), check_int(size[1], "output_size", 1)


def _checked_inputs(features, boxes, batch_indices, spatial_scale: Any) -> tuple[jnp.ndarray, ...]:
  """Validates the shared arguments of the RoI ops; returns them as jax arrays."""
  if features.ndim != 4:
    raise UsageError(f"features must be [N, H, W, C], got shape {features.shape}.")
  if not (
    jnp.issubdtype(features.dtype, jnp.floating) or jnp.issubdtype(features.dtype, jnp.integer)
  ):
    raise UsageError(
      f"features must be floating point or integer, got {features.dtype}; cast them."
    )
  if boxes.ndim != 2 or boxes.shape[1] != 4:
    raise UsageError(f"boxes must be [K, 4] (x1, y1, x2, y2), got shape {boxes.shape}.")
  if batch_indices.shape != boxes.shape[:1]:
    raise UsageError(
      f"batch_indices must be [K] = [{boxes.shape[0]}], got shape {batch_indices.shape}."
    )
  if not jnp.issubdtype(batch_indices.dtype, jnp.integer):
    raise UsageError(
      f"batch_indices must be integer image indices, got {batch_indices.dtype}; "
      "cast them with .astype(jnp.int32)."
    )
  if is_concrete(spatial_scale):
    scale = float(spatial_scale)
    if not (math.isfinite(scale) and scale > 0):
      raise UsageError(
        f"spatial_scale={scale} must be finite and > 0 (feature cells per input pixel, 1 / stride)."
      )
  check_boxes(boxes)
  if is_concrete(batch_indices) and batch_indices.size:
    values = np.asarray(batch_indices)
    if values.min() < 0 or values.max() >= features.shape[0]:
      raise UsageError(
        f"batch_indices must lie in [0, {features.shape[0]}), got values from "
        f"{values.min()} to {values.max()}; index the image each box belongs to."
      )
  return jnp.asarray(features), jnp.asarray(boxes), jnp.asarray(batch_indices)


def _round_half_away_from_zero(x: jnp.ndarray) -> jnp.ndarray:
  """C's round(), which torchvision uses (jnp.round rounds half to even)."""
  return jnp.sign(x) * jnp.floor(jnp.abs(x) + 0.5)


def _pool_bins(start: jnp.ndarray, end: jnp.ndarray, bins: int, size: int) -> jnp.ndarray:
  """[K] rounded RoI start/end cells -> [K, bins, size] bool membership of cells in bins.

  In float32, which equals torchvision's int arithmetic: the corners are clamped to the
  map's cells, so every whole number involved is exact.
  """
  start = jnp.clip(start, 0, size - 1)
  end = jnp.clip(end, 0, size - 1)
  extent = jnp.maximum(end - start + 1, 1)
  bin_size = extent / bins
  index = jnp.arange(bins, dtype=jnp.float32)
  lo = jnp.floor(index * bin_size[:, None]) + start[:, None]
  hi = jnp.ceil((index + 1) * bin_size[:, None]) + start[:, None]
  lo = jnp.clip(lo, 0, size).astype(jnp.int32)
  hi = jnp.clip(hi, 0, size).astype(jnp.int32)
  cells = jnp.arange(size)
  return (cells >= lo[..., None]) & (cells < hi[..., None])


def roi_pool(
  features: jnp.ndarray,
  boxes: jnp.ndarray,
  batch_indices: jnp.ndarray,
  output_size: int | Sequence[int],
  spatial_scale: float = 1.0,
  roi_batch_size: int = 16,
) -> jnp.ndarray:
  """Max-pools each RoI into a fixed grid (torchvision.ops.roi_pool).

  Box corners are scaled, rounded to feature cells and clamped to the map's cells
  [0, W - 1] x [0, H - 1]; bin (i, j) spans cells floor(i * bin_h) .. ceil((i + 1) * bin_h)
  from the first cell and takes their maximum, so no bin is empty and every output is a
  feature of the box's image. Boxes whose rounded corners lie on the map give
  torchvision's results; for the others (torchvision: bins off the map are 0) see the
  module docstring.

  Args:
    features: [N, H, W, C], floating point or integer (pooled exactly, in their dtype).
    boxes: [K, 4] xyxy in input coordinates.
    batch_indices: [K] int, the image of each box.
    output_size: oh or (oh, ow), ints >= 1.
    spatial_scale: feature cells per input pixel (1 / stride), > 0.
    roi_batch_size: RoIs pooled at once; bounds memory at roi_batch_size * oh * H * W * C.

  Returns:
    [K, oh, ow, C] in the features' dtype.
  """
  features, boxes, batch_indices = _checked_inputs(features, boxes, batch_indices, spatial_scale)
  out_h, out_w = _output_size(output_size)
  check_int(roi_batch_size, "roi_batch_size", 1)
  num_images, height, width, channels = features.shape
  if boxes.shape[0] == 0:
    return jnp.zeros((0, out_h, out_w, channels), features.dtype)
  scaled = _round_half_away_from_zero(
    jax.lax.stop_gradient(boxes).astype(jnp.float32) * spatial_scale
  )
  rows = _pool_bins(scaled[:, 1], scaled[:, 3], out_h, height)
  cols = _pool_bins(scaled[:, 0], scaled[:, 2], out_w, width)
  if jnp.issubdtype(features.dtype, jnp.integer):
    lowest = jnp.array(jnp.iinfo(features.dtype).min, features.dtype)
  else:
    lowest = jnp.array(-jnp.inf, features.dtype)

  def pool_one(args):
    image, row_mask, col_mask = args
    image_features = features[jnp.clip(image, 0, num_images - 1)]
    # A bin is a rectangle, so its max separates into a max over rows then over columns.
    by_rows = jnp.max(jnp.where(row_mask[:, :, None, None], image_features[None], lowest), 1)
    return jnp.max(jnp.where(col_mask[None, :, :, None], by_rows[:, None], lowest), 2)

  pooled = jax.lax.map(pool_one, (batch_indices, rows, cols), batch_size=roi_batch_size)
  # Clamped corners leave no bin empty; only NaN corners (traced) get here.
  empty = ~(rows.any(-1)[:, :, None] & cols.any(-1)[:, None, :])
  in_range = (batch_indices >= 0) & (batch_indices < num_images)
  zero = empty | ~in_range[:, None, None]
  return jnp.where(zero[..., None], jnp.zeros((), features.dtype), pooled)


def _clamp_to_map(
  start: jnp.ndarray, end: jnp.ndarray, size: int, aligned: bool
) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Clamps [K] RoI start/end (feature coordinates, after the aligned offset) to the map.

  The map spans [0, size] before the offset ([-0.5, size - 0.5] after it), where every
  sampling point reads the features. With aligned=False a RoI is at least one cell long,
  so its start is also kept at most size - 1 to end on the map.
  """
  offset = 0.5 if aligned else 0.0
  start = jnp.clip(start, -offset, size - offset)
  end = jnp.clip(end, -offset, size - offset)
  if not aligned:
    start = jnp.minimum(start, size - 1.0)
  return start, end


def _sample_weights(
  start: jnp.ndarray, bin_size: jnp.ndarray, grid: jnp.ndarray, bins: int, size: int
) -> jnp.ndarray:
  """Summed bilinear weights of every bin's sampling points along one axis.

  Args:
    start: [K] RoI start in feature coordinates, clamped to the map (_clamp_to_map).
    bin_size: [K] bin extent.
    grid: [K] float32 sampling points per bin along this axis, a whole number (0: none).
    bins: output bins along this axis.
    size: feature cells along this axis.

  Returns:
    [K, bins, size]: weight of each feature cell, summed over the bin's sampling points.
  """
  bin_index = jnp.arange(bins, dtype=jnp.float32)
  cells = jnp.arange(size)
  grid_float = jnp.maximum(grid, 1.0)
  base = start[:, None] + bin_index * bin_size[:, None]

  def add_point(step, weights):
    point = step.astype(jnp.float32)
    # The same float order as torchvision: start + p * bin + (i + .5) * bin / grid.
    coord = base + (point + 0.5) * bin_size[:, None] / grid_float[:, None]
    # The RoI is on the map, so every point is: clipping reads [-0.5, 0) as 0, as
    # torchvision, and absorbs float32 rounding past the far edge.
    coord = jnp.clip(coord, 0.0, size)
    low = jnp.floor(coord).astype(jnp.int32)
    at_edge = low >= size - 1
    low = jnp.where(at_edge, size - 1, low)
    high = jnp.where(at_edge, size - 1, low + 1)
    coord = jnp.where(at_edge, low.astype(jnp.float32), coord)
    frac = coord - low
    hat = (1 - frac)[..., None] * (cells == low[..., None]) + frac[..., None] * (
      cells == high[..., None]
    )
    return weights + jnp.where((point < grid)[:, None, None], hat, 0.0)

  initial = jnp.zeros((start.shape[0], bins, size), jnp.float32)
  # The adaptive point count varies per RoI, so the loop runs to the largest one and masks
  # the rest: exact, with static shapes. Clamped RoIs have at most ceil(size / bins) points
  # per bin with adaptive sampling, so the loop is bounded by the map.
  return jax.lax.fori_loop(0, jnp.max(grid).astype(jnp.int32), add_point, initial)


def roi_align(
  features: jnp.ndarray,
  boxes: jnp.ndarray,
  batch_indices: jnp.ndarray,
  output_size: int | Sequence[int],
  spatial_scale: float = 1.0,
  sampling_ratio: int = -1,
  aligned: bool = False,
) -> jnp.ndarray:
  """Averages bilinear samples in each bin of each RoI (torchvision.ops.roi_align).

  Box corners are scaled, shifted by the aligned offset and clamped to the feature map
  ([0, W] x [0, H] before the offset; the module docstring gives the rule), so every
  sample reads the map and every output lies within the range of the features; boxes on
  the map give torchvision's results (for the others torchvision counts samples off the
  map as 0). Each bin averages a grid of sampling_ratio x sampling_ratio bilinear samples,
  or, when sampling_ratio <= 0, ceil(roi_h / oh) x ceil(roi_w / ow) samples, a count that
  varies per RoI and, the RoI being clamped, is bounded by the map. Bilinear interpolation
  is separable, so each RoI becomes a row-weight matrix [oh, H] and a column-weight matrix
  [ow, W] (sums over its sampling points, built by a loop that runs to the largest count
  and masks RoIs with fewer), and the output is two matrix products with the features:
  exact for adaptive sampling with static shapes.

  Args:
    features: [N, H, W, C], floating point.
    boxes: [K, 4] xyxy in input coordinates.
    batch_indices: [K] int, the image of each box.
    output_size: oh or (oh, ow), ints >= 1.
    spatial_scale: feature cells per input pixel (1 / stride), > 0.
    sampling_ratio: int, sampling points per bin along each axis; <= 0 for adaptive.
    aligned: shift box coordinates by -0.5 cell so that samples align with pixel centres.

  Returns:
    [K, oh, ow, C] in the features' dtype.
  """
  features, boxes, batch_indices = _checked_inputs(features, boxes, batch_indices, spatial_scale)
  if not jnp.issubdtype(features.dtype, jnp.floating):
    raise UsageError(
      f"roi_align averages samples, so features must be floating point, got "
      f"{features.dtype}; cast them with .astype(jnp.float32)."
    )
  out_h, out_w = _output_size(output_size)
  check_int(sampling_ratio, "sampling_ratio")
  num_images, height, width, channels = features.shape
  if boxes.shape[0] == 0:
    return jnp.zeros((0, out_h, out_w, channels), features.dtype)
  offset = 0.5 if aligned else 0.0
  scaled = jax.lax.stop_gradient(boxes).astype(jnp.float32) * spatial_scale - offset
  x1, x2 = _clamp_to_map(scaled[:, 0], scaled[:, 2], width, aligned)
  y1, y2 = _clamp_to_map(scaled[:, 1], scaled[:, 3], height, aligned)
  roi_w, roi_h = x2 - x1, y2 - y1
  if not aligned:
    roi_w, roi_h = jnp.maximum(roi_w, 1.0), jnp.maximum(roi_h, 1.0)
  bin_h, bin_w = roi_h / out_h, roi_w / out_w
  if sampling_ratio > 0:
    grid_h = grid_w = jnp.full(roi_h.shape, sampling_ratio, jnp.float32)
  else:
    grid_h, grid_w = jnp.ceil(bin_h), jnp.ceil(bin_w)
  # Only NaN corners (traced) give a NaN extent: no points, so the RoI gives zeros.
  finite = jnp.isfinite(bin_h) & jnp.isfinite(bin_w)
  grid_h, grid_w = jnp.where(finite, grid_h, 0.0), jnp.where(finite, grid_w, 0.0)
  # Each axis's weights are averaged over its points (torchvision divides the sum by
  # grid_h * grid_w): each then sums to 1, exactly where all a bin's points read one cell.
  row_weights = (
    _sample_weights(y1, bin_h, grid_h, out_h, height) / jnp.maximum(grid_h, 1.0)[:, None, None]
  )
  col_weights = (
    _sample_weights(x1, bin_w, grid_w, out_w, width) / jnp.maximum(grid_w, 1.0)[:, None, None]
  )
  # Selecting each RoI's image with a one-hot matrix keeps the contraction a plain matmul
  # (no [K, H, W, C] gather); out-of-range indices select nothing and give zeros.
  image_one_hot = jax.nn.one_hot(batch_indices, num_images, dtype=jnp.float32)
  row_selector = jnp.einsum("kn,kph->kpnh", image_one_hot, row_weights)
  precision = jax.lax.Precision.HIGHEST
  by_rows = jnp.einsum(
    "kpnh,nhwc->kpwc", row_selector, features.astype(jnp.float32), precision=precision
  )
  pooled = jnp.einsum("kpwc,kqw->kpqc", by_rows, col_weights, precision=precision)
  # Each output is an average of the map's features, but float32 rounding of the weights
  # can carry it an ulp or two past them (1 + 2^-23 on a constant map of ones): clip to the
  # range of the RoI's image, letting gradients through unchanged. RoIs with no samples or
  # an out-of-range image keep their zeros.
  image = jnp.clip(batch_indices, 0, num_images - 1)
  lowest = jnp.min(features, axis=(1, 2)).astype(jnp.float32)[image]
  highest = jnp.max(features, axis=(1, 2)).astype(jnp.float32)[image]
  clipped = jnp.clip(pooled, lowest[:, None, None], highest[:, None, None])
  sampled = (grid_h * grid_w > 0) & (batch_indices >= 0) & (batch_indices < num_images)
  pooled = pooled + jax.lax.stop_gradient(
    jnp.where(sampled[:, None, None, None], clipped - pooled, 0.0)
  )
  return pooled.astype(features.dtype)
