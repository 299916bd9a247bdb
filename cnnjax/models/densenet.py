"""DenseNet-121/161/169/201 as torchvision builds them (Huang et al. 2017, DenseNet-BC).

Each dense layer is BN-ReLU-1x1 conv (to `bn_size * growth_rate`) then BN-ReLU-3x3 conv
(to `growth_rate`), and its output is concatenated to its input. Transitions halve the
channels with a 1x1 conv and H, W with a 2x2 average pool. Flax module names follow
torchvision's state-dict prefixes ("denseblock1_denselayer1/norm1" is
"features.denseblock1.denselayer1.norm1").
"""

import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from cnnjax.models import feature_maps
from cnnjax.models import layers
from cnnjax.models.registry import register

# torchvision: kaiming_normal_ with its defaults (fan_in, ReLU gain), untruncated.
conv_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


class DenseLayer(nn.Module):
  """BN-ReLU-1x1 conv-BN-ReLU-3x3 conv; appends `growth_rate` channels to its input."""

  growth_rate: int
  bn_size: int
  conv: layers.ModuleDef
  norm: layers.ModuleDef

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """x: [N, H, W, C] -> [N, H, W, C + growth_rate]."""
    y = nn.relu(self.norm(name="norm1")(x))
    y = self.conv(self.bn_size * self.growth_rate, (1, 1), name="conv1")(y)
    y = nn.relu(self.norm(name="norm2")(y))
    y = self.conv(self.growth_rate, (3, 3), padding=[(1, 1), (1, 1)], name="conv2")(y)
    return jnp.concatenate([x, y], axis=-1)


class Transition(nn.Module):
  """BN-ReLU-1x1 conv to `features` channels, then 2x2 average pool with stride 2."""

  features: int
  conv: layers.ModuleDef
  norm: layers.ModuleDef

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """x: [N, H, W, C] -> [N, H // 2, W // 2, features]."""
    x = nn.relu(self.norm(name="norm")(x))
    x = self.conv(self.features, (1, 1), name="conv")(x)
    return layers.AvgPool(2, 2, name="pool")(x)


class DenseNet(nn.Module):
  """DenseNet-BC for [N, H, W, 3] images, H and W >= `min_size` (29 for four blocks).

  `memory_efficient` recomputes each dense layer in the backward pass (nn.remat) instead
  of storing its activations, trading compute for memory that grows with depth.

  Feature maps (`stages`, see `cnnjax.models.feature_maps`): "denseblock1", "transition1",
  .., "denseblockK" (torchvision's `features.denseblock1` ..), then "norm5" after its ReLU,
  the global pool's input.
  """

  block_config: Sequence[int]
  growth_rate: int = 32
  num_init_features: int = 64
  bn_size: int = 4
  num_classes: int | None = 1000
  memory_efficient: bool = False
  dtype: layers.Dtype = jnp.float32
  axis_name: str | None = None

  @property
  def min_size(self) -> int:
    """Smallest H, W: the stem divides by 4 (rounding up), each 2x2 pool by 2 (rounding down)."""
    return 4 * 2 ** (len(self.block_config) - 1) - 3

  @nn.nowrap
  def feature_names(self) -> tuple[str, ...]:
    """The maps `stages` can name, in network order."""
    names = []
    for i in range(1, len(self.block_config) + 1):
      names.append(f"denseblock{i}")
      if i < len(self.block_config):
        names.append(f"transition{i}")
    return tuple(names) + ("norm5",)

  @nn.compact
  def __call__(
    self, x: jnp.ndarray, train: bool = False, *, stages: feature_maps.Stages = None
  ) -> jnp.ndarray | dict[str, jnp.ndarray]:
    """x: [N, H, W, C] -> logits [N, num_classes], or features [N, D] if num_classes is None.

    With `stages` (names from `feature_names()`), {name: [N, h, w, C]} of those maps instead.
    """
    taps = feature_maps.Taps(self, stages)
    layers.require_min_size(x, self.min_size, "DenseNet")
    conv = functools.partial(
      nn.Conv, use_bias=False, padding="VALID", kernel_init=conv_init, dtype=self.dtype
    )
    norm = layers.batch_norm(train, self.axis_name, self.dtype)
    dense_layer = nn.remat(DenseLayer) if self.memory_efficient else DenseLayer

    x = conv(self.num_init_features, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], name="conv0")(x)
    x = nn.relu(norm(name="norm0")(x))
    x = layers.MaxPool(3, 2, padding=1, name="pool0")(x)
    features = self.num_init_features
    for i, num_layers in enumerate(self.block_config):
      for j in range(num_layers):
        x = dense_layer(
          self.growth_rate, self.bn_size, conv, norm, name=f"denseblock{i + 1}_denselayer{j + 1}"
        )(x)
      x = taps(f"denseblock{i + 1}", x)
      features += num_layers * self.growth_rate
      if i != len(self.block_config) - 1:
        features //= 2
        x = Transition(features, conv, norm, name=f"transition{i + 1}")(x)
        x = taps(f"transition{i + 1}", x)
    x = taps("norm5", nn.relu(norm(name="norm5")(x)))
    x = layers.GlobalAvgPool(name="avgpool")(x)
    if self.num_classes is not None:
      x = nn.Dense(
        self.num_classes, kernel_init=layers.torch_linear_init, dtype=self.dtype, name="classifier"
      )(x)
    return taps.output(x)


VARIANTS = {
  "densenet121": dict(block_config=(6, 12, 24, 16)),
  "densenet161": dict(block_config=(6, 12, 36, 24), growth_rate=48, num_init_features=96),
  "densenet169": dict(block_config=(6, 12, 32, 32)),
  "densenet201": dict(block_config=(6, 12, 48, 32)),
}

for _name, _fields in VARIANTS.items():
  register(_name, functools.partial(DenseNet, **_fields))
