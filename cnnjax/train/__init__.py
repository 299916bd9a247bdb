"""The trainer: train state, parallel runners, optimizers, checkpoints, the loop and tasks.

`run` and `evaluate` are loaded on first use, so that importing one part of the trainer
(`cnnjax.train.parallel`, a task) does not import the loop and its data pipeline.
"""

import importlib
from typing import Any

__all__ = ["evaluate", "run"]


def __getattr__(name: str) -> Any:
  if name in __all__:
    return getattr(importlib.import_module("cnnjax.train.loop"), name)
  raise AttributeError(f"module 'cnnjax.train' has no attribute {name!r}")
