"""LeNet-5 (LeCun et al. 1998): two 5x5 conv layers, then 400-120-84-num_classes.

Defaults follow the 1998 paper where it is simple to: tanh activations and 2x2 average
pooling ("subsampling", here without the paper's trainable coefficient and bias). Set
`activation=nn.relu, pooling="max"` for the common modern form. Two simplifications
keep the parameter count at 61,706 for 10 classes: C3 connects to all six S2 maps (the
paper used a sparse connection table) and the output layer is dense, not RBF units.

Inputs smaller than 32x32 (MNIST's 28x28, scikit-learn's 8x8 digits) are zero-padded
around the centre to 32x32, as the paper padded MNIST; larger inputs widen the first
dense layer.
"""

from typing import Callable

import flax.linen as nn
import jax.numpy as jnp

from cnnjax.errors import UsageError
from cnnjax.models import feature_maps
from cnnjax.models import layers
from cnnjax.models.registry import register

INPUT_SIZE = 32
POOLINGS = ("avg", "max")


class LeNet5(nn.Module):
  """LeNet-5 for [N, H, W, C] images (C = 1 in the paper).

  num_classes=None returns the 84-d F6 activations [N, 84] instead of logits.

  Feature maps (`stages`, see `cnnjax.models.feature_maps`): "c1", "s2", "c3", "s4" (the
  convs after their activation, the subsampling layers).
  """

  num_classes: int | None = 10
  activation: Callable[[jnp.ndarray], jnp.ndarray] = nn.tanh
  pooling: str = "avg"
  dtype: layers.Dtype = jnp.float32
  axis_name: str | None = None  # Unused (no BatchNorm); every model takes it.

  @nn.nowrap
  def feature_names(self) -> tuple[str, ...]:
    """The maps `stages` can name, in network order."""
    return ("c1", "s2", "c3", "s4")

  @nn.compact
  def __call__(
    self, x: jnp.ndarray, train: bool = False, *, stages: feature_maps.Stages = None
  ) -> jnp.ndarray | dict[str, jnp.ndarray]:
    """x: [N, H, W, C] -> logits [N, num_classes] (or features [N, 84]).

    With `stages` (names from `feature_names()`), {name: [N, h, w, C]} of those maps instead.
    """
    taps = feature_maps.Taps(self, stages)
    del train  # No dropout or BatchNorm.
    if self.pooling not in POOLINGS:
      raise UsageError(f"LeNet5 pooling must be one of {POOLINGS}, got {self.pooling!r}.")
    pool = layers.AvgPool if self.pooling == "avg" else layers.MaxPool
    pad_h, pad_w = (max(INPUT_SIZE - d, 0) for d in x.shape[1:3])
    x = jnp.pad(
      x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0))
    )
    x = taps(
      "c1", self.activation(nn.Conv(6, (5, 5), padding="VALID", dtype=self.dtype, name="c1")(x))
    )
    x = taps("s2", pool(2, 2, name="s2")(x))
    x = taps(
      "c3", self.activation(nn.Conv(16, (5, 5), padding="VALID", dtype=self.dtype, name="c3")(x))
    )
    x = taps("s4", pool(2, 2, name="s4")(x))
    x = x.reshape(x.shape[0], -1)  # [N, 5 * 5 * 16] at 32x32.
    x = self.activation(nn.Dense(120, dtype=self.dtype, name="c5")(x))
    x = self.activation(nn.Dense(84, dtype=self.dtype, name="f6")(x))
    if self.num_classes is not None:
      x = nn.Dense(self.num_classes, dtype=self.dtype, name="output")(x)
    return taps.output(x)


register("lenet5", LeNet5, input_shape=(INPUT_SIZE, INPUT_SIZE, 1))
