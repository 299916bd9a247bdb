"""The `arg` of an experiment config's `get_config(arg)` (`--config=FILE.py:ARG`).

`arg` is a comma-separated list of variant names, e.g. "resnet56,local". Every config
checks it here, so a misspelt variant is an error instead of the full experiment:

    options = config_args.parse(arg, ("resnet20", "resnet56", "local"), __file__)
    depth = config_args.pick(options, ("resnet20", "resnet56"), "resnet20")
"""

import difflib
import os
from typing import Sequence

from cnnjax.errors import UsageError


def parse(arg: str | None, accepted: Sequence[str], config_file: str) -> set[str]:
  """The variants named in `arg`.

  Args:
    arg: `get_config`'s argument; None or "" names none.
    accepted: every variant the config knows.
    config_file: the config's `__file__`, named in the error.

  Returns:
    The set of variants in `arg`.

  Raises:
    UsageError: a variant that is not in `accepted`, naming the accepted ones.
  """
  given = [option.strip() for option in (arg or "").split(",") if option.strip()]
  for option in given:
    if option not in accepted:
      close = difflib.get_close_matches(option, accepted, n=1)
      hint = f"did you mean {close[0]!r}? " if close else ""
      raise UsageError(
        f"{os.path.basename(config_file)} has no variant {option!r}; {hint}"
        f"choose from {', '.join(accepted)} (comma-separated)."
      )
  return set(given)


def pick(options: set[str], choices: Sequence[str], default: str) -> str:
  """The one variant of `choices` in `options`, else `default`; UsageError for several."""
  chosen = [choice for choice in choices if choice in options]
  if len(chosen) > 1:
    raise UsageError(
      f"variants {' and '.join(chosen)} exclude each other; pick one of {', '.join(choices)}."
    )
  return chosen[0] if chosen else default
