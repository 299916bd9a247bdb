"""Name -> constructor registry for every model in the zoo."""

import difflib
from typing import Callable

import flax.linen as nn

from cnnjax.errors import UsageError

_CONSTRUCTORS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str, constructor: Callable[..., nn.Module]) -> None:
  """Registers `constructor` (a Module class or a `functools.partial` of one) as `name`."""
  if name in _CONSTRUCTORS:
    raise ValueError(f"model {name!r} is registered twice")
  _CONSTRUCTORS[name] = constructor


def names() -> list[str]:
  """All registered model names, sorted."""
  return sorted(_CONSTRUCTORS)


def create(name: str, **kwargs) -> nn.Module:
  """Builds the registered model `name`; keyword arguments override its fields.

  Raises:
    UsageError: `name` is not registered; the message lists the closest names.
  """
  if name not in _CONSTRUCTORS:
    close = difflib.get_close_matches(name, names(), n=5, cutoff=0.4)
    hint = f"did you mean {', '.join(close)}?" if close else "run `cnnjax models` to list them."
    raise UsageError(f"unknown model {name!r}; {hint}")
  return _CONSTRUCTORS[name](**kwargs)
