"""roi_pool and roi_align against NumPy loops (torchvision's kernels) and torchvision.ops."""

import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax import ops
from cnnjax.errors import UsageError

HEIGHT, WIDTH, STRIDE = 7, 9, 2


def _c_round(x):
  return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


def _roi_pool_loop(features, boxes, indices, out_h, out_w, scale):
  num_images, height, width, channels = features.shape
  out = np.zeros((len(boxes), out_h, out_w, channels), np.float32)
  for k, (box, image) in enumerate(zip(boxes, indices)):
    x1, y1, x2, y2 = (_c_round(float(v) * scale) for v in box)
    bin_h = np.float32(max(y2 - y1 + 1, 1)) / np.float32(out_h)
    bin_w = np.float32(max(x2 - x1 + 1, 1)) / np.float32(out_w)
    for p in range(out_h):
      for q in range(out_w):
        h0 = min(max(math.floor(np.float32(p) * bin_h) + y1, 0), height)
        h1 = min(max(math.ceil(np.float32(p + 1) * bin_h) + y1, 0), height)
        w0 = min(max(math.floor(np.float32(q) * bin_w) + x1, 0), width)
        w1 = min(max(math.ceil(np.float32(q + 1) * bin_w) + x1, 0), width)
        if h1 > h0 and w1 > w0:
          out[k, p, q] = features[image, h0:h1, w0:w1].max(axis=(0, 1))
  return out


def _bilinear(image, y, x):
  height, width = image.shape[:2]
  if y < -1.0 or y > height or x < -1.0 or x > width:
    return 0.0
  y, x = max(y, 0.0), max(x, 0.0)
  y0, x0 = int(y), int(x)
  if y0 >= height - 1:
    y0 = y1 = height - 1
    y = float(y0)
  else:
    y1 = y0 + 1
  if x0 >= width - 1:
    x0 = x1 = width - 1
    x = float(x0)
  else:
    x1 = x0 + 1
  ly, lx = y - y0, x - x0
  return ((1 - ly) * (1 - lx) * image[y0, x0] + (1 - ly) * lx * image[y0, x1]
          + ly * (1 - lx) * image[y1, x0] + ly * lx * image[y1, x1])


def _roi_align_loop(features, boxes, indices, out_h, out_w, scale, sampling_ratio, aligned):
  out = np.zeros((len(boxes), out_h, out_w, features.shape[-1]), np.float64)
  offset = 0.5 if aligned else 0.0
  for k, (box, image) in enumerate(zip(boxes, indices)):
    x1, y1, x2, y2 = (float(v) * scale - offset for v in box)
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:
      roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
    bin_h, bin_w = roi_h / out_h, roi_w / out_w
    grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(bin_h)
    grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(bin_w)
    count = max(grid_h * grid_w, 1)
    for p in range(out_h):
      for q in range(out_w):
        total = 0.0
        for iy in range(grid_h):
          y = y1 + p * bin_h + (iy + 0.5) * bin_h / grid_h
          for ix in range(grid_w):
            x = x1 + q * bin_w + (ix + 0.5) * bin_w / grid_w
            total = total + _bilinear(features[image], y, x)
        out[k, p, q] = total / count
  return out


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  features = rng.normal(size=(2, HEIGHT, WIDTH, 3)).astype(np.float32)
  size = np.array([WIDTH, HEIGHT, WIDTH, HEIGHT]) * STRIDE
  xy = rng.uniform(-4, size[:2] + 2, (10, 2))
  wh = rng.uniform(0, size[:2] * 0.8, (10, 2))
  boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
  boxes[0, 2] = boxes[0, 0]                          # zero width
  boxes[1, 3] = boxes[1, 1]                          # zero height
  boxes[2] = boxes[3]                                # identical pair
  boxes[4] = [size[0] + 3, size[1] + 3, size[0] + 9, size[1] + 6]   # outside the map
  boxes[5] = [-40, -30, size[0] + 30, size[1] + 50]  # far larger than the map
  indices = rng.integers(0, 2, 10).astype(np.int32)
  return features, boxes, indices


