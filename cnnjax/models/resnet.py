"""ResNets: torchvision's ImageNet ResNet-18..152 (v1.5) and the CIFAR ResNet-20..110.

One `ResNet` class covers both. ImageNet variants use a 7x7/2 stem with a 3x3/2 max pool
and projection shortcuts (He et al. option B); CIFAR variants (He et al. 2016, sec. 4.2)
use a 3x3 stem at 16 channels, three stages of 16/32/64 and parameter-free shortcuts
(option A: stride-2 subsampling plus zero channels).

Flax module names follow torchvision's state-dict prefixes ("layer1_0/conv1" is
"layer1.0.conv1"), so `cnnjax.convert` maps them one to one.
"""

import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from cnnjax.errors import UsageError
from cnnjax.models import feature_maps
from cnnjax.models import layers
from cnnjax.models.registry import register

STEMS = ("imagenet", "cifar")
SHORTCUTS = ("projection", "zero_pad")
NORMS = ("batch", "group")


def _pad(kernel_size: int) -> list[tuple[int, int]]:
  """PyTorch's symmetric padding that keeps H x W at stride 1."""
  return [(kernel_size // 2, kernel_size // 2)] * 2


class Shortcut(nn.Module):
  """The identity branch when a block changes shape.

  "projection": 1x1 strided conv + BN (option B, torchvision's `downsample`);
  "zero_pad": stride-`stride` subsampling and zero channels appended (option A, no parameters).
  """

  features: int
  stride: int
  kind: str
  conv: layers.ModuleDef
  norm: layers.ModuleDef

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """x: [N, H, W, C] -> [N, ceil(H / stride), ceil(W / stride), features]."""
    if self.kind == "projection":
      x = self.conv(self.features, (1, 1), (self.stride, self.stride), name="conv")(x)
      return self.norm(name="bn")(x)
    x = x[:, :: self.stride, :: self.stride, :]
    return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, self.features - x.shape[-1])))


class BasicBlock(nn.Module):
  """Two 3x3 convs; output channels = `features`."""

  features: int
  stride: int
  conv: layers.ModuleDef
  norm: layers.ModuleDef
  shortcut: layers.ModuleDef
  zero_init_residual: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """x: [N, H, W, C] -> [N, ceil(H / stride), ceil(W / stride), features]."""
    residual = x
    y = self.conv(self.features, (3, 3), (self.stride, self.stride), padding=_pad(3), name="conv1")(
      x
    )
    y = nn.relu(self.norm(name="bn1")(y))
    y = self.conv(self.features, (3, 3), padding=_pad(3), name="conv2")(y)
    last_scale = nn.initializers.zeros if self.zero_init_residual else nn.initializers.ones
    y = self.norm(scale_init=last_scale, name="bn2")(y)
    if self.stride != 1 or x.shape[-1] != self.features:
      residual = self.shortcut(self.features, self.stride, name="downsample")(x)
    return nn.relu(y + residual)


class Bottleneck(nn.Module):
  """1x1 reduce, 3x3, 1x1 expand by 4; output channels = 4 * `features`.

  v1.5 (torchvision) strides the 3x3 conv; `stride_in_1x1` strides the first 1x1 (v1).
  """

  features: int
  stride: int
  conv: layers.ModuleDef
  norm: layers.ModuleDef
  shortcut: layers.ModuleDef
  zero_init_residual: bool = False
  stride_in_1x1: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """x: [N, H, W, C] -> [N, ceil(H / stride), ceil(W / stride), 4 * features]."""
    out_features = 4 * self.features
    stride_1x1, stride_3x3 = (self.stride, 1) if self.stride_in_1x1 else (1, self.stride)
    residual = x
    y = self.conv(self.features, (1, 1), (stride_1x1, stride_1x1), name="conv1")(x)
    y = nn.relu(self.norm(name="bn1")(y))
    y = self.conv(self.features, (3, 3), (stride_3x3, stride_3x3), padding=_pad(3), name="conv2")(y)
    y = nn.relu(self.norm(name="bn2")(y))
    y = self.conv(out_features, (1, 1), name="conv3")(y)
    last_scale = nn.initializers.zeros if self.zero_init_residual else nn.initializers.ones
    y = self.norm(scale_init=last_scale, name="bn3")(y)
    if self.stride != 1 or x.shape[-1] != out_features:
      residual = self.shortcut(out_features, self.stride, name="downsample")(x)
    return nn.relu(y + residual)


