"""U-Net (Ronneberger et al., 2015) for semantic segmentation.

The original form uses unpadded ('valid') 3x3 convolutions, so every level loses 4 pixels
and the skip connections are centre-cropped before concatenation: a 572x572 input gives a
388x388 map of per-pixel logits. The 'same' variant pads its convolutions and returns logits
at the input size. Variants:

  unet       original: valid convs, 64 base filters, depth 4, 2 classes, no BatchNorm
             (31,030,658 parameters with one input channel).
  unet_same  'same' padding with BatchNorm, the form that trains quickly on small images.
"""

import functools
import itertools

import flax.linen as nn
import jax.numpy as jnp

from cnnjax.errors import UsageError
from cnnjax.models import layers
from cnnjax.models.registry import register


def valid_output_size(size: int, depth: int) -> int | None:
  """Output side of a valid-padded U-Net of `depth` for an input side of `size`.

  None when `size` does not tile: some map before a 2x2 pool is odd or too small, or a
  map comes out empty.
  """
  for _ in range(depth):
    size -= 4  # Two unpadded 3x3 convs.
    if size < 2 or size % 2:
      return None
    size //= 2
  size -= 4
  for _ in range(depth):
    if size < 1:
      return None
    size = 2 * size - 4  # 2x2 up-convolution, then two 3x3 convs.
  return size if size >= 1 else None


def _tiles(size: int, depth: int, padding: str) -> bool:
  """Whether a U-Net of `depth` and `padding` accepts an input side of `size`."""
  if padding == "same":
    return size > 0 and size % (2**depth) == 0
  return valid_output_size(size, depth) is not None


def _nearest_size(size: int, depth: int, padding: str) -> int:
  """The input side nearest to `size` that the network accepts (ties go to the larger)."""
  # Valid sizes recur every 2**depth pixels, so this search ends within that many steps.
  for delta in itertools.count():
    for candidate in (size + delta, size - delta):
      if _tiles(candidate, depth, padding):
        return candidate


def _center_crop(x: jnp.ndarray, height: int, width: int) -> jnp.ndarray:
  """x: [N, H, W, C] -> [N, height, width, C], cropped about the centre."""
  top = (x.shape[1] - height) // 2
  left = (x.shape[2] - width) // 2
  return x[:, top : top + height, left : left + width, :]


class DoubleConv(nn.Module):
  """Two 3x3 convolutions, each followed by optional BatchNorm and ReLU."""

  features: int
  conv: layers.ModuleDef
  norm: layers.ModuleDef | None

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """x: [N, H, W, C] -> [N, H', W', features] (H' = H - 4 with valid padding)."""
    for _ in range(2):
      x = self.conv(self.features, (3, 3), use_bias=self.norm is None)(x)
      if self.norm is not None:
        x = self.norm()(x)
      x = nn.relu(x)
    return x


class UNet(nn.Module):
  """U-Net: a contracting path of `depth` down-steps and a symmetric expanding path.

  Attributes:
    depth: number of 2x2 max-pool down-steps (4 in the paper).
    width: filters at the top level; each level down doubles them (64 in the paper).
    padding: 'valid' (the paper: unpadded convs, cropped skips) or 'same' (output = input size).
    num_classes: channels of the per-pixel logits; None returns the last [N, H', W', width]
      feature map instead.
    batch_norm: BatchNorm after every 3x3 conv (off in the paper).
    dtype: compute dtype; parameters stay float32.
    axis_name: device axis for BatchNorm statistics.
  """

  depth: int = 4
  width: int = 64
  padding: str = "valid"
  num_classes: int | None = 2
  batch_norm: bool = False
  dtype: layers.Dtype = jnp.float32
  axis_name: str | None = None

  def _check_size(self, x: jnp.ndarray) -> None:
    if self.padding not in ("valid", "same"):
      raise UsageError(f"unet padding must be 'valid' or 'same', got {self.padding!r}.")
    for side in x.shape[1:3]:
      if not _tiles(side, self.depth, self.padding):
        nearest = _nearest_size(side, self.depth, self.padding)
        raise UsageError(
          f"unet (padding={self.padding!r}, depth={self.depth}) cannot tile a side of {side} "
          f"pixels; resize or pad the images to {nearest} (the nearest valid size)."
        )

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """x: [N, H, W, C_in] -> logits [N, H', W', num_classes] (H' = H with 'same' padding)."""
    self._check_size(x)
    conv = functools.partial(nn.Conv, padding=self.padding.upper(), dtype=self.dtype)
    norm = layers.batch_norm(train, self.axis_name, self.dtype) if self.batch_norm else None
    block = functools.partial(DoubleConv, conv=conv, norm=norm)
    x = x.astype(self.dtype)
    skips = []
    for level in range(self.depth):
      x = block(self.width * 2**level)(x)
      skips.append(x)
      x = layers.MaxPool(2, 2)(x)
    x = block(self.width * 2**self.depth)(x)
    for level in reversed(range(self.depth)):
      width = self.width * 2**level
      x = nn.ConvTranspose(width, (2, 2), strides=(2, 2), padding="VALID", dtype=self.dtype)(x)
      skip = _center_crop(skips[level], x.shape[1], x.shape[2])
      x = block(width)(jnp.concatenate([skip, x], axis=-1))
    if self.num_classes is None:
      return x
    return nn.Conv(self.num_classes, (1, 1), dtype=self.dtype)(x)


register("unet", UNet, input_shape=(572, 572, 1))
# The paper's 512x512 ISBI cell images, whole: 'same' padding needs no 572 tiles around them.
register(
  "unet_same", functools.partial(UNet, padding="same", batch_norm=True), input_shape=(512, 512, 1)
)
