"""roi_pool and roi_align against NumPy loops (torchvision's kernels) and torchvision.ops.

Boxes partly or wholly off the feature map are clamped to it first (cnnjax's documented rule,
deliberately unlike torchvision, which counts bins or samples off the map as 0): the loops
take `clamp=True` for that rule and `clamp=False` for torchvision's, and the two agree on
boxes on the map (`_on_map_for_pool`, `_on_map_for_align`).
"""

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


def _pool_corners(box, scale, height, width, clamp):
  x1, y1, x2, y2 = (_c_round(float(v) * scale) for v in box)
  if clamp:  # To the map's cells [0, W - 1] x [0, H - 1].
    x1, x2 = (min(max(v, 0), width - 1) for v in (x1, x2))
    y1, y2 = (min(max(v, 0), height - 1) for v in (y1, y2))
  return x1, y1, x2, y2


def _on_map_for_pool(boxes, scale, height=HEIGHT, width=WIDTH):
  """Boxes whose rounded corner cells lie on the map, where clamping changes nothing."""
  return np.array(
    [
      _pool_corners(b, scale, height, width, False) == _pool_corners(b, scale, height, width, True)
      for b in boxes
    ]
  )


def _roi_pool_loop(features, boxes, indices, out_h, out_w, scale, clamp=True):
  num_images, height, width, channels = features.shape
  out = np.zeros((len(boxes), out_h, out_w, channels), np.float32)
  for k, (box, image) in enumerate(zip(boxes, indices)):
    x1, y1, x2, y2 = _pool_corners(box, scale, height, width, clamp)
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
  return (
    (1 - ly) * (1 - lx) * image[y0, x0]
    + (1 - ly) * lx * image[y0, x1]
    + ly * (1 - lx) * image[y1, x0]
    + ly * lx * image[y1, x1]
  )


def _clamp_align_axis(start, end, size, aligned):
  """To [0, size] before the aligned offset; aligned=False RoIs, >= 1 cell, start <= size - 1."""
  offset = 0.5 if aligned else 0.0
  start, end = (min(max(v, -offset), size - offset) for v in (start, end))
  return (start if aligned else min(start, size - 1.0)), end


def _align_corners(box, scale, aligned, height, width, clamp):
  x1, y1, x2, y2 = (float(v) * scale - (0.5 if aligned else 0.0) for v in box)
  if clamp:
    x1, x2 = _clamp_align_axis(x1, x2, width, aligned)
    y1, y2 = _clamp_align_axis(y1, y2, height, aligned)
  return x1, y1, x2, y2


def _on_map_for_align(boxes, scale, aligned, height=HEIGHT, width=WIDTH):
  """Boxes that clamping leaves as they are: there cnnjax gives torchvision's results."""
  return np.array(
    [
      _align_corners(b, scale, aligned, height, width, False)
      == _align_corners(b, scale, aligned, height, width, True)
      for b in boxes
    ]
  )


def _roi_align_loop(
  features, boxes, indices, out_h, out_w, scale, sampling_ratio, aligned, clamp=True
):
  out = np.zeros((len(boxes), out_h, out_w, features.shape[-1]), np.float64)
  height, width = features.shape[1:3]
  for k, (box, image) in enumerate(zip(boxes, indices)):
    x1, y1, x2, y2 = _align_corners(box, scale, aligned, height, width, clamp)
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
  boxes[0, 2] = boxes[0, 0]  # zero width
  boxes[1, 3] = boxes[1, 1]  # zero height
  boxes[2] = boxes[3]  # identical pair
  boxes[4] = [size[0] + 3, size[1] + 3, size[0] + 9, size[1] + 6]  # outside the map
  boxes[5] = [-40, -30, size[0] + 30, size[1] + 50]  # far larger than the map
  indices = rng.integers(0, 2, 10).astype(np.int32)
  return features, boxes, indices


def _torch_inputs(features, boxes, indices):
  import torch

  rois = np.concatenate([indices[:, None].astype(np.float32), boxes], axis=1)
  return torch.tensor(features).permute(0, 3, 1, 2).contiguous(), torch.tensor(rois)


