"""The one way cnnjax names a leaf of a pytree: its key path '/'-joined.

Parameter freezing, transfer learning, checkpoint metadata and the fingerprint all name
leaves with `path_name`, so a name read in one place matches the same leaf in another.
"""

from typing import Any

import jax


def path_name(path: tuple[Any, ...]) -> str:
  """A pytree key path '/'-joined, e.g. 'layer4_1/conv1/kernel' or 'opt_state/0/mu'.

  Dict keys, attribute names and sequence indices alike, so a namedtuple's field reads the
  same in a live tree and in a checkpoint's metadata (where it is a dict key).
  """
  return "/".join(_key_name(key) for key in path)


def _key_name(key: Any) -> str:
  for attribute in ("key", "name", "idx"):
    if hasattr(key, attribute):
      return str(getattr(key, attribute))
  return str(key)


def path_names(tree: Any) -> Any:
  """`tree` with every leaf replaced by its '/'-joined path, e.g. 'layer4_1/conv1/kernel'."""
  return jax.tree_util.tree_map_with_path(lambda path, _: path_name(path), tree)
