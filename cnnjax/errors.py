"""The one exception type for mistakes a user can make and fix.

The command line prints a `UsageError` as a single line without a traceback and exits
non-zero; every other exception is a bug and keeps its traceback.
"""


class UsageError(ValueError):
  """A one-line, actionable error caused by the user's input (name, shape, path, config)."""