def _edge_boxes():
  """Boxes on the map, most touching its edges, in input pixels (STRIDE per cell)."""
  width, height = WIDTH * STRIDE, HEIGHT * STRIDE
  return np.array(
    [
      [0, 0, width, height],  # the whole image
      [0, 0, width - 1.2, height - 1.2],  # corners rounding to the last cells
      [width - 3, height - 5, width, height],
      [0, 2, 3, height],
      [2.5, 1.3, width - 1.1, height - 1.1],
      [6, 4, 6.5, 4.5],
      [1, 3, 11, 5],
    ],
    np.float32,
  )


def test_roi_pool_matches_loop_and_torchvision():
  features, boxes, indices = _inputs()
  boxes = np.concatenate([boxes, _edge_boxes()])
  indices = np.concatenate([indices, np.zeros(7, np.int32)])
  ours = np.asarray(
    jax.jit(ops.roi_pool, static_argnums=(3, 4))(features, boxes, indices, (3, 2), 1 / STRIDE)
  )
  np.testing.assert_allclose(
    ours, _roi_pool_loop(features, boxes, indices, 3, 2, 1 / STRIDE), atol=1e-6
  )
  # Boxes on the map keep torchvision's results (its kernel, as a loop, without clamping).
  on_map = _on_map_for_pool(boxes, 1 / STRIDE)
  assert on_map.sum() >= 4 and not on_map.all()
  unclamped = _roi_pool_loop(features, boxes, indices, 3, 2, 1 / STRIDE, clamp=False)
  np.testing.assert_allclose(ours[on_map], unclamped[on_map], atol=1e-6)
  torchvision = pytest.importorskip("torchvision")
  theirs = torchvision.ops.roi_pool(*_torch_inputs(features, boxes, indices), (3, 2), 1 / STRIDE)
  np.testing.assert_allclose(ours[on_map], theirs.permute(0, 2, 3, 1).numpy()[on_map], atol=1e-5)


@pytest.mark.parametrize("sampling_ratio,aligned", [(-1, False), (2, False), (0, True)])
def test_roi_align_matches_loop_and_torchvision(sampling_ratio, aligned):
  features, boxes, indices = _inputs(1)
  boxes = np.concatenate([boxes, _edge_boxes()])
  indices = np.concatenate([indices, np.ones(7, np.int32)])
  align = jax.jit(ops.roi_align, static_argnums=(3, 4, 5, 6))
  ours = np.asarray(align(features, boxes, indices, (3, 4), 1 / STRIDE, sampling_ratio, aligned))
  expected = _roi_align_loop(features, boxes, indices, 3, 4, 1 / STRIDE, sampling_ratio, aligned)
  np.testing.assert_allclose(ours, expected, atol=1e-5)
  # Boxes on the map (the whole image included) keep torchvision's results.
  on_map = _on_map_for_align(boxes, 1 / STRIDE, aligned)
  assert on_map.sum() >= 4 and on_map[-7] and not on_map.all()
  unclamped = _roi_align_loop(
    features, boxes, indices, 3, 4, 1 / STRIDE, sampling_ratio, aligned, clamp=False
  )
  np.testing.assert_allclose(ours[on_map], unclamped[on_map], atol=1e-5)
  torchvision = pytest.importorskip("torchvision")
  theirs = torchvision.ops.roi_align(
    *_torch_inputs(features, boxes, indices), (3, 4), 1 / STRIDE, sampling_ratio, aligned
  )
  np.testing.assert_allclose(ours[on_map], theirs.permute(0, 2, 3, 1).numpy()[on_map], atol=1e-5)


def test_traced_malformed_boxes_follow_torchvision():
  features, _, _ = _inputs(2)
  # x2 < x1, y2 < y1, with corners on the map (x1 = 10 or y1 = 8, as here before clamping
  # to the map, would start off it, where cnnjax deliberately differs from torchvision).
  boxes = np.array([[8, 6, 2, 1], [4, 6, 6, 2]], np.float32)
  indices = np.zeros(2, np.int32)
  pooled = jax.jit(ops.roi_pool, static_argnums=3)(features, boxes, indices, 2)
  aligned = jax.jit(ops.roi_align, static_argnums=(3, 4, 5, 6))(
    features, boxes, indices, 2, 1.0, -1, True
  )
  np.testing.assert_allclose(pooled, _roi_pool_loop(features, boxes, indices, 2, 2, 1.0), atol=1e-6)
  assert np.array_equal(np.asarray(aligned), np.zeros_like(aligned))
  torchvision = pytest.importorskip("torchvision")
  theirs = torchvision.ops.roi_align(*_torch_inputs(features, boxes, indices), 2, 1.0, -1, False)
  ours = jax.jit(ops.roi_align, static_argnums=3)(features, boxes, indices, 2)
  np.testing.assert_allclose(ours, theirs.permute(0, 2, 3, 1).numpy(), atol=1e-5)


