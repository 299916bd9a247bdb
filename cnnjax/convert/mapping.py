"""Generic torch-module -> Flax-module weight mapping, shared by every model family.

A family supplies, for a model name and the torch module prefixes present in a state dict,
a dict from torch module prefixes ("features.0", "layer1.0.bn1") to Flax module paths
("features_0", "layer1_0/bn1"), plus any model keyword arguments the state dict implies
(GoogLeNet's auxiliary heads). The tensors under each
prefix say what the layer is: running statistics or a 1-D `weight` make it BatchNorm, a
4-D `weight` a convolution, a 2-D `weight` a dense layer.
"""

from typing import Any, Callable, Mapping

import flax
import numpy as np

from cnnjax.errors import UsageError

# (model name, torch prefixes present) -> ({torch prefix: flax path "a/b/c"}, model kwargs).
Mapping_ = Callable[[str, set[str]], tuple[dict[str, str], dict[str, Any]]]
# model name -> (mapping, torch prefix of the final classifier layer).
_MAPPINGS: dict[str, tuple[Mapping_, str]] = {}


def register_mapping(names: list[str], mapping: Mapping_, classifier: str) -> None:
  """Declares that the torchvision models `names` convert through `mapping`.

  `classifier` is the torch prefix of the final dense layer; its output size sets num_classes.
  """
  for name in names:
    _MAPPINGS[name] = (mapping, classifier)


def convertible_names() -> list[str]:
  """The torchvision model names that `cnnjax.convert.torchvision.convert` accepts, sorted."""
  return sorted(_MAPPINGS)


def prefix_mapping(
  name: str, state_dict: Mapping[str, Any]
) -> tuple[dict[str, str], dict[str, Any]]:
  """Returns (torch prefix -> flax path, model kwargs) for `name`, with num_classes set."""
  if name not in _MAPPINGS:
    raise UsageError(
      f"no torchvision conversion for {name!r}; convertible models: "
      f"{', '.join(convertible_names())}"
    )
  mapping, classifier = _MAPPINGS[name]
  if f"{classifier}.weight" not in state_dict:
    raise UsageError(
      f"state dict has no classifier {classifier}.weight; is it a {name} state dict?"
    )
  prefixes, model_kwargs = mapping(name, {k.rpartition(".")[0] for k in state_dict})
  num_classes = int(state_dict[f"{classifier}.weight"].shape[0])
  return prefixes, {**model_kwargs, "num_classes": num_classes}


def _to_numpy(tensor: Any) -> np.ndarray:
  """A float32 copy: never a view of the tensor, which torch may update in place later
  (a training-mode forward rewrites the BatchNorm statistics, an optimizer the weights)."""
  if hasattr(tensor, "detach"):  # torch.Tensor, without importing torch here.
    # numpy has no bfloat16 (nor torch's other low-precision floats): widen in torch first.
    tensor = tensor.detach().cpu().float().numpy()
  return np.array(tensor, dtype=np.float32, copy=True)


def _is_norm(tensors: dict[str, np.ndarray]) -> bool:
  """BatchNorm: running statistics, or a 1-D weight (a per-channel scale) without them."""
  weight = tensors.get("weight")
  return bool({"running_mean", "running_var"} & set(tensors)) or (
    weight is not None and weight.ndim == 1
  )


def _missing_tensors(prefix: str, tensors: dict[str, np.ndarray]) -> list[str]:
  """Keys one layer lacks: every layer needs a weight, BatchNorm also its bias and statistics."""
  needed = {"weight"}
  if _is_norm(tensors):
    needed |= {"bias", "running_mean", "running_var"}
  return [f"{prefix}.{leaf}" for leaf in sorted(needed - set(tensors))]


def _wrong_rank(prefix: str, tensors: dict[str, np.ndarray]) -> list[str]:
  """The layer's weight key and shape when no layer has a weight of that rank."""
  weight = tensors.get("weight")
  if weight is None or weight.ndim in (1, 2, 4):
    return []
  return [f"{prefix}.weight {tuple(weight.shape)}"]


def _layer_variables(tensors: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
  """Torch tensors of one checked layer -> {"params": ..., "batch_stats": ...} for its module."""
  if _is_norm(tensors):
    return {
      "params": {"scale": tensors["weight"], "bias": tensors["bias"]},
      "batch_stats": {"mean": tensors["running_mean"], "var": tensors["running_var"]},
    }
  weight = tensors["weight"]
  if weight.ndim == 4:  # [out, in/groups, kh, kw] -> [kh, kw, in/groups, out]
    kernel = weight.transpose(2, 3, 1, 0)
  else:  # [out, in] -> [in, out]; map_state_dict has refused every other rank.
    kernel = weight.T
  params = {"kernel": kernel}
  if "bias" in tensors:
    params["bias"] = tensors["bias"]
  return {"params": params}


def map_state_dict(state_dict: Mapping[str, Any], prefixes: dict[str, str]) -> dict:
  """Builds Flax variables from a torch state dict through `prefixes`.

  Raises:
    UsageError: naming the state-dict keys no prefix claims, the prefixes with no tensors,
      the keys a layer lacks and the weights of a rank no layer has.
  """
  grouped: dict[str, dict[str, np.ndarray]] = {}
  unexpected = []
  for key, tensor in state_dict.items():
    prefix, _, leaf = key.rpartition(".")
    if leaf == "num_batches_tracked":
      continue
    if prefix not in prefixes:
      unexpected.append(key)
      continue
    grouped.setdefault(prefix, {})[leaf] = _to_numpy(tensor)
  missing = [p for p in prefixes if p not in grouped]
  missing_keys = [k for p, tensors in grouped.items() for k in _missing_tensors(p, tensors)]
  wrong_rank = [k for p, tensors in grouped.items() for k in _wrong_rank(p, tensors)]
  if unexpected or missing or missing_keys or wrong_rank:
    problems = {
      "unexpected keys": sorted(unexpected),
      "missing layers": missing,
      "missing keys": missing_keys,
      "weights not 1-D (BatchNorm), 2-D (dense) or 4-D (conv)": wrong_rank,
    }
    raise UsageError(
      "state dict does not match: "
      + "; ".join(f"{what} {found[:10]}" for what, found in problems.items() if found)
    )
  flat: dict[tuple[str, ...], np.ndarray] = {}
  for prefix, tensors in grouped.items():
    path = tuple(prefixes[prefix].split("/"))
    for collection, leaves in _layer_variables(tensors).items():
      for leaf, value in leaves.items():
        flat[(collection, *path, leaf)] = value
  return flax.traverse_util.unflatten_dict(flat)


def check_against(variables: dict, expected: dict) -> None:
  """Raises UsageError naming every path whose presence or shape differs from `expected`.

  expected: a variables tree of ShapeDtypeStructs (from jax.eval_shape of model.init).
  """
  got = flax.traverse_util.flatten_dict(variables, sep="/")
  want = flax.traverse_util.flatten_dict(flax.core.unfreeze(expected), sep="/")
  missing = sorted(set(want) - set(got))
  extra = sorted(set(got) - set(want))
  wrong = sorted(k for k in set(got) & set(want) if tuple(got[k].shape) != tuple(want[k].shape))
  if missing or extra or wrong:
    details = [
      f"missing {missing[:10]}" if missing else "",
      f"unexpected {extra[:10]}" if extra else "",
      "shape mismatch " + ", ".join(f"{k}: {got[k].shape} vs {want[k].shape}" for k in wrong[:10])
      if wrong
      else "",
    ]
    raise UsageError(
      "converted weights do not fit the model: " + "; ".join(d for d in details if d)
    )
