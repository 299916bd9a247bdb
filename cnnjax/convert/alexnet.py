"""torchvision AlexNet state dicts -> cnnjax AlexNet variables.

The Flax model flattens its pooled features in torch's [N, C, H, W] order, so fc6's
kernel needs no permutation.
"""

from typing import Any

from cnnjax.convert import mapping

# torchvision's `features` / `classifier` Sequential indices -> Flax module names.
PREFIXES = {
  "features.0": "conv1",
  "features.3": "conv2",
  "features.6": "conv3",
  "features.8": "conv4",
  "features.10": "conv5",
  "classifier.1": "fc6",
  "classifier.4": "fc7",
  "classifier.6": "fc8",
}


def alexnet_prefixes(name: str, torch_prefixes: set[str]) -> tuple[dict[str, str], dict[str, Any]]:
  """Every torchvision AlexNet layer prefix -> its Flax module path."""
  del name, torch_prefixes  # One fixed layer list.
  return dict(PREFIXES), {}


mapping.register_mapping(["alexnet"], alexnet_prefixes, classifier="classifier.6")