def test_traced_nan_corners_give_zeros():
  features, _, _ = _inputs(2)
  boxes = np.array([[np.nan, 0, 3, 3], [1, 1, 5, 5]], np.float32)
  indices = np.zeros(2, np.int32)
  pooled = np.asarray(jax.jit(ops.roi_pool, static_argnums=3)(features, boxes, indices, 2))
  np.testing.assert_array_equal(pooled[0], 0.0)
  for sampling_ratio, aligned in [(-1, False), (2, True)]:
    out = np.asarray(
      jax.jit(ops.roi_align, static_argnums=(3, 4, 5, 6))(
        features, boxes, indices, 2, 1.0, sampling_ratio, aligned
      )
    )
    np.testing.assert_array_equal(out[0], 0.0)
    assert np.isfinite(out).all() and np.abs(out[1]).min() > 0


def test_gradients_reach_the_features():
  features, boxes, indices = _inputs(3)

  def total(f):
    return ops.roi_align(f, boxes, indices, 2).sum() + ops.roi_pool(f, boxes, indices, 2).sum()

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


def test_boxes_off_the_map_equal_their_clamped_boxes():
  # Boxes far larger than the map and boxes reaching past it: each gives what torchvision's
  # kernel gives for the box clamped to the map, and so what cnnjax gives for that box.
  features, _, _ = _inputs(5)
  boxes = np.array(
    [
      [-200.3, -150.2, 300.4, 230.1],
      [-3.2, -2.1, 480.3, 5.4],
      [8, 6, 9, 7],
      [8.6, 6.4, 8.9, 6.8],
      [-(2**18), -1e5, 2**20, 2**20],
      [-7, 2, -3, 5],
      [3, 40, 5, 60],
    ],
    np.float32,
  )
  indices = np.array([0, 1, 0, 1, 0, 1, 0], np.int32)
  align = jax.jit(ops.roi_align, static_argnums=(3, 4, 5, 6))
  for aligned in (False, True):
    ours = np.asarray(align(features, boxes, indices, 2, 1.0, -1, aligned))
    expected = _roi_align_loop(features, boxes, indices, 2, 2, 1.0, -1, aligned)
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    offset = 0.5 if aligned else 0.0
    clamped = np.array([_align_corners(b, 1.0, aligned, HEIGHT, WIDTH, True) for b in boxes])
    clamped = (clamped + offset).astype(np.float32)
    assert _on_map_for_align(clamped, 1.0, aligned).all()
    unclamped = _roi_align_loop(features, clamped, indices, 2, 2, 1.0, -1, aligned, clamp=False)
    np.testing.assert_allclose(ours, unclamped, atol=1e-5)
    np.testing.assert_allclose(
      ours, align(features, clamped, indices, 2, 1.0, -1, aligned), atol=1e-6
    )
  pooled = np.asarray(ops.roi_pool(features, boxes, indices, 2))
  cells = np.array([_pool_corners(b, 1.0, HEIGHT, WIDTH, True) for b in boxes], np.float32)
  np.testing.assert_array_equal(pooled, ops.roi_pool(features, cells, indices, 2))
  np.testing.assert_array_equal(
    pooled, _roi_pool_loop(features, cells, indices, 2, 2, 1.0, clamp=False)
  )


