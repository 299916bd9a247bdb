"""torchvision GoogLeNet state dicts -> cnnjax GoogLeNet variables.

A state dict with the auxiliary heads (`aux1.*`, `aux2.*`) converts to a model with
aux_logits=True. torchvision's pretrained weights expect `transform_input=True`:
pass it to `convert` as a model keyword.
"""

import re
from typing import Any

from cnnjax.convert import mapping
from cnnjax.models import googlenet

_BRANCHES = ("branch1", "branch2.0", "branch2.1", "branch3.0", "branch3.1", "branch4.1")


def _basic_conv(torch_prefix: str) -> dict[str, str]:
  """One conv + BatchNorm pair: torch "a.b.0" -> Flax "a/b_0"."""
  path = re.sub(r"\.(\d+)", r"_\1", torch_prefix).replace(".", "/")
  return {f"{torch_prefix}.conv": f"{path}/conv", f"{torch_prefix}.bn": f"{path}/bn"}


def googlenet_prefixes(
  name: str, torch_prefixes: set[str]
) -> tuple[dict[str, str], dict[str, Any]]:
  """Every torchvision GoogLeNet layer prefix -> its Flax module path; aux heads if present."""
  del name
  prefixes = {"fc": "fc"}
  for conv in ("conv1", "conv2", "conv3"):
    prefixes.update(_basic_conv(conv))
  for block in googlenet.INCEPTION_WIDTHS:
    for branch in _BRANCHES:
      prefixes.update(_basic_conv(f"inception{block}.{branch}"))
  aux_logits = "aux1.conv.conv" in torch_prefixes
  if aux_logits:
    for head in ("aux1", "aux2"):
      prefixes.update(_basic_conv(f"{head}.conv"))
      prefixes.update({f"{head}.fc1": f"{head}/fc1", f"{head}.fc2": f"{head}/fc2"})
  return prefixes, {"aux_logits": aux_logits}


mapping.register_mapping(["googlenet"], googlenet_prefixes, classifier="fc")
