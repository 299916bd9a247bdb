"""RoI pooling (Fast R-CNN) and RoI align (Mask R-CNN) with torchvision.ops semantics.

Both take NHWC features, boxes [K, 4] xyxy in input-image coordinates (scaled to the
feature map by `spatial_scale`) and the image index of each box, and return [K, oh, ow, C].
Shapes are static, so both run under jit; gradients flow to the features, not the boxes
(as in torchvision).

Handling of unusual input, the same under jit as eagerly unless noted:
- Boxes partly or wholly outside the feature map: bins (roi_pool) or sampling points
  (roi_align) outside it contribute nothing, as torchvision; an all-outside box gives zeros.
- Malformed boxes (x2 < x1 or y2 < y1): UsageError when the boxes are concrete. Traced, they
  follow torchvision: roi_pool and roi_align(aligned=False) treat them as at least 1x1 feature
  cells, roi_align(aligned=True) returns zeros.
- batch_indices outside [0, N): UsageError when concrete; traced, those RoIs give zeros.
- No boxes (K = 0): an empty [0, oh, ow, C] result.
- Huge boxes: both ops run in time bounded by the feature map, not the box. roi_pool computes
  its bin edges in float32 from box corners clamped to +-2^62 cells (far beyond the int32
  corners torchvision can represent, so its results are unchanged). roi_align with adaptive
  sampling (sampling_ratio <= 0) visits, in each bin, only the sampling points that can land
  on the map (at most 2H + 48 of the ceil(roi_h / oh) rows, likewise for columns) and still
  divides by the full count, as torchvision: the result equals the unbounded computation
  while a bin has at most 2^24 points per axis (where float32 still counts them exactly),
  and beyond that stays an average with weights summing to at most 1, so within the range
  of the features and 0. A box whose extent overflows float32 after scaling gives zeros.
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

# roi_pool clamps box corners to +-2^62 cells so that extents and bin edges stay finite.
_MAX_POOL_COORDINATE = 2.0**62
# Adaptive roi_align visits at most 2 * size + this many points per bin and axis: the
# points are at least half a cell apart, plus a margin for float32 rounding of the index of
# the first point on the map (see _sample_weights).
_EXTRA_POINTS = 48


def _output_size(size: int | Sequence[int]) -> tuple[int, int]:
  """(oh, ow) from oh or (oh, ow); UsageError unless each is an int >= 1."""
  if isinstance(size, (int, np.integer)):
    size = (size, size)
  if not isinstance(size, (tuple, list)) or len(size) != 2:
    raise UsageError(f"output_size must be an int or a pair (oh, ow) of ints, got {size!r}.")
  return check_int(size[0], "output_size", 1), check_int(size[1], "output_size", 1)


def _checked_inputs(features, boxes, batch_indices,
                    spatial_scale: Any) -> tuple[jnp.ndarray, ...]:
  """Validates the shared arguments of the RoI ops; returns them as jax arrays."""
  if features.ndim != 4:
    raise UsageError(f"features must be [N, H, W, C], got shape {features.shape}.")
  if not (jnp.issubdtype(features.dtype, jnp.floating)
          or jnp.issubdtype(features.dtype, jnp.integer)):
    raise UsageError(f"features must be floating point or integer, got {features.dtype}; "
                     "cast them.")
  if boxes.ndim != 2 or boxes.shape[1] != 4:
    raise UsageError(f"boxes must be [K, 4] (x1, y1, x2, y2), got shape {boxes.shape}.")
  if batch_indices.shape != boxes.shape[:1]:
    raise UsageError(f"batch_indices must be [K] = [{boxes.shape[0]}], "
                     f"got shape {batch_indices.shape}.")
  if not jnp.issubdtype(batch_indices.dtype, jnp.integer):
    raise UsageError(f"batch_indices must be integer image indices, got {batch_indices.dtype}; "
                     "cast them with .astype(jnp.int32).")
  if is_concrete(spatial_scale):
    scale = float(spatial_scale)
    if not (math.isfinite(scale) and scale > 0):
      raise UsageError(f"spatial_scale={scale} must be finite and > 0 (feature cells per "
                       "input pixel, 1 / stride).")
  check_boxes(boxes)
  if is_concrete(batch_indices) and batch_indices.size:
    values = np.asarray(batch_indices)
    if values.min() < 0 or values.max() >= features.shape[0]:
      raise UsageError(f"batch_indices must lie in [0, {features.shape[0]}), got values from "
                       f"{values.min()} to {values.max()}; index the image each box belongs to.")
  return jnp.asarray(features), jnp.asarray(boxes), jnp.asarray(batch_indices)


def _round_half_away_from_zero(x: jnp.ndarray) -> jnp.ndarray:
  """C's round(), which torchvision uses (jnp.round rounds half to even)."""
  return jnp.sign(x) * jnp.floor(jnp.abs(x) + 0.5)


