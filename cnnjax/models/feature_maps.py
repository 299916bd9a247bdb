"""Named intermediate feature maps of the zoo's classifiers: `features(model, variables, x)`.

Every classifier can return the maps its stages compute, by name, instead of its logits:

  maps = models.features(model, variables, images)            # every map, in network order
  maps = models.features(model, variables, images, "layer4")  # {"layer4": [B, h, w, C]}
  models.feature_names(model)                                 # what the model offers

The convention every family follows: a classifier defines `feature_names()` (the names
its `stages` argument takes, in network order, computed from its fields) and its
`__call__(x, train=False, *, stages=None)` passes each of those maps through a `Taps`; with
`stages`, it returns {name: [B, h, w, C]} of the named maps in place of its logits, as an
OrderedDict in network order (which, unlike a plain dict's, survives `jax.jit`). Inside
another module (a detector's backbone) call the submodule with `stages` directly. Without
`stages` nothing is recorded and the output is the model's usual one.

Names are those of the layers whose outputs they are, spelt as the family's parameter tree
spells its layers (torchvision's module names with "." written "_"); a group of layers
goes by torchvision's name for the group ("layer1", "denseblock1") and a pool without
parameters by torchvision's or Caffe's name for it ("maxpool1", "pool5"). A conv's map is
taken after its BatchNorm and activation, where it has them. Per family:

  ResNet       layer1 .. layerK (each stage's last block)
  VGG          conv1_1, conv1_2, pool1, .., conv5_3, pool5 (every conv, every 2x2 pool)
  AlexNet      conv1, pool1, conv2, pool2, conv3, conv4, conv5, pool5 (conv1, conv2 before
               the local response norm)
  GoogLeNet    conv1, maxpool1, conv2, conv3, maxpool2, inception3a, inception3b, maxpool3,
               inception4a .. inception4e, maxpool4, inception5a, inception5b
  DenseNet     denseblock1, transition1, .., denseblockK, norm5 (norm5 after its ReLU)
  MobileNetV1  conv1, block1 .. block13 (each depthwise-separable block's pointwise conv)
  MobileNetV2  features_0 .. features_18 (torchvision's features.0 .. features.18 with
               the default blocks)
  LeNet5       c1, s2, c3, s4
  NiN          block1, pool1, block2, pool2, block3 (each block's last 1x1 conv), then
               class_maps when num_classes is set
  ConvBackbone block1 .. blockK (the detectors' small built-in backbone, after each pool)

The last name is the model's deepest spatial map: the input of its global average pool
(ResNet, DenseNet, MobileNet, GoogLeNet, NiN) or of its adaptive pool and dense layers
(AlexNet, VGG). The detectors take their backbone map from there.

The model runs to its end either way, so `stages` changes no parameter tree; under `jit`
XLA drops the layers after the last requested map.
"""

import collections
from typing import Any, Sequence

import flax.linen as nn
import jax

from cnnjax.errors import UsageError

Stages = str | Sequence[str] | None


def feature_names(model: nn.Module) -> tuple[str, ...]:
  """The names of the feature maps `model` offers, in network order; the last is the deepest.

  Raises:
    UsageError: `model` offers no named feature maps (a detector, U-Net).
  """
  names = getattr(model, "feature_names", None)
  if names is None:
    raise UsageError(
      f"{type(model).__name__} offers no named feature maps; the zoo's "
      "classifiers do (ResNet, VGG, AlexNet, GoogLeNet, DenseNet, MobileNet, "
      "LeNet5, NiN)."
    )
  return tuple(names())


def check_stages(model: nn.Module, stages: str | Sequence[str]) -> tuple[str, ...]:
  """The requested names in network order, duplicates dropped; a str is one name.

  Raises:
    UsageError: a name is not one of `feature_names(model)`, or none is given.
  """
  names = feature_names(model)
  requested = (stages,) if isinstance(stages, str) else tuple(stages)
  if not requested:
    raise UsageError(
      f"stages names no feature map of {type(model).__name__}; give one or more "
      f"of {', '.join(names)}."
    )
  for name in requested:
    if name not in names:
      raise UsageError(
        f"{type(model).__name__} has no feature map {name!r}; its feature maps "
        f"are {', '.join(names)}."
      )
  return tuple(name for name in names if name in requested)


class Taps:
  """Records a classifier's named feature maps during its forward pass, when asked to.

  A classifier makes one at the start of `__call__` with its `stages` argument, passes each
  map through it (`x = taps("layer1", x)`, in network order) and returns
  `taps.output(logits)`: the logits without `stages`, else the requested maps.
  """

  def __init__(self, model: nn.Module, stages: Stages):
    """Raises UsageError for unknown names in `stages` (None: record nothing)."""
    self._model = model
    self._wanted = None if stages is None else frozenset(check_stages(model, stages))
    self._seen: list[str] = []
    self._maps: dict[str, jax.Array] = {}

  def __call__(self, name: str, x: jax.Array) -> jax.Array:
    """Records x [B, h, w, C] as map `name` if it was requested; returns x unchanged."""
    if self._wanted is not None:
      self._seen.append(name)
      if name in self._wanted:
        self._maps[name] = x
    return x

  def output(self, out: Any) -> Any:
    """`out` (the model's usual output) without `stages`, else {name: map} in network order."""
    if self._wanted is None:
      return out
    names = feature_names(self._model)
    if tuple(self._seen) != names:
      # A model whose feature_names() disagrees with its forward pass: a bug in the zoo.
      raise AssertionError(
        f"{type(self._model).__name__} tapped {self._seen}, but its "
        f"feature_names() are {list(names)}."
      )
    return collections.OrderedDict(
      (name, self._maps[name]) for name in names if name in self._wanted
    )


def features(
  model: nn.Module,
  variables: Any,
  x: jax.Array,
  stages: Stages = None,
  train: bool = False,
  rngs: Any = None,
) -> dict[str, jax.Array]:
  """Named intermediate feature maps of a zoo classifier, in network order.

  Args:
    model: a classifier from `cnnjax.models.create` (any num_classes, None included).
    variables: its variables, as from `model.init`.
    x: [B, H, W, C] images.
    stages: a name or names from `feature_names(model)`; None gives every map.
    train: run in training mode (BatchNorm on batch statistics, whose running-average
      updates are discarded; dropout on, which needs `rngs`).
    rngs: PRNG keys for apply, e.g. {"dropout": key}, when `train` turns dropout on.

  Returns:
    {name: [B, h, w, C]} for the requested maps, in network order: an OrderedDict, which
    keeps that order through `jax.jit` (a plain dict's keys come back sorted).

  Raises:
    UsageError: a name in `stages` is not one of the model's maps (the message lists
      them), or the model has no named maps.
  """
  stages = feature_names(model) if stages is None else check_stages(model, stages)
  if not train:
    return model.apply(variables, x, train=False, stages=stages, rngs=rngs)
  maps, _ = model.apply(variables, x, train=True, stages=stages, rngs=rngs, mutable=["batch_stats"])
  return maps
