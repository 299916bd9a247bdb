"""Shared layers: AvgPool's PyTorch/Caffe ceil mode against NumPy and torch, flatten order."""

import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.models import layers


def _reference_avg_pool(
  x: np.ndarray, window: int, stride: int, padding: int, ceil_mode: bool
) -> np.ndarray:
  """PyTorch's AvgPool2d (count_include_pad=True) on NHWC, one output position at a time."""
  _, h, w, _ = x.shape

  def out_size(size):
    span = size + 2 * padding - window
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    # A last window starting inside the right padding is dropped.
    return out - 1 if ceil_mode and (out - 1) * stride >= size + padding else out

  padded = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  y = np.zeros((x.shape[0], out_size(h), out_size(w), x.shape[3]))
  for i in range(y.shape[1]):
    for j in range(y.shape[2]):
      # Padded coordinates: a window is cut where the padding ends and divided by what is left.
      top, left = i * stride, j * stride
      bottom, right = min(top + window, h + 2 * padding), min(left + window, w + 2 * padding)
      y[:, i, j] = padded[:, top:bottom, left:right].sum((1, 2)) / ((bottom - top) * (right - left))
  return y


def _pool(x: np.ndarray, *args, **kwargs) -> np.ndarray:
  return np.asarray(layers.AvgPool(*args, **kwargs).apply({}, jnp.asarray(x)))


@pytest.mark.parametrize(
  "size, window, stride, padding, ceil_mode",
  [
    (8, 3, 2, 0, True),  # Last window overhangs by one pixel: divided by 3 x 2 at the edge.
    (16, 3, 2, 0, True),  # NiN's pool2 on CIFAR: 16 -> 8.
    (9, 3, 2, 0, True),  # Fits exactly: ceil and floor agree.
    (6, 3, 2, 1, True),  # Overhang past the padding; the padding itself still counts.
    (5, 2, 2, 1, True),  # The last window would start in the padding and is dropped.
    (14, 5, 3, 0, True),  # GoogLeNet paper's aux pool: 14 -> 4.
    (7, 5, 3, 0, True),
    (7, 2, 2, 0, False),
    (6, 3, 2, 1, False),
  ],
)
def test_avg_pool_matches_the_reference(size, window, stride, padding, ceil_mode):
  x = np.random.default_rng(0).normal(size=(2, size, size + 1, 3)).astype(np.float32)
  want = _reference_avg_pool(x, window, stride, padding, ceil_mode)
  got = _pool(x, window, stride, padding, ceil_mode=ceil_mode)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_ceil_mode_without_padding_averages_only_pixels_in_the_image():
  # As Caffe's AVE pooling with pad 0: a constant image stays constant, edges included.
  got = _pool(np.ones((1, 8, 8, 1), np.float32), 3, 2, ceil_mode=True)
  assert got.shape == (1, 4, 4, 1)
  np.testing.assert_array_equal(got, 1.0)


@pytest.mark.parametrize("size", [7, 8, 16, 17])
def test_ceil_mode_matches_torch(size):
  torch = pytest.importorskip("torch")
  x = np.random.default_rng(0).normal(size=(2, 3, size, size + 2)).astype(np.float32)
  with torch.no_grad():
    want = torch.nn.AvgPool2d(3, 2, ceil_mode=True)(torch.from_numpy(x)).numpy()
  got = _pool(x.transpose(0, 2, 3, 1), 3, 2, ceil_mode=True).transpose(0, 3, 1, 2)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_bfloat16_pooling_keeps_the_dtype():
  x = jnp.ones((1, 8, 8, 2), jnp.bfloat16)
  y = layers.AvgPool(3, 2, ceil_mode=True).apply({}, x)
  assert y.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(y, np.float32), 1.0)


def test_flatten_nchw_uses_torchs_order():
  x = np.arange(2 * 2 * 3 * 4).reshape(2, 2, 3, 4)  # [N, H, W, C]
  np.testing.assert_array_equal(
    layers.flatten_nchw(jnp.asarray(x)), x.transpose(0, 3, 1, 2).reshape(2, -1)
  )
