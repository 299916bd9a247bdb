"""Backbones of the detectors: a zoo classifier's deepest feature map, or a small conv stack.

`make_backbone` builds the backbone a detector names ('conv' or a zoo classifier) and
`feature_map` runs it for its deepest spatial map through the zoo's feature-map convention
(`cnnjax.models.feature_maps`): the last of `feature_names(backbone)`, which for the zoo's
ResNets, DenseNets, MobileNets, GoogLeNet and NiN is the input of the global average pool.
Classifiers that flatten a fixed-size map into dense layers (AlexNet, VGG) are refused as
feature-map backbones, since their dense layers would be built and wasted.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from cnnjax.errors import UsageError
from cnnjax.models import feature_maps
from cnnjax.models import layers
from cnnjax.models import registry

Dtype = Any


class ConvBackbone(nn.Module):
  """Conv-BN-ReLU blocks, each followed by a 2x2 max pool: stride 2**len(widths).

  Feature maps (`stages`, see `cnnjax.models.feature_maps`): "block1" .. "blockK", each
  block's output after its pool.

  Attributes:
    widths: channels of each block (two 3x3 convs per block).
  """

  widths: Sequence[int] = (32, 64, 128, 256)
  dtype: Dtype = jnp.float32
  axis_name: str | None = None

  @nn.nowrap
  def feature_names(self) -> tuple[str, ...]:
    """The maps `stages` can name, in network order."""
    return tuple(f"block{i + 1}" for i in range(len(self.widths)))

  @nn.compact
  def __call__(
    self, x: jnp.ndarray, train: bool = False, *, stages: feature_maps.Stages = None
  ) -> jnp.ndarray | dict[str, jnp.ndarray]:
    """x: [N, H, W, C] -> [N, H / 2**k, W / 2**k, widths[-1]].

    With `stages` (names from `feature_names()`), {name: [N, h, w, C]} of those maps instead.
    """
    taps = feature_maps.Taps(self, stages)
    layers.require_min_size(x, 2 ** len(self.widths), "the conv backbone")
    norm = layers.batch_norm(train, self.axis_name, self.dtype)
    for i, width in enumerate(self.widths):
      for _ in range(2):
        x = nn.Conv(width, (3, 3), use_bias=False, dtype=self.dtype)(x)
        x = nn.relu(norm()(x))
      x = taps(f"block{i + 1}", layers.MaxPool(2, 2)(x))
    return taps.output(x)


def make_backbone(
  name: str,
  widths: Sequence[int],
  kwargs: dict | None,
  dtype: Dtype,
  axis_name: str | None,
  feature_map: bool = True,
) -> nn.Module:
  """The built-in ConvBackbone for name 'conv', else the zoo model `name` without classifier.

  With `feature_map`, zoo models that cannot give one (see the module docstring) are refused.
  """
  if name == "conv":
    return ConvBackbone(tuple(widths), dtype=dtype, axis_name=axis_name)
  if feature_map and name.startswith(("alexnet", "vgg")):
    raise UsageError(
      f"{name} flattens a fixed-size map into dense layers and cannot serve as a "
      "detection backbone; use backbone='conv' or a ResNet, DenseNet, MobileNet."
    )
  return registry.create(name, num_classes=None, dtype=dtype, axis_name=axis_name, **(kwargs or {}))


def feature_map(backbone: nn.Module, x: jnp.ndarray, train: bool) -> jnp.ndarray:
  """The backbone's deepest feature map [N, h, w, D], the last of its `feature_names()`.

  Call it inside the detector's compact method: `backbone` is built there as a submodule.

  Raises:
    UsageError: the backbone offers no named feature maps.
  """
  deepest = feature_maps.feature_names(backbone)[-1]
  return backbone(x, train=train, stages=(deepest,))[deepest]
