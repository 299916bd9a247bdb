"""torchvision state dicts -> cnnjax Flax variables.

variables = convert("resnet50", torchvision.models.resnet50(weights=...).state_dict())
logits = cnnjax.models.create("resnet50").apply(variables, images_nhwc)
"""

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from cnnjax import models
from cnnjax.convert import mapping

# Each family module registers its torchvision mappings on import.
import cnnjax.convert.densenet  # noqa: F401
import cnnjax.convert.mobilenet  # noqa: F401
import cnnjax.convert.resnet  # noqa: F401
import cnnjax.convert.alexnet  # noqa: F401
import cnnjax.convert.vgg  # noqa: F401
import cnnjax.convert.googlenet  # noqa: F401

__all__ = ["convert", "convertible_names"]

convertible_names = mapping.convertible_names


def convert(name: str, state_dict: Mapping[str, Any], **model_kwargs) -> dict:
  """Maps a torchvision state dict (torch tensors or numpy arrays) to Flax variables.

  The number of classes is read from the state dict's classifier, so fine-tuned
  checkpoints convert too. `model_kwargs` are passed to `cnnjax.models.create`.

  Returns:
    {"params": ..., "batch_stats": ...} for `cnnjax.models.create(name, ...)`.
  Raises:
    UsageError: unknown model, or keys/shapes that do not match, naming them.
  """
  prefixes, implied_kwargs = mapping.prefix_mapping(name, state_dict)
  variables = mapping.map_state_dict(state_dict, prefixes)
  model = models.create(name, **{**implied_kwargs, **model_kwargs})
  expected = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3))))
  mapping.check_against(variables, expected)
  return variables
