"""Pieces shared by the model families: pooling with torchvision's semantics, BatchNorm with
torch's running-variance update and its partials, torch's initialisers and flatten order,
and the type aliases of module fields.

Pooling is written as Modules (not bare functions) so that `cnnjax summary` sees each pool
as a layer with a kernel and a stride when it counts receptive fields.
"""

import functools
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.errors import UsageError

Dtype = Any
# A Module class or a functools.partial of one, passed to a parent that builds the layers.
ModuleDef = Callable[..., nn.Module]

# torchvision's conv init for VGG, ResNet and MobileNet: kaiming_normal_(mode="fan_out",
# nonlinearity="relu"), untruncated.
kaiming_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# torch.nn.Linear's default weight init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_linear_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def flatten_nchw(x: jnp.ndarray) -> jnp.ndarray:
  """[N, H, W, C] -> [N, C * H * W] in torch's flatten order, so torch's dense weights load."""
  return jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)


class BatchNorm(nn.BatchNorm):
  """flax.linen.BatchNorm whose running variance is updated as torch's: from the unbiased
  batch variance.

  The update of `batch_stats/var` becomes momentum * var + (1 - momentum) * batch_var *
  n / (n - 1), n the values each channel's statistics average over: the input's size on
  the reduction axes times the devices of `axis_name` (of one group of
  `axis_index_groups`). Under GSPMD jit with no axis name the input already is the global
  batch. Everything else is flax's: outputs (training normalises with the biased batch
  variance, as torch does), the running mean, the variables and their paths.
  """

  @nn.compact
  def __call__(self, x: jnp.ndarray, use_running_average: bool | None = None) -> jnp.ndarray:
    """Normalises x with its batch statistics (training) or the running ones.

    No `mask`, unlike flax's: torch has none, and n would depend on the data.

    Args:
      x: [..., C, ...] with the features on `axis`, e.g. [N, H, W, C] or [N, C].
      use_running_average: as flax's; given here or to the constructor, not both.

    Returns:
      The normalised x, the same shape.

    Raises:
      UsageError: training on a single value per channel (n = 1), as torch raises.
    """
    train = not nn.merge_param("use_running_average", self.use_running_average, use_running_average)
    updating = train and not self.is_initializing()
    if updating:
      features = np.atleast_1d(self.axis) % x.ndim
      n = math.prod(size for axis, size in enumerate(x.shape) if axis not in features)
      if self.axis_name is not None:
        groups = self.axis_index_groups
        n *= len(groups[0]) if groups is not None else jax.lax.axis_size(self.axis_name)
      if n == 1:
        layer = " ".join(("BatchNorm", "/".join(self.path))).strip()
        raise UsageError(
          f"{layer} needs more than 1 value per channel in training, got input {x.shape}; "
          "train on more examples per device, or average the statistics over devices "
          "(axis_name, global_bn)."
        )
      # Flax starts the variance at ones when an apply creates it.
      old_var = self.get_variable("batch_stats", "var", 1.0)
    # The undecorated method: through super() flax's method wrapper would run twice, and
    # capture_intermediates and intercept_methods would see every BatchNorm called twice.
    y = nn.BatchNorm.__call__.__wrapped__(self, x, use_running_average)
    if updating:
      var = self.get_variable("batch_stats", "var")
      # var - momentum * old_var is flax's (1 - momentum) * batch_var: adding 1 / (n - 1)
      # of it scales that term by n / (n - 1).
      self.put_variable("batch_stats", "var", var + (var - self.momentum * old_var) / (n - 1))
    return y


def batch_norm(
  train: bool,
  axis_name: str | None = None,
  dtype: Dtype = jnp.float32,
  epsilon: float = 1e-5,
  **kwargs,
) -> functools.partial:
  """BatchNorm as torchvision's: eps 1e-5, torch momentum 0.1 (= Flax 0.9) and the running
  variance updated from the unbiased batch variance (n - 1).

  With `axis_name` set, batch statistics are averaged over that named device axis. Under a
  bfloat16 `dtype` the statistics, running averages and normalisation stay float32 (flax's
  `force_float32_reductions`); only the output is rounded to `dtype`.
  """
  return functools.partial(
    BatchNorm,
    use_running_average=not train,
    momentum=0.9,
    epsilon=epsilon,
    axis_name=axis_name,
    dtype=dtype,
    **kwargs,
  )


def group_norm(
  num_groups: int = 32, dtype: Dtype = jnp.float32, epsilon: float = 1e-5
) -> functools.partial:
  """GroupNorm (Wu & He 2018; 32 groups, torch's eps 1e-5): statistics of each example alone.

  What a model offers beside BatchNorm when examples must not see each other, e.g. gradient
  caching's chunks (`config.micro_batch_size`) or batches of one per device. No batch_stats.
  """
  return functools.partial(nn.GroupNorm, num_groups=num_groups, epsilon=epsilon, dtype=dtype)


