"""AlexNet: torchvision's single-tower form and the 2012 two-tower network (Krizhevsky et al.).

`alexnet` is torchvision's model (64/192/384/256/256 conv widths, 6x6 adaptive average
pool, dropout 0.5 before fc6 and fc7; 61,100,840 parameters at 1000 classes).
`alexnet2012` is the paper's network: 96/256/384/384/256 widths, conv2, conv4 and conv5
split into two towers (grouped convolutions, `grouped=True`; 60,965,224 parameters) and
local response normalisation after conv1 and conv2 (`lrn`). `grouped=False` joins the
towers (62,378,344 parameters).

The conv features are flattened in [N, C, H, W] order before fc6, as torch flattens them,
so torchvision's fc6 weights load unchanged; the transpose costs one 9216-value copy.
"""

import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from cnnjax.models import feature_maps
from cnnjax.models import layers
from cnnjax.models.registry import register

# Smallest H and W that leave the last 3x3/2 max pool a non-empty window.
MIN_SIZE = 63


def local_response_norm(
  x: jnp.ndarray, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0
) -> jnp.ndarray:
  """Krizhevsky et al.'s across-channel normalisation, with their constants as defaults.

  b_c = a_c / (k + alpha * sum of a_j^2 over the `size` channels centred on c)^beta.
  (torch.nn.LocalResponseNorm divides alpha by `size`; the paper does not.)

  x: [N, H, W, C] -> [N, H, W, C].
  """
  channels = x.shape[-1]
  squares = jnp.pad(jnp.square(x), ((0, 0), (0, 0), (0, 0), (size // 2, (size - 1) // 2)))
  window_sums = sum(squares[..., i : i + channels] for i in range(size))
  return x / (k + alpha * window_sums) ** beta


class AlexNet(nn.Module):
  """AlexNet for [N, H, W, 3] images, H and W >= 63.

  num_classes=None returns the fc7 activations [N, hidden] (after ReLU) instead of logits.

  Feature maps (`stages`, see `cnnjax.models.feature_maps`): "conv1", "pool1", "conv2",
  "pool2", "conv3", "conv4", "conv5", "pool5"; convs after their ReLU (conv1 and conv2
  before the local response norm, which pool1 and pool2 follow).
  """

  num_classes: int | None = 1000
  widths: Sequence[int] = (64, 192, 384, 256, 256)
  grouped: bool = False  # Two towers: conv2, conv4 and conv5 with two groups.
  lrn: bool = False  # Local response normalisation after conv1 and conv2.
  hidden: int = 4096
  dropout_rate: float = 0.5
  dtype: layers.Dtype = jnp.float32
  axis_name: str | None = None  # Unused (no BatchNorm); every model takes it.

  @nn.nowrap
  def feature_names(self) -> tuple[str, ...]:
    """The maps `stages` can name, in network order."""
    return ("conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5")

  @nn.compact
  def __call__(
    self, x: jnp.ndarray, train: bool = False, *, stages: feature_maps.Stages = None
  ) -> jnp.ndarray | dict[str, jnp.ndarray]:
    """x: [N, H, W, 3] -> logits [N, num_classes] (or fc7 features [N, hidden]).

    With `stages` (names from `feature_names()`), {name: [N, h, w, C]} of those maps instead.
    """
    taps = feature_maps.Taps(self, stages)
    layers.require_min_size(x, MIN_SIZE, "AlexNet")
    conv = functools.partial(nn.Conv, dtype=self.dtype)
    towers = 2 if self.grouped else 1
    w1, w2, w3, w4, w5 = self.widths
    x = taps("conv1", nn.relu(conv(w1, (11, 11), (4, 4), padding=2, name="conv1")(x)))
    if self.lrn:
      x = local_response_norm(x)
    x = taps("pool1", layers.MaxPool(3, 2)(x))
    x = nn.relu(conv(w2, (5, 5), padding=2, feature_group_count=towers, name="conv2")(x))
    x = taps("conv2", x)
    if self.lrn:
      x = local_response_norm(x)
    x = taps("pool2", layers.MaxPool(3, 2)(x))
    x = taps("conv3", nn.relu(conv(w3, (3, 3), padding=1, name="conv3")(x)))
    x = nn.relu(conv(w4, (3, 3), padding=1, feature_group_count=towers, name="conv4")(x))
    x = taps("conv4", x)
    x = nn.relu(conv(w5, (3, 3), padding=1, feature_group_count=towers, name="conv5")(x))
    x = taps("conv5", x)
    x = taps("pool5", layers.MaxPool(3, 2)(x))
    x = layers.flatten_nchw(layers.AdaptiveAvgPool(6)(x))
    dropout = functools.partial(nn.Dropout, self.dropout_rate, deterministic=not train)
    x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="fc6")(dropout()(x)))
    x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="fc7")(dropout()(x)))
    if self.num_classes is not None:
      x = nn.Dense(self.num_classes, dtype=self.dtype, name="fc8")(x)
    return taps.output(x)


register("alexnet", AlexNet)
register(
  "alexnet2012", functools.partial(AlexNet, widths=(96, 256, 384, 384, 256), grouped=True, lrn=True)
)
