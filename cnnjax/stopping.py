"""Stop requests from SIGTERM and Ctrl-C (SIGINT), caught from the first instant of a process.

The command line installs the handlers before it imports anything heavy, so a signal that
arrives during start-up is kept, not lost; the training loop polls `requested()` between
steps, saves a checkpoint and returns. A second Ctrl-C raises KeyboardInterrupt at once,
for a user who does not want to wait for that save.

Only the standard library is imported here: this module loads before jax does.
"""

import signal
import threading

_received: list[int] = []  # The signals received since `install`, in order.
_previous: dict[int, object] = {}  # The handlers that `install` replaced.
_depth = 0  # Nested installs (the command line, then `cnnjax.train.run`) restore once.


def _handle(signum: int, frame: object) -> None:
  del frame
  if signum == signal.SIGINT and signal.SIGINT in _received:
    raise KeyboardInterrupt
  _received.append(signum)


def install() -> None:
  """Turns SIGTERM and SIGINT into stop requests (from the main thread; elsewhere a no-op)."""
  global _depth
  if threading.current_thread() is not threading.main_thread():
    return
  if _depth == 0:
    _received.clear()
    for signum in (signal.SIGTERM, signal.SIGINT):
      _previous[signum] = signal.signal(signum, _handle)
  _depth += 1


def uninstall() -> None:
  """Undoes the matching `install`; the outermost one restores the previous handlers."""
  global _depth
  if threading.current_thread() is not threading.main_thread() or _depth == 0:
    return
  _depth -= 1
  if _depth == 0:
    for signum, handler in _previous.items():
      signal.signal(signum, handler)
    _previous.clear()


def requested() -> str | None:
  """The name of the first stop signal received ("SIGTERM" or "SIGINT"), or None."""
  return signal.Signals(_received[0]).name if _received else None


def exit_status(name: str) -> int:
  """The shell's status for a process ended by signal `name`: 128 + its number."""
  return 128 + signal.Signals[name].value