def _ceil_pool_padding(size: int, window: int, stride: int, padding: int) -> tuple[int, int]:
  """(low, high) padding giving PyTorch's ceil_mode output size along one axis."""
  out = math.ceil((size + 2 * padding - window) / stride) + 1
  # PyTorch drops a last window that would start entirely inside the right padding.
  if (out - 1) * stride >= size + padding:
    out -= 1
  high = max((out - 1) * stride + window - size - padding, padding)
  return padding, high


class MaxPool(nn.Module):
  """Max pooling over NHWC with symmetric `padding` and optional PyTorch `ceil_mode`.

  Padded positions never win the max (they are -inf).
  """

  window: int
  stride: int
  padding: int = 0
  ceil_mode: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """x: [N, H, W, C] -> [N, H', W', C]."""
    if self.ceil_mode:
      pads = [_ceil_pool_padding(d, self.window, self.stride, self.padding) for d in x.shape[1:3]]
    else:
      pads = [(self.padding, self.padding)] * 2
    return nn.max_pool(x, (self.window, self.window), (self.stride, self.stride), padding=pads)


def _avg_pool_divisors(size: int, out: int, window: int, stride: int, padding: int) -> np.ndarray:
  """[out] divisors of PyTorch's count_include_pad average along one axis.

  Each window counts its taps inside the input and its symmetric padding; the part of a
  ceil-mode window that overhangs past the padding does not count (Caffe's AVE pooling too).
  """
  starts = np.arange(out) * stride - padding
  return np.minimum(starts + window, size + padding) - starts


class AvgPool(nn.Module):
  """Average pooling over NHWC with symmetric `padding` and optional PyTorch `ceil_mode`.

  As PyTorch's default (count_include_pad=True), zero padding counts in the mean; a
  ceil-mode window overhanging the padding is divided only by its taps inside input and
  padding, so with padding 0 it averages the pixels it covers.
  """

  window: int
  stride: int
  padding: int = 0
  ceil_mode: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """x: [N, H, W, C] -> [N, H', W', C]."""
    if self.ceil_mode:
      pads = [_ceil_pool_padding(d, self.window, self.stride, self.padding) for d in x.shape[1:3]]
    else:
      pads = [(self.padding, self.padding)] * 2
    sums = nn.pool(
      x, 0.0, jax.lax.add, (self.window, self.window), (self.stride, self.stride), pads
    )
    rows, cols = (
      _avg_pool_divisors(size, out, self.window, self.stride, self.padding)
      for size, out in zip(x.shape[1:3], sums.shape[1:3])
    )
    return sums / jnp.asarray(np.outer(rows, cols)[:, :, None], x.dtype)


def _adaptive_pool_matrix(size: int, out: int) -> np.ndarray:
  """[out, size] averaging matrix: bin i covers [floor(i*size/out), ceil((i+1)*size/out))."""
  matrix = np.zeros((out, size), np.float32)
  for i in range(out):
    start, stop = (i * size) // out, -((-(i + 1) * size) // out)
    matrix[i, start:stop] = 1.0 / (stop - start)
  return matrix


class AdaptiveAvgPool(nn.Module):
  """PyTorch's AdaptiveAvgPool2d: any H x W in, `output_size` x `output_size` out."""

  output_size: int

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """x: [N, H, W, C] -> [N, output_size, output_size, C]."""
    _, h, w, _ = x.shape
    if (h, w) == (self.output_size, self.output_size):
      return x
    rows = jnp.asarray(_adaptive_pool_matrix(h, self.output_size), x.dtype)
    cols = jnp.asarray(_adaptive_pool_matrix(w, self.output_size), x.dtype)
    return jnp.einsum("oh,nhwc,pw->nopc", rows, x, cols)


class GlobalAvgPool(nn.Module):
  """Mean over the spatial axes: [N, H, W, C] -> [N, C]."""

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    return jnp.mean(x, axis=(1, 2))


def require_min_size(x: jnp.ndarray, min_size: int, model: str) -> None:
  """Raises UsageError at trace time when x's H or W is below `min_size` pixels.

  x: [N, H, W, C]. Checked before any compilation because shapes are static.
  """
  h, w = x.shape[1:3]
  if min(h, w) < min_size:
    raise UsageError(
      f"{model} needs inputs of at least {min_size}x{min_size} pixels, got {h}x{w}; "
      f"resize or pad the images to {min_size}x{min_size} or larger."
    )
