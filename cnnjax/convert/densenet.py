"""torchvision DenseNet-121/161/169/201 state dicts -> cnnjax DenseNet variables."""

from typing import Any

from cnnjax.convert import mapping
from cnnjax.models import densenet


def densenet_prefixes(name: str, torch_prefixes: set[str]) -> tuple[dict[str, str], dict[str, Any]]:
  """Every torchvision layer prefix of DenseNet `name` -> its Flax module path.

  torchvision's released checkpoint files name dense-layer modules "norm.1" where its
  models say "norm1" (torchvision renames them on load); both spellings convert.
  """
  block_config = densenet.VARIANTS[name]["block_config"]
  prefixes = {
    "features.conv0": "conv0",
    "features.norm0": "norm0",
    "features.norm5": "norm5",
    "classifier": "classifier",
  }
  for i, num_layers in enumerate(block_config):
    for j in range(num_layers):
      torch_layer = f"features.denseblock{i + 1}.denselayer{j + 1}"
      flax_layer = f"denseblock{i + 1}_denselayer{j + 1}"
      for sub in ("norm1", "conv1", "norm2", "conv2"):
        released = f"{torch_layer}.{sub[:-1]}.{sub[-1]}"
        torch_prefix = released if released in torch_prefixes else f"{torch_layer}.{sub}"
        prefixes[torch_prefix] = f"{flax_layer}/{sub}"
    if i != len(block_config) - 1:
      for sub in ("norm", "conv"):
        prefixes[f"features.transition{i + 1}.{sub}"] = f"transition{i + 1}/{sub}"
  return prefixes, {}


mapping.register_mapping(list(densenet.VARIANTS), densenet_prefixes, classifier="classifier")