def test_huge_boxes_take_bounded_time_and_stay_within_the_feature_range():
  rng = np.random.default_rng(6)
  features = rng.uniform(1, 2, (1, HEIGHT, WIDTH, 2)).astype(np.float32)
  boxes = np.array(
    [
      [0, 0, 1e30, 1e30],
      [-1e30, -1e30, 1e30, 1e30],
      [-1e9, 0, 1e9, 3e38],
      [0, 0, 1e6, 1e6],
      [-3e38, -3e38, 3e38, 3e38],
    ],
    np.float32,
  )
  indices = np.zeros(len(boxes), np.int32)
  align = jax.jit(ops.roi_align, static_argnums=(3, 4, 5, 6))
  pool = jax.jit(ops.roi_pool, static_argnums=(3, 4))
  # Each box covers the whole map: clamped, it is the whole-map box.
  whole = np.array([[0, 0, WIDTH, HEIGHT]] * len(boxes), np.float32) / 2.0
  for aligned in (False, True):
    align(features, boxes, indices, 3, 2.0, -1, aligned).block_until_ready()  # compile
    start = time.perf_counter()
    aligned_out = np.asarray(align(features, boxes, indices, 3, 2.0, -1, aligned))
    assert time.perf_counter() - start < 5.0
    assert np.isfinite(aligned_out).all()
    assert aligned_out.min() >= features.min() and aligned_out.max() <= features.max()
    np.testing.assert_allclose(
      aligned_out, align(features, whole, indices, 3, 2.0, -1, aligned), atol=1e-6
    )
  pooled = np.array(pool(features, boxes, indices, 3, 2.0))
  # Every bin is the maximum over a part of the map; clamped, each box is the whole map.
  assert np.isin(pooled, features.ravel()).all()
  cells = np.array([[0, 0, WIDTH - 1, HEIGHT - 1]] * len(boxes), np.float32) / 2.0
  np.testing.assert_array_equal(pooled, pool(features, cells, indices, 3, 2.0))


def _huge_and_stray_boxes(height, width):
  """Boxes of 1e30, 1e9 and -1e30 cells and boxes wholly off each side of the map."""
  return np.array(
    [
      [0, 0, 1e30, 1e30],
      [-1e30, -1e30, 1e30, 1e30],
      [-1e9, -1e9, 1e9, 1e9],
      [0, 0, 1e9, 1e9],
      [-1e30, -1e30, -1e29, -1e29],
      [1e29, 1e29, 1e30, 1e30],
      [width + 3, 1, width + 9, 4],
      [-9, 1, -3, 4],
      [1, height + 2, 4, 3e38],
      [1, -3e38, 4, -0.5],
      [-1e30, 2, -1e30, 3],
      [width + 1, 2, width + 1, 2],
    ],
    np.float32,
  )


@pytest.mark.parametrize("height, width", [(8, 8), (7, 9)])
def test_huge_and_stray_boxes_on_a_constant_map_give_exactly_one(height, width):
  features = np.ones((1, height, width, 2), np.float32)
  boxes = _huge_and_stray_boxes(height, width)
  indices = np.zeros(len(boxes), np.int32)
  align = jax.jit(ops.roi_align, static_argnums=(3, 4, 5, 6))
  for aligned, sampling_ratio in [(False, -1), (False, 2), (True, 3), (True, -1)]:
    align(features, boxes, indices, (3, 2), 1.0, sampling_ratio, aligned).block_until_ready()
    start = time.perf_counter()
    out = np.asarray(align(features, boxes, indices, (3, 2), 1.0, sampling_ratio, aligned))
    print(
      f"roi_align(aligned={aligned}, sampling_ratio={sampling_ratio}) of "
      f"{len(boxes)} boxes: {time.perf_counter() - start:.4f} s after compiling"
    )
    if aligned and sampling_ratio <= 0:
      # Wholly off the map, an aligned box clamps to zero extent on the edge: adaptive
      # sampling then takes no samples and gives 0, as torchvision for any zero-size box.
      np.testing.assert_array_equal(out[:4], 1.0)
      np.testing.assert_array_equal(out[4:], 0.0)
    else:
      np.testing.assert_array_equal(out, 1.0)
  pooled = np.asarray(jax.jit(ops.roi_pool, static_argnums=3)(features, boxes, indices, (3, 2)))
  np.testing.assert_array_equal(pooled, 1.0)


