"""The spatial part of any model, as one network with named feature maps.

Every inspect function that looks at feature maps goes through `network(model)`:

  net = network(model)                     # a Network: the module, where it sits, its maps
  net.names(input_shape)                   # ("layer1", .., "layer4")
  maps = net.maps(variables, x, "layer4")  # {"layer4": [B, h, w, C]}, `variables` the model's

What the Network is, by model:

- A zoo classifier (anything with `feature_names`, see `cnnjax.models.feature_maps`): the
  model itself, its maps the feature API's.
- A model wrapping a backbone module in a field `backbone` (metric learning's
  `EmbeddingNet`, SimCLR's `ProjectionNet`): that backbone, whose variables are the
  model's under "backbone".
- A detector naming its backbone by a string field `backbone` (YOLOv1, Fast R-CNN, R-CNN):
  the backbone `cnnjax.models.backbones.make_backbone` builds from the detector's fields,
  whose variables are the detector's under the backbone's module name ("ConvBackbone_0",
  "ResNet_0", ...).
- Anything else (U-Net): the model itself, its maps the outputs of its top-level layers
  that are images [B, h, w, C] (Flax's `capture_intermediates`), named by their module
  names ("DoubleConv_0", "MaxPool_0", .., "ConvTranspose_0", ..), in call order.

All maps are taken in evaluation mode (BatchNorm on running statistics, no dropout).
"""

import collections
import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax.errors import UsageError
from cnnjax.models import backbones
from cnnjax.models import feature_maps

Stages = str | Sequence[str] | None
TAPS, INTERMEDIATES = "taps", "intermediates"


@dataclasses.dataclass(frozen=True)
class Network:
  """The spatial network of a model.

  Attributes:
    module: the network's Flax module.
    path: keys of its variables inside the model's ({} path: the model's own).
    kind: TAPS (the feature API) or INTERMEDIATES (top-level layer outputs).
  """

  module: nn.Module
  path: tuple[str, ...] = ()
  kind: str = TAPS

  def variables(self, variables: dict[str, Any]) -> dict[str, Any]:
    """The network's variables out of the whole model's {"params", "batch_stats", ...}."""
    out = {}
    for collection, tree in variables.items():
      for key in self.path:
        tree = tree.get(key) if hasattr(tree, "get") else None
        if tree is None:
          break
      if tree is not None:
        out[collection] = tree
    return out

  def names(self, input_shape: Sequence[int] | None = None) -> tuple[str, ...]:
    """The names `maps` takes, in network order; the last is the deepest.

    Args:
      input_shape: (H, W, C) of one image; needed only by INTERMEDIATES networks, whose
        maps are found by tracing the model once.
    """
    if self.kind == TAPS:
      return feature_maps.feature_names(self.module)
    if input_shape is None:
      raise ValueError(
        f"{type(self.module).__name__}'s maps depend on its input: pass input_shape."
      )
    return _intermediate_names(self.module, tuple(int(d) for d in input_shape))

  def check(self, stages: str | Sequence[str], input_shape: Sequence[int]) -> tuple[str, ...]:
    """`stages` in network order; UsageError naming the maps if one is unknown."""
    if self.kind == TAPS:
      return feature_maps.check_stages(self.module, stages)
    names = self.names(input_shape)
    requested = (stages,) if isinstance(stages, str) else tuple(stages)
    for name in requested:
      if name not in names:
        raise UsageError(
          f"{type(self.module).__name__} has no feature map {name!r}; its "
          f"feature maps are {', '.join(names)}."
        )
    return tuple(name for name in names if name in requested)

  def maps(
    self, variables: dict[str, Any], x: jax.Array, stages: Stages = None
  ) -> "collections.OrderedDict[str, jax.Array]":
    """{name: [B, h, w, C]} of the requested maps (None: all), in network order.

    Args:
      variables: the whole model's variables (the network's are taken out of them).
      x: images [B, H, W, C] as the model takes them.
      stages: a name or names from `names()`; None: every map.
    """
    own = self.variables(variables)
    if self.kind == TAPS:
      return feature_maps.features(self.module, own, x, stages)
    names = self.check(stages, x.shape[1:]) if stages is not None else self.names(x.shape[1:])
    captured = _capture(self.module, own, x)
    return collections.OrderedDict((name, captured[name]) for name in names)


def network(model: nn.Module) -> Network:
  """The spatial network of `model` (see the module docstring for what it is, by model)."""
  if getattr(model, "feature_names", None) is not None:
    return Network(model)
  inner = getattr(model, "backbone", None)
  if isinstance(inner, nn.Module):
    found = network(inner)
    return dataclasses.replace(found, path=("backbone", *found.path))
  if isinstance(inner, str) and hasattr(model, "backbone_widths"):
    built = backbones.make_backbone(
      inner,
      model.backbone_widths,
      getattr(model, "backbone_kwargs", None),
      getattr(model, "dtype", jnp.float32),
      None,
      feature_map=False,
    )
    # Flax names a module built inside a compact method ClassName_0.
    return Network(built, (f"{type(built).__name__}_0",))
  return Network(model, (), INTERMEDIATES)


def _is_image(value: Any) -> bool:
  return isinstance(value, jax.Array) and value.ndim == 4 and min(value.shape[1:3]) >= 1


def _capture_filter(module: nn.Module, method_name: str) -> bool:
  return method_name == "__call__" and len(module.path) == 1


def _capture(model: nn.Module, variables: dict[str, Any], x: jax.Array) -> dict[str, jax.Array]:
  """{top-level layer name: its image output [B, h, w, C]} of one evaluation-mode call."""
  _, state = model.apply(
    variables, x, train=False, capture_intermediates=_capture_filter, mutable=["intermediates"]
  )
  found = collections.OrderedDict()
  for name, calls in state.get("intermediates", {}).items():
    outputs = calls.get("__call__", ()) if hasattr(calls, "get") else ()
    for index, value in enumerate(outputs):
      if _is_image(value):
        found[name if index == 0 else f"{name}.{index}"] = value
  return found


_NAMES: dict[tuple[Any, tuple[int, ...]], tuple[str, ...]] = {}


def _intermediate_names(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[str, ...]:
  key = (model, input_shape)
  if key not in _NAMES:
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)

    def names_of(x):
      variables = model.init(
        {"params": jax.random.key(0), "dropout": jax.random.key(1)}, x, train=False
      )
      return _capture(model, variables, x)

    shapes = jax.eval_shape(names_of, x)
    if not shapes:
      raise UsageError(
        f"{type(model).__name__} has no layer whose output is an image; there "
        "are no feature maps to show."
      )
    _NAMES[key] = tuple(shapes)
  return _NAMES[key]
