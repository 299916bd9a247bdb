"""MobileNet v1 (Howard et al. 2017) and MobileNet v2 (Sandler et al. 2018, torchvision's).

v1 stacks depthwise-separable convs (3x3 depthwise + 1x1 pointwise, each followed by BN
and ReLU); v2 stacks inverted residuals (1x1 expand, 3x3 depthwise, 1x1 linear project)
with ReLU6. Depthwise convs are `nn.Conv` with `feature_group_count` = channels.
Both accept any H, W >= 1: every strided conv is padded. MobileNet v2's Flax module
names follow torchvision's state-dict prefixes ("features_1/conv_0/conv" is
"features.1.conv.0.0").
"""

import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from cnnjax.errors import UsageError
from cnnjax.models import feature_maps
from cnnjax.models import layers
from cnnjax.models.registry import register

# MobileNet v1 body: (output channels, stride) of each depthwise-separable block.
V1_BLOCKS = (
  (64, 1),
  (128, 2),
  (128, 1),
  (256, 2),
  (256, 1),
  (512, 2),
  (512, 1),
  (512, 1),
  (512, 1),
  (512, 1),
  (512, 1),
  (1024, 2),
  (1024, 1),
)
# MobileNet v2 body: (expansion t, output channels c, repeats n, first stride s).
V2_BLOCKS = (
  (1, 16, 1, 1),
  (6, 24, 2, 2),
  (6, 32, 3, 2),
  (6, 64, 4, 2),
  (6, 96, 3, 1),
  (6, 160, 3, 2),
  (6, 320, 1, 1),
)


def make_divisible(value: float, divisor: int = 8) -> int:
  """Rounds `value` to the nearest multiple of `divisor`, never more than 10% down."""
  rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
  if rounded < 0.9 * value:
    rounded += divisor
  return rounded


def _check_alpha(alpha: float) -> None:
  if alpha <= 0:
    raise UsageError(f"MobileNet width multiplier alpha must be positive, got {alpha}.")


class ConvBN(nn.Module):
  """Bias-free conv (symmetric PyTorch padding), BN, then `activation` (None: linear)."""

  features: int
  kernel_size: int
  conv: layers.ModuleDef
  norm: layers.ModuleDef
  stride: int = 1
  groups: int = 1
  activation: Callable[[jnp.ndarray], jnp.ndarray] | None = nn.relu

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """x: [N, H, W, C] -> [N, ceil(H / stride), ceil(W / stride), features]."""
    pad = self.kernel_size // 2
    x = self.conv(
      self.features,
      (self.kernel_size, self.kernel_size),
      (self.stride, self.stride),
      padding=[(pad, pad), (pad, pad)],
      feature_group_count=self.groups,
      name="conv",
    )(x)
    x = self.norm(name="bn")(x)
    return x if self.activation is None else self.activation(x)


class MobileNetV1(nn.Module):
  """MobileNet v1 with width multiplier `alpha` (channels int(c * alpha), as Keras).

  `blocks` lists (output channels, stride) of each depthwise-separable block.

  Feature maps (`stages`, see `cnnjax.models.feature_maps`): "conv1", then "block1" ..
  f"block{len(blocks)}", each block's output (its pointwise conv after BN and ReLU).
  """

  num_classes: int | None = 1000
  alpha: float = 1.0
  blocks: Sequence[tuple[int, int]] = V1_BLOCKS
  dtype: layers.Dtype = jnp.float32
  axis_name: str | None = None

  @nn.nowrap
  def feature_names(self) -> tuple[str, ...]:
    """The maps `stages` can name, in network order."""
    return ("conv1",) + tuple(f"block{i + 1}" for i in range(len(self.blocks)))

  @nn.compact
  def __call__(
    self, x: jnp.ndarray, train: bool = False, *, stages: feature_maps.Stages = None
  ) -> jnp.ndarray | dict[str, jnp.ndarray]:
    """x: [N, H, W, C] -> logits [N, num_classes], or features [N, D] if num_classes is None.

    With `stages` (names from `feature_names()`), {name: [N, h, w, C]} of those maps instead.
    """
    taps = feature_maps.Taps(self, stages)
    _check_alpha(self.alpha)
    conv = functools.partial(
      nn.Conv, use_bias=False, kernel_init=layers.kaiming_normal_fan_out, dtype=self.dtype
    )
    conv_bn = functools.partial(
      ConvBN, conv=conv, norm=layers.batch_norm(train, self.axis_name, self.dtype)
    )

    def width(channels: int) -> int:
      return max(1, int(channels * self.alpha))

    x = taps("conv1", conv_bn(width(32), 3, stride=2, name="conv1")(x))
    for i, (channels, stride) in enumerate(self.blocks):
      x = conv_bn(x.shape[-1], 3, stride=stride, groups=x.shape[-1], name=f"block{i + 1}_dw")(x)
      x = taps(f"block{i + 1}", conv_bn(width(channels), 1, name=f"block{i + 1}_pw")(x))
    x = layers.GlobalAvgPool(name="avgpool")(x)
    if self.num_classes is not None:
      x = nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(x)
    return taps.output(x)


