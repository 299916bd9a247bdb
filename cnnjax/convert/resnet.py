"""torchvision ResNet-18..152 state dicts -> cnnjax ResNet variables."""

from typing import Any

from cnnjax.convert import mapping
from cnnjax.models import resnet


def resnet_prefixes(name: str, torch_prefixes: set[str]) -> tuple[dict[str, str], dict[str, Any]]:
  """Every torchvision layer prefix of ResNet `name` -> its Flax module path."""
  del torch_prefixes  # The layer list follows from the name alone.
  stage_sizes, block = resnet.IMAGENET_STAGES[name]
  convs = ("conv1", "conv2") if block is resnet.BasicBlock else ("conv1", "conv2", "conv3")
  prefixes = {"conv1": "conv1", "bn1": "bn1", "fc": "fc"}
  for i, num_blocks in enumerate(stage_sizes):
    for j in range(num_blocks):
      torch_block, flax_block = f"layer{i + 1}.{j}", f"layer{i + 1}_{j}"
      for conv in convs:
        bn = conv.replace("conv", "bn")
        prefixes[f"{torch_block}.{conv}"] = f"{flax_block}/{conv}"
        prefixes[f"{torch_block}.{bn}"] = f"{flax_block}/{bn}"
      # Projection shortcuts: the first block of every stage (stage 1 too, for bottlenecks).
      if j == 0 and (i > 0 or block is resnet.Bottleneck):
        prefixes[f"{torch_block}.downsample.0"] = f"{flax_block}/downsample/conv"
        prefixes[f"{torch_block}.downsample.1"] = f"{flax_block}/downsample/bn"
  return prefixes, {}


mapping.register_mapping(list(resnet.IMAGENET_STAGES), resnet_prefixes, classifier="fc")