def _torch_inputs(features, boxes, indices):
  import torch
  rois = np.concatenate([indices[:, None].astype(np.float32), boxes], axis=1)
  return torch.tensor(features).permute(0, 3, 1, 2).contiguous(), torch.tensor(rois)


def test_roi_pool_matches_loop_and_torchvision():
  features, boxes, indices = _inputs()
  ours = np.asarray(jax.jit(ops.roi_pool, static_argnums=(3, 4))(
      features, boxes, indices, (3, 2), 1 / STRIDE))
  np.testing.assert_allclose(ours, _roi_pool_loop(features, boxes, indices, 3, 2, 1 / STRIDE),
                             atol=1e-6)
  torchvision = pytest.importorskip("torchvision")
  theirs = torchvision.ops.roi_pool(*_torch_inputs(features, boxes, indices), (3, 2), 1 / STRIDE)
  np.testing.assert_allclose(ours, theirs.permute(0, 2, 3, 1).numpy(), atol=1e-5)


@pytest.mark.parametrize("sampling_ratio,aligned", [(-1, False), (2, False), (0, True)])
def test_roi_align_matches_loop_and_torchvision(sampling_ratio, aligned):
  features, boxes, indices = _inputs(1)
  align = jax.jit(ops.roi_align, static_argnums=(3, 4, 5, 6))
  ours = np.asarray(align(features, boxes, indices, (3, 4), 1 / STRIDE, sampling_ratio, aligned))
  expected = _roi_align_loop(features, boxes, indices, 3, 4, 1 / STRIDE, sampling_ratio, aligned)
  np.testing.assert_allclose(ours, expected, atol=1e-5)
  torchvision = pytest.importorskip("torchvision")
  theirs = torchvision.ops.roi_align(*_torch_inputs(features, boxes, indices), (3, 4),
                                     1 / STRIDE, sampling_ratio, aligned)
  np.testing.assert_allclose(ours, theirs.permute(0, 2, 3, 1).numpy(), atol=1e-5)


def test_traced_malformed_boxes_follow_torchvision():
  features, _, _ = _inputs(2)
  boxes = np.array([[10, 6, 2, 1], [4, 8, 6, 2]], np.float32)  # x2 < x1, y2 < y1
  indices = np.zeros(2, np.int32)
  pooled = jax.jit(ops.roi_pool, static_argnums=3)(features, boxes, indices, 2)
  aligned = jax.jit(ops.roi_align, static_argnums=(3, 4, 5, 6))(
      features, boxes, indices, 2, 1.0, -1, True)
  np.testing.assert_allclose(pooled, _roi_pool_loop(features, boxes, indices, 2, 2, 1.0),
                             atol=1e-6)
  assert np.array_equal(np.asarray(aligned), np.zeros_like(aligned))
  torchvision = pytest.importorskip("torchvision")
  theirs = torchvision.ops.roi_align(*_torch_inputs(features, boxes, indices), 2, 1.0, -1, False)
  ours = jax.jit(ops.roi_align, static_argnums=3)(features, boxes, indices, 2)
  np.testing.assert_allclose(ours, theirs.permute(0, 2, 3, 1).numpy(), atol=1e-5)


def test_gradients_reach_the_features():
  features, boxes, indices = _inputs(3)

  def total(f):
    return (ops.roi_align(f, boxes, indices, 2).sum() + ops.roi_pool(f, boxes, indices, 2).sum())

  grads = jax.jit(jax.grad(total))(jnp.asarray(features))
  assert np.isfinite(np.asarray(grads)).all() and np.abs(np.asarray(grads)).sum() > 0


def test_bad_input_raises_or_is_handled():
  features, boxes, indices = _inputs(4)
  with pytest.raises(UsageError, match="x2 < x1"):
    ops.roi_align(features, np.array([[5, 0, 1, 4]], np.float32), np.zeros(1, np.int32), 2)
  with pytest.raises(UsageError, match="batch_indices"):
    ops.roi_pool(features, boxes, np.full(10, 2, np.int32), 2)
  traced = jax.jit(ops.roi_align, static_argnums=3)(features, boxes, np.full(10, 5, np.int32), 2)
  assert np.array_equal(np.asarray(traced), np.zeros_like(traced))
  for op in (ops.roi_pool, ops.roi_align):
    empty = op(features, np.zeros((0, 4), np.float32), np.zeros((0,), np.int32), (2, 3))
    assert empty.shape == (0, 2, 3, 3)


