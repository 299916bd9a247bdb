"""Name -> constructor registry for every model in the zoo, with each model's native input."""

import dataclasses
import difflib
import functools
import numbers
from typing import Any, Callable

import flax.linen as nn

from cnnjax.errors import UsageError

# The ImageNet crop: the native input of every model registered without one.
IMAGENET_INPUT = (224, 224, 3)

# Strings that a config may give for an activation field (`model_kwargs.activation=relu`
# on the command line), each resolved to the flax.linen function of that name.
ACTIVATIONS = (
  "celu",
  "elu",
  "gelu",
  "hard_sigmoid",
  "hard_silu",
  "hard_swish",
  "hard_tanh",
  "leaky_relu",
  "log_sigmoid",
  "relu",
  "relu6",
  "selu",
  "sigmoid",
  "silu",
  "soft_sign",
  "softplus",
  "swish",
  "tanh",
)


@dataclasses.dataclass(frozen=True)
class _Entry:
  """One registered model: how to build it and the (H, W, C) image it was designed for."""

  constructor: Callable[..., nn.Module]
  input_shape: tuple[int, int, int]


_ENTRIES: dict[str, _Entry] = {}


def register(
  name: str,
  constructor: Callable[..., nn.Module],
  input_shape: tuple[int, int, int] = IMAGENET_INPUT,
) -> None:
  """Registers `constructor` (a Module class or a `functools.partial` of one) as `name`.

  Args:
    name: the model's name in `create` and on the command line.
    constructor: builds the model from keyword overrides of its fields.
    input_shape: (H, W, C) of the one image the model was designed for (its paper's input),
      what `cnnjax summary NAME` measures without --input.
  """
  if name in _ENTRIES:
    raise ValueError(f"model {name!r} is registered twice")
  _ENTRIES[name] = _Entry(constructor, tuple(input_shape))


def names() -> list[str]:
  """All registered model names, sorted."""
  return sorted(_ENTRIES)


def native_input(name: str) -> tuple[int, int, int]:
  """(H, W, C) of the image that model `name` was designed for, e.g. (32, 32, 1) for lenet5.

  Raises:
    UsageError: `name` is not registered.
  """
  return _entry(name).input_shape


def create(name: str, /, **kwargs) -> nn.Module:
  """Builds the registered model `name`; keyword arguments override its fields.

  An activation field (`activation`, `*_activation`) also takes the name of a flax.linen
  activation from `ACTIVATIONS`, so a config string such as "relu" works.

  Raises:
    UsageError: `name` is not registered, a keyword is not a field of the model (the
      messages list the closest names), `num_classes` is neither None nor a positive int,
      or an activation is neither callable nor one of `ACTIVATIONS`.
  """
  constructor = _entry(name).constructor
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
  for field, value in kwargs.items():
    if field == "activation" or field.endswith("_activation"):
      kwargs[field] = _activation(name, field, value)
  return constructor(**kwargs)


def _entry(name: Any) -> _Entry:
  if not isinstance(name, str):
    raise UsageError(
      f"a model name must be a string such as 'resnet50', got {name!r}; run "
      "`cnnjax models` to list them."
    )
  if name not in _ENTRIES:
    hint = _did_you_mean(name, names()) or "run `cnnjax models` to list them."
    raise UsageError(f"unknown model {name!r}; {hint}")
  return _ENTRIES[name]


def _activation(model: str, field: str, value: Any) -> Callable:
  """`value` itself when callable, the flax.linen function when it names one of ACTIVATIONS."""
  if callable(value):
    return value
  if isinstance(value, str) and value in ACTIVATIONS:
    return getattr(nn, value)
  raise UsageError(
    f"model {model} field {field} must be a function or one of "
    f"{', '.join(ACTIVATIONS)}; got {value!r}."
  )


def _did_you_mean(word: str, choices: list[str]) -> str | None:
  """'did you mean a, b?' for the choices closest to `word`; None when none is close."""
  close = difflib.get_close_matches(word, choices, n=5, cutoff=0.4)
  return f"did you mean {', '.join(close)}?" if close else None
