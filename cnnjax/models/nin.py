"""Network in Network (Lin, Chen & Yan 2013), the CIFAR-10 model of the paper.

Three mlpconv blocks, each a kxk conv followed by two 1x1 convs ("cccp" layers in the
authors' Caffe model), all with ReLU: 5x5 192-160-96, 5x5 192-192-192, 3x3 192-192-classes.
The first two blocks end in a 3x3/2 pool and dropout 0.5: a max pool after the first and
an average pool after the second, as in the Caffe model (`pools`). Both use Caffe's ceil
mode; the average divides each window by the number of its pixels inside the image.
The last 1x1 conv emits one map per class and global average pooling turns the maps into
logits: there are no dense layers. The class maps are left linear so logits can be
negative (the Caffe model put a ReLU there too).

num_classes=None drops the class-map conv and returns the globally pooled output of the
last block's remaining layers (its kxk conv and first 1x1 conv): [N, widths[-1][-1]].
"""

import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from cnnjax.errors import UsageError
from cnnjax.models import feature_maps
from cnnjax.models import layers
from cnnjax.models.registry import register

# Two 3x3/2 ceil-mode pools: 4 -> 2 -> 1.
MIN_SIZE = 4
POOLS = {"max": layers.MaxPool, "avg": layers.AvgPool}


class NiN(nn.Module):
  """Network in Network for [N, H, W, C] images, H and W >= 4 (32x32 in the paper).

  Block i is a `kernel_sizes[i]` conv of width `widths[i][0]` followed by 1x1 convs of widths
  `widths[i][1:]`; the last block's final 1x1 conv (num_classes wide) is added on top.
  Every block but the last ends in a 3x3/2 pool of kind `pools[i]`, "max" or "avg".

  Feature maps (`stages`, see `cnnjax.models.feature_maps`): "block1", "pool1", "block2",
  "pool2", "block3" (each block's last 1x1 conv after its ReLU, each pool before its
  dropout), then "class_maps" when num_classes is set; the last is the global pool's input.
  """

  num_classes: int | None = 10
  widths: Sequence[Sequence[int]] = ((192, 160, 96), (192, 192, 192), (192, 192))
  kernel_sizes: Sequence[int] = (5, 5, 3)
  pools: Sequence[str] = ("max", "avg")
  dropout_rate: float = 0.5
  dtype: layers.Dtype = jnp.float32
  axis_name: str | None = None  # Unused (no BatchNorm); every model takes it.

  @nn.nowrap
  def feature_names(self) -> tuple[str, ...]:
    """The maps `stages` can name, in network order."""
    names = []
    for i in range(1, len(self.widths) + 1):
      names.append(f"block{i}")
      if i < len(self.widths):
        names.append(f"pool{i}")
    if self.num_classes is not None:
      names.append("class_maps")
    return tuple(names)

  @nn.compact
  def __call__(
    self, x: jnp.ndarray, train: bool = False, *, stages: feature_maps.Stages = None
  ) -> jnp.ndarray | dict[str, jnp.ndarray]:
    """x: [N, H, W, C] -> logits [N, num_classes] (or features [N, widths[-1][-1]]).

    With `stages` (names from `feature_names()`), {name: [N, h, w, C]} of those maps instead.
    """
    taps = feature_maps.Taps(self, stages)
    if len(self.widths) != len(self.kernel_sizes):
      raise UsageError(
        f"NiN needs one kernel size per block: got {len(self.widths)} blocks "
        f"and {len(self.kernel_sizes)} kernel sizes."
      )
    if len(self.pools) != len(self.widths) - 1 or not set(self.pools) <= set(POOLS):
      raise UsageError(
        f"NiN needs one pool, 'max' or 'avg', after each block but the last: got "
        f"pools={tuple(self.pools)} for {len(self.widths)} blocks."
      )
    layers.require_min_size(x, MIN_SIZE, "NiN")
    conv = functools.partial(nn.Conv, dtype=self.dtype)
    last = len(self.widths) - 1
    for block, (widths, kernel) in enumerate(zip(self.widths, self.kernel_sizes)):
      x = nn.relu(
        conv(widths[0], (kernel, kernel), padding=kernel // 2, name=f"block{block + 1}_conv")(x)
      )
      for i, width in enumerate(widths[1:], start=1):
        x = nn.relu(conv(width, (1, 1), name=f"block{block + 1}_cccp{i}")(x))
      x = taps(f"block{block + 1}", x)
      if block < last:
        x = taps(f"pool{block + 1}", POOLS[self.pools[block]](3, 2, ceil_mode=True)(x))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    if self.num_classes is not None:
      x = taps("class_maps", conv(self.num_classes, (1, 1), name="class_maps")(x))
    return taps.output(layers.GlobalAvgPool()(x))


register("nin", NiN, input_shape=(32, 32, 3))  # CIFAR-10.
