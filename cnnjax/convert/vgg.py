"""torchvision VGG-11..19 (+BN) state dicts -> cnnjax VGG variables.

torchvision numbers the layers of `features` in one Sequential: conv, (BatchNorm,) ReLU per
conv and one max pool per stage. The Flax model flattens its pooled features in torch's
[N, C, H, W] order, so fc6's kernel needs no permutation.
"""

from typing import Any

from cnnjax.convert import mapping
from cnnjax.models import vgg

NAMES = [f"vgg{depth}{suffix}" for depth in vgg.STAGE_SIZES for suffix in ("", "_bn")]


def vgg_prefixes(name: str, torch_prefixes: set[str]) -> tuple[dict[str, str], dict[str, Any]]:
  """Every torchvision layer prefix of VGG `name` -> its Flax module path."""
  del torch_prefixes  # The layer list follows from the name alone.
  batch_norm = name.endswith("_bn")
  depth = int(name.removeprefix("vgg").removesuffix("_bn"))
  prefixes = {"classifier.0": "fc6", "classifier.3": "fc7", "classifier.6": "fc8"}
  index = 0
  for stage, size in enumerate(vgg.STAGE_SIZES[depth], start=1):
    for i in range(1, size + 1):
      prefixes[f"features.{index}"] = f"conv{stage}_{i}"
      if batch_norm:
        prefixes[f"features.{index + 1}"] = f"bn{stage}_{i}"
      index += 3 if batch_norm else 2
    index += 1  # The stage's max pool.
  return prefixes, {}


mapping.register_mapping(NAMES, vgg_prefixes, classifier="classifier.6")
