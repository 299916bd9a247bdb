"""torchvision MobileNet v2 state dicts -> cnnjax MobileNetV2 variables."""

from typing import Any

from cnnjax.convert import mapping
from cnnjax.models import mobilenet


def mobilenet_v2_prefixes(
  name: str, torch_prefixes: set[str]
) -> tuple[dict[str, str], dict[str, Any]]:
  """Every torchvision layer prefix of MobileNet v2 -> its Flax module path."""
  del name, torch_prefixes  # One architecture; the layer list is fixed.
  prefixes = {
    "features.0.0": "features_0/conv",
    "features.0.1": "features_0/bn",
    "classifier.1": "classifier",
  }
  index = 1
  for expansion, _, repeats, _ in mobilenet.V2_BLOCKS:
    for _ in range(repeats):
      # Expansion (if any) and depthwise are conv-BN-ReLU6 pairs "conv.k.0"/"conv.k.1";
      # the linear projection is a bare conv "conv.k" followed by its BN "conv.k+1".
      pairs = 2 if expansion != 1 else 1
      for k in range(pairs):
        prefixes[f"features.{index}.conv.{k}.0"] = f"features_{index}/conv_{k}/conv"
        prefixes[f"features.{index}.conv.{k}.1"] = f"features_{index}/conv_{k}/bn"
      prefixes[f"features.{index}.conv.{pairs}"] = f"features_{index}/conv_{pairs}/conv"
      prefixes[f"features.{index}.conv.{pairs + 1}"] = f"features_{index}/conv_{pairs}/bn"
      index += 1
  prefixes[f"features.{index}.0"] = f"features_{index}/conv"
  prefixes[f"features.{index}.1"] = f"features_{index}/bn"
  return prefixes, {}


mapping.register_mapping(["mobilenet_v2"], mobilenet_v2_prefixes, classifier="classifier.1")
