"""Datasets (TFDS builders), the Grain host pipeline, augmentations, samplers, proposals.

The pipeline's names are loaded on first use, so that the on-device augmentations
(`cnnjax.data.augment`) import without TFDS.
"""

import importlib
from typing import Any

__all__ = ["DatasetInfo", "dataset_info", "eval_iterator", "resolve_data_dir", "train_iterator"]


def __getattr__(name: str) -> Any:
  if name in __all__:
    return getattr(importlib.import_module("cnnjax.data.pipeline"), name)
  raise AttributeError(f"module 'cnnjax.data' has no attribute {name!r}")