def _pool_bins(start: jnp.ndarray, end: jnp.ndarray, bins: int, size: int) -> jnp.ndarray:
  """[K] rounded RoI start/end cells -> [K, bins, size] bool membership of cells in bins.

  In float32, which equals torchvision's int arithmetic while corners stay below 2^24 cells
  (every whole number involved is exact) and keeps bin edges finite for any corners.
  """
  extent = jnp.maximum(end - start + 1, 1)
  bin_size = extent / bins
  index = jnp.arange(bins, dtype=jnp.float32)
  lo = jnp.floor(index * bin_size[:, None]) + start[:, None]
  hi = jnp.ceil((index + 1) * bin_size[:, None]) + start[:, None]
  lo = jnp.clip(lo, 0, size).astype(jnp.int32)
  hi = jnp.clip(hi, 0, size).astype(jnp.int32)
  cells = jnp.arange(size)
  return (cells >= lo[..., None]) & (cells < hi[..., None])


def roi_pool(features: jnp.ndarray, boxes: jnp.ndarray, batch_indices: jnp.ndarray,
             output_size: int | Sequence[int], spatial_scale: float = 1.0,
             roi_batch_size: int = 16) -> jnp.ndarray:
  """Max-pools each RoI into a fixed grid (torchvision.ops.roi_pool).

  Box corners are scaled and rounded to feature cells; bin (i, j) spans cells
  floor(i * bin_h) .. ceil((i + 1) * bin_h) (clipped to the map) and takes their maximum;
  bins that are empty after clipping are 0.

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
  features, boxes, batch_indices = _checked_inputs(features, boxes, batch_indices,
                                                   spatial_scale)
  out_h, out_w = _output_size(output_size)
  check_int(roi_batch_size, "roi_batch_size", 1)
  num_images, height, width, channels = features.shape
  if boxes.shape[0] == 0:
    return jnp.zeros((0, out_h, out_w, channels), features.dtype)
  scaled = _round_half_away_from_zero(jax.lax.stop_gradient(boxes).astype(jnp.float32)
                                      * spatial_scale)
  scaled = jnp.clip(scaled, -_MAX_POOL_COORDINATE, _MAX_POOL_COORDINATE)
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
  empty = ~(rows.any(-1)[:, :, None] & cols.any(-1)[:, None, :])
  in_range = (batch_indices >= 0) & (batch_indices < num_images)
  zero = empty | ~in_range[:, None, None]
  return jnp.where(zero[..., None], jnp.zeros((), features.dtype), pooled)


def _sample_weights(start: jnp.ndarray, bin_size: jnp.ndarray, grid: jnp.ndarray, bins: int,
                    size: int, max_points: int | None) -> jnp.ndarray:
  """Summed bilinear weights of every bin's sampling points along one axis.

  Args:
    start: [K] RoI start in feature coordinates.
    bin_size: [K] bin extent.
    grid: [K] float32 sampling points per bin along this axis, a whole number (0: none).
    bins: output bins along this axis.
    size: feature cells along this axis.
    max_points: None to visit every point, or the most points of a bin that can land on the
      map (adaptive sampling, where points are at least half a cell apart): each bin then
      visits that many, from just before the first one that can land on the map.

  Returns:
    [K, bins, size]: weight of each feature cell, summed over the bin's sampling points.
  """
  bin_index = jnp.arange(bins, dtype=jnp.float32)
  cells = jnp.arange(size)
  grid_float = jnp.maximum(grid, 1.0)
  base = start[:, None] + bin_index * bin_size[:, None]
  if max_points is None:
    first = jnp.zeros_like(base)
  else:
    # Index of the first point at or right of -1; moved back by more than float32's
    # rounding of it (a few ulps) so that no point on the map is skipped.
    index = jnp.nan_to_num((-1.0 - base) / (bin_size / grid_float)[:, None] - 0.5)
    first = jnp.clip(jnp.floor(index - 2.0 - jnp.abs(index) * 2.0**-20), 0.0, grid[:, None])

  def add_point(step, weights):
    point = first + step.astype(jnp.float32)
    # The same float order as torchvision: start + p * bin + (i + .5) * bin / grid.
    coord = base + (point + 0.5) * bin_size[:, None] / grid_float[:, None]
    inside = (coord >= -1.0) & (coord <= size) & (point < grid[:, None])
    # Clipping only guards the int cast; points off the map are masked out below.
    coord = jnp.clip(coord, 0.0, size)
    low = jnp.floor(coord).astype(jnp.int32)
    at_edge = low >= size - 1
    low = jnp.where(at_edge, size - 1, low)
    high = jnp.where(at_edge, size - 1, low + 1)
    coord = jnp.where(at_edge, low.astype(jnp.float32), coord)
    frac = coord - low
    hat = ((1 - frac)[..., None] * (cells == low[..., None])
           + frac[..., None] * (cells == high[..., None]))
    return weights + jnp.where(inside[..., None], hat, 0.0)

  initial = jnp.zeros((start.shape[0], bins, size), jnp.float32)
  # The adaptive point count varies per RoI, so the loop runs to the largest one and masks
  # the rest: exact for any box size, with static shapes.
  num_points = jnp.max(grid)
  if max_points is not None:
    num_points = jnp.minimum(num_points, max_points)
  return jax.lax.fori_loop(0, num_points.astype(jnp.int32), add_point, initial)


def roi_align(features: jnp.ndarray, boxes: jnp.ndarray, batch_indices: jnp.ndarray,
              output_size: int | Sequence[int], spatial_scale: float = 1.0,
              sampling_ratio: int = -1, aligned: bool = False) -> jnp.ndarray:
  """Averages bilinear samples in each bin of each RoI (torchvision.ops.roi_align).

  Each bin averages a grid of sampling_ratio x sampling_ratio bilinear samples, or, when
  sampling_ratio <= 0, ceil(roi_h / oh) x ceil(roi_w / ow) samples, a count that varies per
  RoI. Bilinear interpolation is separable, so each RoI becomes a row-weight matrix [oh, H]
  and a column-weight matrix [ow, W] (sums over its sampling points, built by a loop that
  runs to the largest count and masks RoIs with fewer), and the output is two matrix
  products with the features: exact for adaptive sampling with static shapes. Adaptive
  sampling visits only the points that can land on the map, so time is bounded by the map
  (the module doc gives the rule for huge boxes).

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
  features, boxes, batch_indices = _checked_inputs(features, boxes, batch_indices,
                                                   spatial_scale)
  if not jnp.issubdtype(features.dtype, jnp.floating):
    raise UsageError(f"roi_align averages samples, so features must be floating point, got "
                     f"{features.dtype}; cast them with .astype(jnp.float32).")
  out_h, out_w = _output_size(output_size)
  check_int(sampling_ratio, "sampling_ratio")
  num_images, height, width, channels = features.shape
  if boxes.shape[0] == 0:
    return jnp.zeros((0, out_h, out_w, channels), features.dtype)
  offset = 0.5 if aligned else 0.0
  scaled = jax.lax.stop_gradient(boxes).astype(jnp.float32) * spatial_scale - offset
  roi_w = scaled[:, 2] - scaled[:, 0]
  roi_h = scaled[:, 3] - scaled[:, 1]
  if not aligned:
    roi_w, roi_h = jnp.maximum(roi_w, 1.0), jnp.maximum(roi_h, 1.0)
  bin_h, bin_w = roi_h / out_h, roi_w / out_w
  if sampling_ratio > 0:
    grid_h = jnp.full(roi_h.shape, sampling_ratio, jnp.float32)
    grid_w = grid_h
    max_rows = max_cols = None
  else:
    # Counts stay in float32: ceil(bin) overflows int32 for boxes past 2^31 cells. A bin
    # whose extent overflowed (Inf or NaN) gets no points, so the RoI gives zeros.
    grid_h = jnp.where(jnp.isfinite(bin_h), jnp.ceil(bin_h), 0.0)
    grid_w = jnp.where(jnp.isfinite(bin_w), jnp.ceil(bin_w), 0.0)
    max_rows, max_cols = 2 * height + _EXTRA_POINTS, 2 * width + _EXTRA_POINTS
  count = jnp.maximum(grid_h * grid_w, 1.0)
  row_weights = _sample_weights(scaled[:, 1], bin_h, grid_h, out_h, height, max_rows)
  col_weights = _sample_weights(scaled[:, 0], bin_w, grid_w, out_w, width, max_cols)
  # Selecting each RoI's image with a one-hot matrix keeps the contraction a plain matmul
  # (no [K, H, W, C] gather); out-of-range indices select nothing and give zeros.
  image_one_hot = jax.nn.one_hot(batch_indices, num_images, dtype=jnp.float32)
  row_selector = jnp.einsum("kn,kph->kpnh", image_one_hot, row_weights / count[:, None, None])
  precision = jax.lax.Precision.HIGHEST
  by_rows = jnp.einsum("kpnh,nhwc->kpwc", row_selector, features.astype(jnp.float32),
                       precision=precision)
  pooled = jnp.einsum("kpwc,kqw->kpqc", by_rows, col_weights, precision=precision)
  return pooled.astype(features.dtype)
