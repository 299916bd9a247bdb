"""`run(main)`: absl's `app.run` for the benchmarks, with the help of the `cnnjax` command.

`--help` prints the script's docstring and its own flags, `--helpfull` every flag (jax's own
too: `--jax_platforms=cpu`, `--jax_debug_nans`, ...); both exit with status 0, where absl's
exit with 1.
"""

import sys
from typing import Callable

from absl import app
from absl import flags
import jax

from cnnjax.main import HELP_FLAGS


def run(main: Callable[[], None]) -> None:
  """Parses the absl flags of `sys.argv` (jax's included), then calls `main()`."""
  jax.config.config_with_absl()
  options = sys.argv[1 : sys.argv.index("--")] if "--" in sys.argv else sys.argv[1:]
  asked = {HELP_FLAGS[arg] for arg in options if arg in HELP_FLAGS}
  if asked:
    print(sys.modules["__main__"].__doc__.strip(), end="\n\n")
    print(flags.FLAGS.get_help() if "helpfull" in asked else flags.FLAGS.main_module_help().strip())
    sys.exit(0)

  def flags_only(argv: list[str]) -> None:
    if len(argv) > 1:
      raise app.UsageError(
        f"unexpected arguments {' '.join(argv[1:])}; the benchmarks take flags only"
      )
    main()

  app.run(flags_only)
