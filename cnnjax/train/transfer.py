"""Transfer learning: pretrained initialisation, head re-initialisation and freezing.

`config.transfer` (see `cnnjax.train.config`) picks the source, a cnnjax workdir
(`init_from`, optionally the subtree `prefix`) or torchvision weights (`torchvision` +
`torchvision_weights`, converted by `cnnjax.convert.torchvision`), and one of the three
modes of the lecture notes:

  linear_probe          train only the head on the frozen model's inference-mode features
                        (BatchNorm on its running statistics, no dropout: what evaluation
                        sees);
  finetune_last_stages  train the head and the parameters matching `trainable` regexes;
  finetune_all          train everything from the pretrained start.

The head is every parameter whose shape differs from the source's (a new class count)
or that matches a `head` regex; it keeps its fresh initialisation. `freezing` turns the
mode into the one `Freezing` the optimizer and the train step read.
"""

import os
import re
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from cnnjax.errors import UsageError
from cnnjax.param_paths import path_names
from cnnjax.train import freezing as freezing_lib

MODES = ("linear_probe", "finetune_last_stages", "finetune_all")


def enabled(transfer: ml_collections.ConfigDict) -> bool:
  """Whether `config.transfer` initialises from pretrained weights."""
  return bool(transfer.init_from or transfer.torchvision)


def load_source(transfer: ml_collections.ConfigDict) -> dict[str, Any]:
  """The pretrained {"params", "batch_stats"} of `config.transfer` as numpy trees."""
  if transfer.init_from:
    variables = load_source_workdir(transfer.init_from)
  else:
    variables = _from_torchvision(transfer.torchvision, transfer.torchvision_weights)
  prefix = transfer.prefix
  if prefix:
    if prefix not in variables["params"]:
      raise UsageError(
        f"transfer.prefix {prefix!r} is not in the source parameters "
        f"({', '.join(sorted(variables['params']))}); fix transfer.prefix."
      )
    variables = {
      "params": variables["params"][prefix],
      "batch_stats": variables.get("batch_stats", {}).get(prefix, {}),
    }
  return variables


def load_source_workdir(path: str) -> dict[str, Any]:
  """{"params", "batch_stats"} (numpy) of the newest checkpoint of a cnnjax workdir."""
  directory = (
    os.path.join(path, "checkpoints") if os.path.isdir(os.path.join(path, "checkpoints")) else path
  )
  if not os.path.isdir(directory):
    raise UsageError(
      f"transfer.init_from {path!r} is not a cnnjax workdir; pass one that holds checkpoints/."
    )
  manager = ocp.CheckpointManager(
    os.path.abspath(directory),
    item_handlers={"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()},
  )
  step = manager.latest_step()
  if step is None:
    raise UsageError(f"transfer.init_from {path!r} holds no checkpoint; train it first.")
  state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  manager.close()
  return jax.tree.map(
    np.asarray, {"params": state["params"], "batch_stats": state.get("batch_stats", {})}
  )


def _from_torchvision(name: str, weights: str | None) -> dict[str, Any]:
  from cnnjax.convert import torchvision as convert_torchvision

  if not weights or not os.path.isfile(weights):
    raise UsageError(
      f"transfer.torchvision_weights {weights!r} is not a file; save "
      f"torchvision's {name} state_dict with torch.save and pass its path."
    )
  import torch  # Only torchvision imports need it.

  state_dict = torch.load(weights, map_location="cpu", weights_only=True)
  return jax.tree.map(np.asarray, convert_torchvision.convert(name, state_dict))


def merge(
  fresh: dict[str, Any], source: dict[str, Any], head_patterns: tuple[str, ...] = ()
) -> tuple[dict[str, Any], list[str]]:
  """Fresh variables with every leaf the source has in the same shape copied over.

  Returns:
    (merged variables, names of the parameters that kept their fresh values: the head).
  """
  head = [re.compile(p) for p in head_patterns]
  kept = []

  def pick(collection):
    names = path_names(fresh[collection])
    source_leaves = dict(
      zip(
        jax.tree.leaves(path_names(source.get(collection, {}))),
        jax.tree.leaves(source.get(collection, {})),
      )
    )

    def choose(name, value):
      other = source_leaves.get(name)
      if other is None or other.shape != value.shape or any(h.search(name) for h in head):
        if collection == "params":
          kept.append(name)
        return value
      return np.asarray(other, dtype=value.dtype)

    return jax.tree.map(choose, names, fresh[collection])

  merged = {"params": pick("params"), "batch_stats": pick("batch_stats")}
  if len(kept) == len(jax.tree.leaves(fresh["params"])):
    raise UsageError(
      "no pretrained parameter fits this model; check transfer.prefix and the model name."
    )
  return merged, kept


def freezing(
  transfer: ml_collections.ConfigDict, params: Any, head: list[str]
) -> freezing_lib.Freezing:
  """What `config.transfer` leaves unchanged in training, for `params` with head `head`.

  `transfer.freeze` regexes freeze in every mode; with pretrained weights, "linear_probe"
  also freezes everything but the head, and the BatchNorm statistics, and
  "finetune_last_stages" everything but the head and the `trainable` regexes.
  """
  frozen = [re.compile(p) for p in transfer.freeze]
  mode = transfer.mode if enabled(transfer) else "finetune_all"
  trainable = [re.compile(p) for p in transfer.trainable] if mode == "finetune_last_stages" else []
  kept = set(head)

  def label(name: str) -> str:
    trains = mode == "finetune_all" or name in kept or any(t.search(name) for t in trainable)
    if trains and not any(f.search(name) for f in frozen):
      return freezing_lib.TRAINED
    return freezing_lib.FROZEN

  labels = jax.tree.map(label, path_names(params))
  if freezing_lib.TRAINED not in jax.tree.leaves(labels):
    raise UsageError("transfer.freeze matches every parameter; leave some trainable.")
  return freezing_lib.Freezing(labels=labels, batch_stats=mode == "linear_probe")