class ResNet(nn.Module):
  """ResNet for [N, H, W, 3] images; any H, W >= 1 works (every downsampling op is padded).

  Stage i has `stage_sizes[i]` blocks of width `width * 2**i`; all stages after the
  first halve H and W. `stem`: "imagenet" (7x7/2 conv, 3x3/2 max pool) or "cifar"
  (3x3/1 conv). `shortcut`: "projection" (option B) or "zero_pad" (option A).
  `stride_in_1x1` strides the first 1x1 conv of bottlenecks (ResNet v1) instead of the
  3x3 (v1.5); `zero_init_residual` zeroes the scale of each block's last BN, so every
  residual branch starts at zero. `norm`: "batch" (torchvision's BatchNorm) or "group"
  (GroupNorm of `norm_groups` groups, which must divide every stage's width: each example
  normalised alone, so gradient caching's chunks give the whole batch's gradient exactly).

  Feature maps (`stages`, see `cnnjax.models.feature_maps`): "layer1" .. "layerK", the
  output of each stage, torchvision's `layer1` ..; the last is the global pool's input.
  """

  stage_sizes: Sequence[int]
  block: type[nn.Module]
  num_classes: int | None = 1000
  width: int = 64
  stem: str = "imagenet"
  shortcut: str = "projection"
  stride_in_1x1: bool = False
  zero_init_residual: bool = False
  norm: str = "batch"
  norm_groups: int = 32
  dtype: layers.Dtype = jnp.float32
  axis_name: str | None = None

  @nn.nowrap
  def feature_names(self) -> tuple[str, ...]:
    """The maps `stages` can name: "layer1" .. f"layer{len(stage_sizes)}"."""
    return tuple(f"layer{i + 1}" for i in range(len(self.stage_sizes)))

  @nn.compact
  def __call__(
    self, x: jnp.ndarray, train: bool = False, *, stages: feature_maps.Stages = None
  ) -> jnp.ndarray | dict[str, jnp.ndarray]:
    """x: [N, H, W, C] -> logits [N, num_classes], or features [N, D] if num_classes is None.

    With `stages` (names from `feature_names()`), {name: [N, h, w, C]} of those maps instead.
    """
    taps = feature_maps.Taps(self, stages)
    if self.stem not in STEMS:
      raise UsageError(f"ResNet stem must be one of {STEMS}, got {self.stem!r}.")
    if self.shortcut not in SHORTCUTS:
      raise UsageError(f"ResNet shortcut must be one of {SHORTCUTS}, got {self.shortcut!r}.")
    conv = functools.partial(
      nn.Conv,
      use_bias=False,
      padding="VALID",
      kernel_init=layers.kaiming_normal_fan_out,
      dtype=self.dtype,
    )
    if self.norm not in NORMS:
      raise UsageError(f"ResNet norm must be one of {NORMS}, got {self.norm!r}.")
    if self.norm == "group" and self.width % self.norm_groups:
      raise UsageError(
        f"ResNet norm_groups={self.norm_groups} must divide width={self.width}; "
        "choose a divisor of the width."
      )
    if self.norm == "group":
      norm = layers.group_norm(self.norm_groups, self.dtype)
    else:
      norm = layers.batch_norm(train, self.axis_name, self.dtype)
    shortcut = functools.partial(Shortcut, kind=self.shortcut, conv=conv, norm=norm)
    block = functools.partial(
      self.block,
      conv=conv,
      norm=norm,
      shortcut=shortcut,
      zero_init_residual=self.zero_init_residual,
    )
    if self.block is Bottleneck:
      block = functools.partial(block, stride_in_1x1=self.stride_in_1x1)

    if self.stem == "imagenet":
      x = conv(self.width, (7, 7), (2, 2), padding=_pad(7), name="conv1")(x)
      x = nn.relu(norm(name="bn1")(x))
      x = layers.MaxPool(3, 2, padding=1, name="maxpool")(x)
    else:
      x = conv(self.width, (3, 3), padding=_pad(3), name="conv1")(x)
      x = nn.relu(norm(name="bn1")(x))
    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        stride = 2 if i > 0 and j == 0 else 1
        x = block(self.width * 2**i, stride, name=f"layer{i + 1}_{j}")(x)
      x = taps(f"layer{i + 1}", x)
    x = layers.GlobalAvgPool(name="avgpool")(x)
    if self.num_classes is not None:
      x = nn.Dense(
        self.num_classes, kernel_init=layers.torch_linear_init, dtype=self.dtype, name="fc"
      )(x)
    return taps.output(x)


IMAGENET_STAGES = {
  "resnet18": ((2, 2, 2, 2), BasicBlock),
  "resnet34": ((3, 4, 6, 3), BasicBlock),
  "resnet50": ((3, 4, 6, 3), Bottleneck),
  "resnet101": ((3, 4, 23, 3), Bottleneck),
  "resnet152": ((3, 8, 36, 3), Bottleneck),
}
CIFAR_DEPTHS = (20, 32, 44, 56, 110)

for _name, (_stages, _block) in IMAGENET_STAGES.items():
  register(_name, functools.partial(ResNet, stage_sizes=_stages, block=_block))
for _depth in CIFAR_DEPTHS:
  # depth = 6n + 2: n basic blocks per stage, three stages.
  register(
    f"resnet{_depth}",
    functools.partial(
      ResNet,
      stage_sizes=((_depth - 2) // 6,) * 3,
      block=BasicBlock,
      num_classes=10,
      width=16,
      stem="cifar",
      shortcut="zero_pad",
    ),
    input_shape=(32, 32, 3),
  )
