"""Theoretical receptive fields of the units of a network's feature maps.

  fields = stage_fields(model, (64, 64, 3))     # {stage: StageField}, from the summary
  box = unit_box(fields["layer1"], (8, 8), (64, 64))   # (top, left, bottom, right) pixels

`cnnjax.inspect.summary` gives each layer's receptive-field size r and jump j (input
pixels between adjacent units), walking the traced program exactly through branches.
For a stage of a `cnnjax.inspect.network.Network` this module measures the stage's own
output: for feature-API networks the summary of a wrapper that returns the stage's map
through a 1x1 max pool (an identity the summary records as a layer); for networks whose
maps are top-level layer outputs, the summary row of that layer's last sub-layer.

Where a unit sits. The summary ignores padding, and so does the centre here: unit u of a
map of n units along an axis of N pixels is centred at (N - 1) / 2 + (u - (n - 1) / 2) j,
so the map's units lie symmetrically over the image. That is exact when every strided
window is unpadded (VGG's, LeNet's pools, valid convolutions); a strided window padded
by (k - 1) / 2 on both sides (ResNet's, torchvision's convention) moves the units by
(s - 1) / 2 of its input's jump towards the origin, Flax's "SAME" on an even side by as
much away from it. Over all of a network's strided layers these shifts add up to at most
(j - 1) / 2 pixels (the jumps telescope): the field of u spans [c - (r - 1) / 2,
c + (r - 1) / 2] up to that shift (`phase_tolerance`).
"""

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax.inspect import network as network_lib
from cnnjax.inspect import summary
from cnnjax.models import layers


@dataclasses.dataclass(frozen=True)
class StageField:
  """The receptive field of every unit of one feature map.

  Attributes:
    size: (height, width) of one unit's field r, in input pixels.
    jump: (height, width) input pixels between adjacent units j.
    map_shape: (h, w) units of the map.
  """

  size: tuple[float, float]
  jump: tuple[float, float]
  map_shape: tuple[int, int]


class _StageOutputs(nn.Module):
  """The network's maps `stages`, each passed through a 1x1 max pool the summary records."""

  net: nn.Module
  stages: tuple[str, ...]

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, ...]:
    maps = self.net(x, train=False, stages=self.stages)
    return tuple(
      layers.MaxPool(1, 1, name=f"stage_output_{i}")(maps[stage])
      for i, stage in enumerate(self.stages)
    )


def stage_fields(
  model: nn.Module, input_shape: Sequence[int], stages: str | Sequence[str] | None = None
) -> dict[str, StageField]:
  """{stage: StageField} of `model`'s spatial network on one image of `input_shape`.

  Args:
    model: any model (`cnnjax.inspect.network.network` finds its spatial network).
    input_shape: (H, W, C) of one image.
    stages: names of the network's maps; None: all.

  Raises:
    UsageError: an unknown stage (the message lists the network's maps).
  """
  net = network_lib.network(model)
  input_shape = tuple(int(d) for d in input_shape)
  names = net.names(input_shape) if stages is None else net.check(stages, input_shape)
  fields = {}
  if net.kind == network_lib.TAPS:
    rows = summary.summarize(_StageOutputs(net.module, names), input_shape).rows
    for i, stage in enumerate(names):
      row = next(row for row in rows if row.name == f"stage_output_{i}")
      fields[stage] = _field(row)
    return fields
  rows = summary.summarize(net.module, input_shape).rows
  for stage in names:
    own = [row for row in rows if row.name == stage or row.name.startswith(stage + "/")]
    if not own or own[-1].jump is None:
      continue  # A layer without a spatial field of its own (none in the zoo).
    fields[stage] = _field(own[-1])
  return fields


def _field(row: summary.LayerRow) -> StageField:
  return StageField(
    tuple(float(v) for v in row.receptive_field),
    tuple(float(v) for v in row.jump),
    tuple(int(d) for d in row.output_shape[:2]),
  )


def unit_centre(
  field: StageField, unit: Sequence[int], image_shape: Sequence[int]
) -> tuple[float, float]:
  """(row, column) in input pixels of the centre of `unit` (row, column of the map)."""
  return tuple(
    (n - 1) / 2 + (u - (m - 1) / 2) * j
    for n, u, m, j in zip(image_shape[:2], unit, field.map_shape, field.jump)
  )


def unit_box(
  field: StageField, unit: Sequence[int], image_shape: Sequence[int]
) -> tuple[float, float, float, float]:
  """(top, left, bottom, right) pixel centres of `unit`'s field, not clipped to the image."""
  (cy, cx), (ry, rx) = unit_centre(field, unit, image_shape), field.size
  return cy - (ry - 1) / 2, cx - (rx - 1) / 2, cy + (ry - 1) / 2, cx + (rx - 1) / 2


def phase_tolerance(field: StageField) -> tuple[float, float]:
  """The most the units can sit off `unit_centre` through padding: (j - 1) / 2 per axis."""
  return tuple(max(0.0, (j - 1) / 2) for j in field.jump)


def unit_at(
  field: StageField, pixel: Sequence[float], image_shape: Sequence[int]
) -> tuple[int, int]:
  """The unit whose centre lies nearest `pixel` (row, column), within the map."""
  return tuple(
    int(min(m - 1, max(0, round((p - (n - 1) / 2) / j + (m - 1) / 2))))
    for p, n, m, j in zip(pixel, image_shape[:2], field.map_shape, field.jump)
  )


def centre_unit(field: StageField) -> tuple[int, int]:
  """The unit at the middle of the map (the lower middle of an even side)."""
  return tuple(m // 2 for m in field.map_shape)


def box_mask(box: Sequence[float], image_shape: Sequence[int]) -> jax.Array:
  """bool [H, W]: the pixels whose centres lie in `box` (top, left, bottom, right)."""
  rows = jnp.arange(image_shape[0])[:, None]
  cols = jnp.arange(image_shape[1])[None, :]
  top, left, bottom, right = box
  return (rows >= top) & (rows <= bottom) & (cols >= left) & (cols <= right)