@pytest.mark.parametrize("aligned", [False, True])
def test_boxes_wholly_off_the_map_give_its_edge(aligned):
  rng = np.random.default_rng(9)
  features = rng.normal(size=(1, HEIGHT, WIDTH, 2)).astype(np.float32)
  boxes = np.array(
    [
      [WIDTH + 3, 1, WIDTH + 9, 4],  # right of the map: its last column
      [1, HEIGHT + 2, 4, 1e30],
    ],  # below the map: its last row
    np.float32,
  )
  indices = np.zeros(2, np.int32)
  out = np.asarray(ops.roi_align(features, boxes, indices, (3, 2), 1.0, 2, aligned))
  # Along the other axis the box is on the map, so both equal a box on that edge.
  edge = np.array([[WIDTH - 1, 1, WIDTH, 4], [1, HEIGHT - 1, 4, HEIGHT]], np.float32)
  if aligned:
    edge = np.array([[WIDTH, 1, WIDTH, 4], [1, HEIGHT, 4, HEIGHT]], np.float32)
  np.testing.assert_allclose(
    out, ops.roi_align(features, edge, indices, (3, 2), 1.0, 2, aligned), atol=1e-6
  )
  np.testing.assert_allclose(out[0], np.broadcast_to(out[0, :, :1], out[0].shape), atol=1e-6)
  np.testing.assert_allclose(out[1], np.broadcast_to(out[1, :1], out[1].shape), atol=1e-6)
  np.testing.assert_allclose(
    out, _roi_align_loop(features, edge, indices, 3, 2, 1.0, 2, aligned, clamp=False), atol=1e-5
  )
  pooled = np.asarray(ops.roi_pool(features, boxes, indices, (3, 2)))
  cells = np.array([[WIDTH - 1, 1, WIDTH - 1, 4], [1, HEIGHT - 1, 4, HEIGHT - 1]], np.float32)
  np.testing.assert_array_equal(
    pooled, _roi_pool_loop(features, cells, indices, 3, 2, 1.0, clamp=False)
  )


def test_outputs_of_any_box_lie_within_the_range_of_the_map():
  rng = np.random.default_rng(10)
  features = rng.normal(size=(2, HEIGHT, WIDTH, 3)).astype(np.float32)
  features[1] = np.round(features[1])  # flat regions, where rounding could overshoot
  num_boxes = 400
  centre = rng.uniform(-1.5, 1.5, (num_boxes, 2)) * [WIDTH, HEIGHT]
  centre *= rng.choice([1, 10, 1e6, 1e30], (num_boxes, 1))
  size = rng.uniform(0, 2, (num_boxes, 2)) * [WIDTH, HEIGHT]
  size *= rng.choice([1e-2, 1, 1e3, 1e9, 1e30], (num_boxes, 1))
  boxes = np.concatenate([centre - size / 2, centre + size / 2], 1).astype(np.float32)
  boxes = np.concatenate([boxes, _huge_and_stray_boxes(HEIGHT, WIDTH)])
  boxes = np.clip(np.nan_to_num(boxes), -3e38, 3e38)
  indices = rng.integers(0, 2, len(boxes)).astype(np.int32)
  low = features.min(axis=(1, 2))[indices][:, None, None]
  high = features.max(axis=(1, 2))[indices][:, None, None]
  align = jax.jit(ops.roi_align, static_argnums=(3, 4, 5, 6))
  for aligned, sampling_ratio in [(False, -1), (False, 3), (True, 1), (True, -1)]:
    for scale in (1.0, 0.25):
      out = np.asarray(align(features, boxes, indices, (3, 4), scale, sampling_ratio, aligned))
      assert np.isfinite(out).all()
      if aligned and sampling_ratio <= 0:  # Zero-size boxes give 0 (see above).
        out = np.where(out == 0, low, out)
      assert ((out >= low) & (out <= high)).all()
  pooled = np.asarray(ops.roi_pool(features, boxes, indices, (3, 2), 0.5))
  assert ((pooled >= low) & (pooled <= high)).all()
  assert all(np.isin(pooled[k], features[indices[k]]).all() for k in range(len(boxes)))


def test_roi_pool_takes_the_exact_maximum_of_integer_features():
  features, boxes, indices = _inputs(7)
  integers = np.round((features - features.min()) * 40).astype(np.uint8)
  pooled = ops.roi_pool(integers, boxes, indices, (3, 2), 1 / STRIDE)
  assert pooled.dtype == np.uint8
  expected = _roi_pool_loop(integers.astype(np.float32), boxes, indices, 3, 2, 1 / STRIDE)
  np.testing.assert_array_equal(np.asarray(pooled), expected)


@pytest.mark.parametrize(
  "op, kwargs, message",
  [
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
  ],
)
def test_bad_arguments_raise_usage_errors(op, kwargs, message):
  features, boxes, _ = _inputs(8)
  arguments = dict(
    features=features, boxes=boxes, batch_indices=np.zeros(10, np.int32), output_size=2
  )
  arguments.update(kwargs)
  with pytest.raises(UsageError, match=message):
    getattr(ops, op)(**arguments)