def _axis_weights(start, bin_size, grid, bins, size):
  """float64 [bins, size] bilinear weights summed over each bin's points, vectorised."""
  weights = np.zeros((bins, size))
  points = np.arange(grid, dtype=np.float64)
  for p in range(bins):
    coord = start + p * bin_size + (points + 0.5) * bin_size / grid
    coord = coord[(coord >= -1.0) & (coord <= size)]
    coord = np.maximum(coord, 0.0)
    low = np.floor(coord).astype(np.int64)
    at_edge = low >= size - 1
    low[at_edge] = size - 1
    coord[at_edge] = low[at_edge]
    high = np.where(at_edge, size - 1, low + 1)
    np.add.at(weights[p], low, 1 - (coord - low))
    np.add.at(weights[p], high, coord - low)
  return weights


def _roi_align_separable(image, box, out_h, out_w):
  """roi_align (adaptive, aligned=False, scale 1) of one box by separable float64 sums."""
  x1, y1, x2, y2 = (float(v) for v in box)
  bin_h, bin_w = max(y2 - y1, 1.0) / out_h, max(x2 - x1, 1.0) / out_w
  grid_h, grid_w = math.ceil(bin_h), math.ceil(bin_w)
  rows = _axis_weights(y1, bin_h, grid_h, out_h, image.shape[0])
  cols = _axis_weights(x1, bin_w, grid_w, out_w, image.shape[1])
  return np.einsum("ph,hwc,qw->pqc", rows, image.astype(np.float64), cols) / (grid_h * grid_w)


def test_roi_align_visits_only_points_on_the_map_and_stays_exact():
  # 251 x 191 adaptive points per bin, more than the 2 * size + 48 visited: the window must
  # still hold every point that lands on the map. (Corners off the whole numbers keep points
  # off the map's edges -1 and size, where float32 rounding decides.)
  features, _, _ = _inputs(5)
  boxes = np.array([[-200.3, -150.2, 300.4, 230.1], [-3.2, -2.1, 480.3, 5.4], [8, 6, 9, 7]],
                   np.float32)
  indices = np.array([0, 1, 0], np.int32)
  align = jax.jit(ops.roi_align, static_argnums=(3, 4, 5, 6))
  for aligned in (False, True):
    ours = np.asarray(align(features, boxes, indices, 2, 1.0, -1, aligned))
    expected = _roi_align_loop(features, boxes, indices, 2, 2, 1.0, -1, aligned)
    np.testing.assert_allclose(ours, expected, atol=1e-5)
  # A 2^20-cell box: 2^19 x 2^19 points per bin, of which only a few land on the map, the
  # first of them ~1e5 points into its bin. Power-of-two sizes keep float32 exact here.
  x1, y1 = -2.0**18, -1e5
  box = np.array([[x1, y1, x1 + 2**20, y1 + 2**20]], np.float32)
  ours = np.asarray(align(features, box, np.zeros(1, np.int32), 2, 1.0, -1, False))
  np.testing.assert_allclose(ours[0], _roi_align_separable(features[0], box[0], 2, 2),
                             rtol=1e-5, atol=0)
  assert np.abs(ours[0, 0, 0]).min() > 0


