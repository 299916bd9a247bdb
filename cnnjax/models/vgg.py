"""VGG-11/13/16/19 (Simonyan & Zisserman 2014, configurations A, B, D, E), as torchvision has them.

Five stages of 3x3 convs (64/128/256/512/512 wide), each closed by a 2x2/2 max pool, then
a 7x7 adaptive average pool and fc6-fc7-fc8 (4096, 4096, classes) with dropout 0.5 after
fc6 and fc7. `*_bn` variants put BatchNorm after every conv, which keeps its bias, as
torchvision does. Initialisation follows torchvision: convs He-normal (fan out), dense
N(0, 0.01), biases zero.

Layer names follow the Caffe release ("conv3_2" is the second conv of stage 3). The pooled
features are flattened in [N, C, H, W] order before fc6, as torch flattens them, so
torchvision's fc6 weights load unchanged.
"""

import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from cnnjax.errors import UsageError
from cnnjax.models import feature_maps
from cnnjax.models import layers
from cnnjax.models.registry import register

# Four 2x2/2 pools must leave at least 2x2 for the fifth.
MIN_SIZE = 32

dense_init = nn.initializers.normal(0.01)  # torchvision's VGG init, not torch's Linear default.


class VGG(nn.Module):
  """VGG for [N, H, W, C] images, H and W >= 32.

  Stage i has `stage_sizes[i]` convs of width `widths[i]`. num_classes=None returns the
  fc7 activations [N, hidden] (after ReLU, and dropout when training) instead of logits.

  Feature maps (`stages`, see `cnnjax.models.feature_maps`): every conv, after its BN and
  ReLU, and every pool, in order: "conv1_1", .., "pool1", .., "conv5_3", "pool5" (VGG-16).
  """

  stage_sizes: Sequence[int]
  num_classes: int | None = 1000
  widths: Sequence[int] = (64, 128, 256, 512, 512)
  batch_norm: bool = False
  hidden: int = 4096
  dropout_rate: float = 0.5
  dtype: layers.Dtype = jnp.float32
  axis_name: str | None = None

  @nn.nowrap
  def feature_names(self) -> tuple[str, ...]:
    """The maps `stages` can name: f"conv{stage}_{i}" and f"pool{stage}", in network order."""
    return tuple(
      name
      for stage, size in enumerate(self.stage_sizes, start=1)
      for name in [f"conv{stage}_{i}" for i in range(1, size + 1)] + [f"pool{stage}"]
    )

  @nn.compact
  def __call__(
    self, x: jnp.ndarray, train: bool = False, *, stages: feature_maps.Stages = None
  ) -> jnp.ndarray | dict[str, jnp.ndarray]:
    """x: [N, H, W, C] -> logits [N, num_classes] (or fc7 features [N, hidden]).

    With `stages` (names from `feature_names()`), {name: [N, h, w, C]} of those maps instead.
    """
    taps = feature_maps.Taps(self, stages)
    if len(self.stage_sizes) != len(self.widths):
      raise UsageError(
        f"VGG needs one width per stage: got {len(self.stage_sizes)} stages and "
        f"{len(self.widths)} widths."
      )
    layers.require_min_size(x, MIN_SIZE, "VGG")
    conv = functools.partial(
      nn.Conv,
      kernel_size=(3, 3),
      padding=1,
      kernel_init=layers.kaiming_normal_fan_out,
      dtype=self.dtype,
    )
    norm = layers.batch_norm(train, self.axis_name, self.dtype)
    for stage, (size, width) in enumerate(zip(self.stage_sizes, self.widths), start=1):
      for i in range(1, size + 1):
        x = conv(width, name=f"conv{stage}_{i}")(x)
        if self.batch_norm:
          x = norm(name=f"bn{stage}_{i}")(x)
        x = taps(f"conv{stage}_{i}", nn.relu(x))
      x = taps(f"pool{stage}", layers.MaxPool(2, 2)(x))
    x = layers.flatten_nchw(layers.AdaptiveAvgPool(7)(x))
    dense = functools.partial(nn.Dense, kernel_init=dense_init, dtype=self.dtype)
    dropout = functools.partial(nn.Dropout, self.dropout_rate, deterministic=not train)
    x = dropout()(nn.relu(dense(self.hidden, name="fc6")(x)))
    x = dropout()(nn.relu(dense(self.hidden, name="fc7")(x)))
    if self.num_classes is not None:
      x = dense(self.num_classes, name="fc8")(x)
    return taps.output(x)


STAGE_SIZES = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}

for _depth, _sizes in STAGE_SIZES.items():
  register(f"vgg{_depth}", functools.partial(VGG, stage_sizes=_sizes))
  register(f"vgg{_depth}_bn", functools.partial(VGG, stage_sizes=_sizes, batch_norm=True))
