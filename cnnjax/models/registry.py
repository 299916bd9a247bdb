"""Name -> constructor registry for every model in the zoo."""

import dataclasses
import difflib
import functools
import numbers
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


def create(name: str, /, **kwargs) -> nn.Module:
  """Builds the registered model `name`; keyword arguments override its fields.

  Raises:
    UsageError: `name` is not registered, a keyword is not a field of the model (the
      messages list the closest names), or `num_classes` is neither None nor a positive int.
  """
  if name not in _CONSTRUCTORS:
    hint = _did_you_mean(name, names()) or "run `cnnjax models` to list them."
    raise UsageError(f"unknown model {name!r}; {hint}")
  constructor = _CONSTRUCTORS[name]
  module_class = constructor.func if isinstance(constructor, functools.partial) else constructor
  fields = sorted(f.name for f in dataclasses.fields(module_class) if f.name != "parent")
  unknown = sorted(set(kwargs) - set(fields))
  if unknown:
    hint = _did_you_mean(unknown[0], fields) or f"its fields are {', '.join(fields)}."
    raise UsageError(f"model {name} has no field {unknown[0]!r}; {hint}")
  num_classes = kwargs.get("num_classes")
  is_count = isinstance(num_classes, numbers.Integral) and not isinstance(num_classes, bool)
  if num_classes is not None and not (is_count and num_classes >= 1):
    raise UsageError(f"num_classes must be a positive int or None, got {num_classes!r}.")
  return constructor(**kwargs)


def _did_you_mean(word: str, choices: list[str]) -> str | None:
  """'did you mean a, b?' for the choices closest to `word`; None when none is close."""
  close = difflib.get_close_matches(word, choices, n=5, cutoff=0.4)
  return f"did you mean {', '.join(close)}?" if close else None