def test_huge_boxes_take_bounded_time_and_stay_within_the_feature_range():
  rng = np.random.default_rng(6)
  features = rng.uniform(1, 2, (1, HEIGHT, WIDTH, 2)).astype(np.float32)
  boxes = np.array([[0, 0, 1e30, 1e30], [-1e30, -1e30, 1e30, 1e30], [-1e9, 0, 1e9, 3e38],
                    [0, 0, 1e6, 1e6], [-3e38, -3e38, 3e38, 3e38]], np.float32)
  indices = np.zeros(len(boxes), np.int32)
  align = jax.jit(ops.roi_align, static_argnums=(3, 4, 5, 6))
  pool = jax.jit(ops.roi_pool, static_argnums=(3, 4))
  for aligned in (False, True):
    align(features, boxes, indices, 3, 2.0, -1, aligned).block_until_ready()  # compile
    start = time.perf_counter()
    aligned_out = np.asarray(align(features, boxes, indices, 3, 2.0, -1, aligned))
    assert time.perf_counter() - start < 5.0
    # An average of samples, those off the map counting 0 (as torchvision): in [0, max].
    assert np.isfinite(aligned_out).all()
    assert aligned_out.min() >= 0 and aligned_out.max() <= features.max()
  pooled = np.array(pool(features, boxes, indices, 3, 2.0))
  # Every bin is the maximum over part of the map, or 0 where it misses the map.
  assert np.isin(pooled, np.append(features.ravel(), 0)).all()
  # Bin (0, 0) of a box starting at the origin covers the whole map, the other bins start
  # beyond it (an int32 overflow once made them cover it too).
  for k in (0, 3):
    np.testing.assert_array_equal(pooled[k, 0, 0], features[0].max(axis=(0, 1)))
    pooled[k, 0, 0] = 0
    np.testing.assert_array_equal(pooled[k], 0)


def test_constant_map_gives_one_inside_and_at_most_one_for_huge_boxes():
  features = np.ones((1, 8, 8, 1), np.float32)
  boxes = np.array([[1, 1, 6, 7], [0, 0, 1e30, 1e30], [0, 0, 1e6, 1e6]], np.float32)
  out = np.asarray(ops.roi_align(features, boxes, np.zeros(3, np.int32), 2))
  np.testing.assert_allclose(out[0], 1.0, rtol=1e-6)
  # Huge boxes average their few samples on the map with the many off it: 8 of 5e5 per axis.
  assert ((out >= 0) & (out <= 1)).all()
  np.testing.assert_allclose(out[2, 0, 0, 0], (8 / 5e5) ** 2, rtol=1e-5)
  np.testing.assert_array_equal(out[2, 1:], 0.0)


def test_roi_pool_takes_the_exact_maximum_of_integer_features():
  features, boxes, indices = _inputs(7)
  integers = np.round((features - features.min()) * 40).astype(np.uint8)
  pooled = ops.roi_pool(integers, boxes, indices, (3, 2), 1 / STRIDE)
  assert pooled.dtype == np.uint8
  expected = _roi_pool_loop(integers.astype(np.float32), boxes, indices, 3, 2, 1 / STRIDE)
  np.testing.assert_array_equal(np.asarray(pooled), expected)


@pytest.mark.parametrize("op, kwargs, message", [
    ("roi_align", dict(output_size=-2), "output_size must be an int >= 1"),
    ("roi_align", dict(output_size=2.5), "output_size must be an int or a pair"),
    ("roi_pool", dict(output_size=(2, 0)), "output_size must be an int >= 1"),
    ("roi_align", dict(batch_indices=np.zeros(10, np.float32)), "batch_indices must be integer"),
    ("roi_align", dict(sampling_ratio=2.5), "sampling_ratio must be an int"),
    ("roi_pool", dict(spatial_scale=0.0), "spatial_scale"),
    ("roi_align", dict(spatial_scale=float("nan")), "spatial_scale"),
    ("roi_pool", dict(roi_batch_size=0), "roi_batch_size"),
    ("roi_align", dict(features=np.zeros((1, 4, 4, 1), np.uint8)), "floating point"),
    ("roi_pool", dict(features=np.zeros((1, 4, 4, 1), bool)), "floating point or integer"),
])
def test_bad_arguments_raise_usage_errors(op, kwargs, message):
  features, boxes, _ = _inputs(8)
  arguments = dict(features=features, boxes=boxes, batch_indices=np.zeros(10, np.int32),
                   output_size=2)
  arguments.update(kwargs)
  with pytest.raises(UsageError, match=message):
    getattr(ops, op)(**arguments)