class InvertedResidual(nn.Module):
  """1x1 expand (skipped when expansion is 1), 3x3 depthwise, 1x1 linear projection.

  The input is added back when the block keeps the shape (stride 1, same channels).
  """

  features: int
  stride: int
  expansion: int
  conv_bn: layers.ModuleDef

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """x: [N, H, W, C] -> [N, ceil(H / stride), ceil(W / stride), features]."""
    in_features = x.shape[-1]
    hidden = int(round(in_features * self.expansion))
    y = x
    index = 0  # torchvision numbers the sub-layers of `conv` consecutively.
    if self.expansion != 1:
      y = self.conv_bn(hidden, 1, activation=nn.relu6, name=f"conv_{index}")(y)
      index += 1
    y = self.conv_bn(
      hidden, 3, stride=self.stride, groups=hidden, activation=nn.relu6, name=f"conv_{index}"
    )(y)
    y = self.conv_bn(self.features, 1, activation=None, name=f"conv_{index + 1}")(y)
    if self.stride == 1 and in_features == self.features:
      return x + y
    return y


class MobileNetV2(nn.Module):
  """torchvision's MobileNet v2; `alpha` scales channels, rounded by `make_divisible`.

  `blocks` lists (expansion, output channels, repeats, first stride) of each stage,
  as torchvision's `inverted_residual_setting`.

  Feature maps (`stages`, see `cnnjax.models.feature_maps`): "features_0" .. "features_18"
  with the default blocks, the output of each of torchvision's `features.0` .. modules.
  """

  num_classes: int | None = 1000
  alpha: float = 1.0
  blocks: Sequence[tuple[int, int, int, int]] = V2_BLOCKS
  last_channel: int = 1280
  dropout_rate: float = 0.2
  dtype: layers.Dtype = jnp.float32
  axis_name: str | None = None

  @nn.nowrap
  def feature_names(self) -> tuple[str, ...]:
    """The maps `stages` can name: the stem, each inverted residual, the last 1x1 conv."""
    count = 2 + sum(repeats for _, _, repeats, _ in self.blocks)
    return tuple(f"features_{i}" for i in range(count))

  @nn.compact
  def __call__(
    self, x: jnp.ndarray, train: bool = False, *, stages: feature_maps.Stages = None
  ) -> jnp.ndarray | dict[str, jnp.ndarray]:
    """x: [N, H, W, C] -> logits [N, num_classes], or features [N, D] if num_classes is None.

    With `stages` (names from `feature_names()`), {name: [N, h, w, C]} of those maps instead.
    """
    taps = feature_maps.Taps(self, stages)
    _check_alpha(self.alpha)
    conv = functools.partial(
      nn.Conv, use_bias=False, kernel_init=layers.kaiming_normal_fan_out, dtype=self.dtype
    )
    conv_bn = functools.partial(
      ConvBN, conv=conv, norm=layers.batch_norm(train, self.axis_name, self.dtype)
    )

    x = conv_bn(
      make_divisible(32 * self.alpha), 3, stride=2, activation=nn.relu6, name="features_0"
    )(x)
    x = taps("features_0", x)
    index = 1
    for expansion, channels, repeats, first_stride in self.blocks:
      for j in range(repeats):
        x = InvertedResidual(
          make_divisible(channels * self.alpha),
          first_stride if j == 0 else 1,
          expansion,
          conv_bn,
          name=f"features_{index}",
        )(x)
        x = taps(f"features_{index}", x)
        index += 1
    x = conv_bn(
      make_divisible(self.last_channel * max(1.0, self.alpha)),
      1,
      activation=nn.relu6,
      name=f"features_{index}",
    )(x)
    x = taps(f"features_{index}", x)
    x = layers.GlobalAvgPool(name="avgpool")(x)
    if self.num_classes is not None:
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      x = nn.Dense(
        self.num_classes,
        kernel_init=nn.initializers.normal(0.01),
        dtype=self.dtype,
        name="classifier",
      )(x)
    return taps.output(x)


register("mobilenet_v1", MobileNetV1)
register("mobilenet_v2", MobileNetV2)
