"""The `cnnjax` command line.

    cnnjax train --config=experiments/configs/lenet_digits.py --workdir=workdirs/lenet_digits
    cnnjax train --config=experiments/configs/resnet_cifar10.py:local --config.batch_size=64 ...
    cnnjax eval --config=... --workdir=...       # evaluates the newest checkpoint
    cnnjax models                                # lists the model names
    cnnjax summary resnet50 --input=224,224,3 --num-classes=1000

Multi-host runs add `--distributed` (Cloud TPU, SLURM: detected automatically) or
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I`.
Mistakes a user can make print one line, `cnnjax: error: ...`, and exit with status 2.
"""

import json
import sys

from absl import flags
from ml_collections import config_flags

from cnnjax.errors import UsageError

COMMANDS = ("train", "eval", "models", "summary")
USAGE = ("usage: cnnjax {train,eval} --config=FILE[:ARG] --workdir=DIR [--config.KEY=VALUE ...]"
         " | cnnjax models | cnnjax summary NAME [--input=H,W,C] [--num-classes=N]")

FLAGS = flags.FlagValues()
_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file[:arg]",
                                          flag_values=FLAGS, lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "directory for checkpoints and logs",
                               flag_values=FLAGS)
_INPUT = flags.DEFINE_string("input", None, "H,W,C input shape for `summary`", flag_values=FLAGS)
_NUM_CLASSES = flags.DEFINE_integer("num_classes", 1000, "classes for `summary`",
                                    flag_values=FLAGS)
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize()",
                                 flag_values=FLAGS)
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "multi-host coordinator",
                                   flag_values=FLAGS)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "multi-host process count",
                                      flag_values=FLAGS)
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "this process's index",
                                   flag_values=FLAGS)


def _parse(argv: list[str]) -> tuple[str, list[str]]:
  """(command, positional arguments) after parsing the flags in `argv`."""
  if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
    raise UsageError(USAGE)
  command = argv[1]
  if command not in COMMANDS:
    raise UsageError(f"unknown command {command!r}; choose one of {', '.join(COMMANDS)}.")
  rest = [a.replace("--num-classes", "--num_classes", 1) for a in argv[2:]]
  FLAGS.unparse_flags()  # A fresh parse, also when `main` runs twice in one process.
  try:
    positional = FLAGS([argv[0], *rest])[1:]
  except flags.Error as error:
    raise UsageError(_one_line(error)) from None
  return command, positional


def _one_line(error: Exception) -> str:
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return " ".join(lines[:2]) if lines else type(error).__name__


def _experiment_flags() -> tuple:
  if _CONFIG.value is None:
    raise UsageError("--config=FILE is required; e.g. --config=experiments/configs/"
                     "lenet_digits.py")
  if not _WORKDIR.value:
    raise UsageError("--workdir=DIR is required.")
  return _CONFIG.value, _WORKDIR.value


def _initialize_distributed() -> None:
  import jax
  if _COORDINATOR.value:
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
  elif _DISTRIBUTED.value:
    jax.distributed.initialize()


def main(argv: list[str]) -> int:
  """Runs one command; returns the exit status."""
  command, positional = _parse(argv)
  if command == "models":
    from cnnjax import models
    print("\n".join(models.names()))
    return 0
  if command == "summary":
    return _summary(positional)
  if positional:
    raise UsageError(f"unexpected arguments {' '.join(positional)}; {USAGE}")
  config, workdir = _experiment_flags()
  _initialize_distributed()
  from cnnjax.train import loop
  result = loop.run(config, workdir, train=command == "train")
  if command == "eval":
    print(json.dumps(result, sort_keys=True))
  return 0


def _summary(positional: list[str]) -> int:
  if len(positional) != 1:
    raise UsageError("usage: cnnjax summary NAME [--input=H,W,C] [--num-classes=N]")
  from cnnjax.ops import summary
  input_shape = None
  if _INPUT.value:
    try:
      input_shape = tuple(int(v) for v in _INPUT.value.split(","))
    except ValueError:
      raise UsageError(f"--input={_INPUT.value} is not H,W,C integers, e.g. 224,224,3.") from None
    if len(input_shape) != 3:
      raise UsageError(f"--input={_INPUT.value} needs three numbers H,W,C, e.g. 224,224,3.")
  result = summary.summarize(positional[0], input_shape, _NUM_CLASSES.value)
  print(summary.format_summary(result))
  return 0


def run_cli(argv: list[str] | None = None) -> None:
  """Console-script entry point: runs `main` and turns UsageError into one line and status 2."""
  try:
    status = main(list(sys.argv if argv is None else argv))
  except UsageError as error:
    print(f"cnnjax: error: {_one_line(error)}", file=sys.stderr)
    sys.exit(2)
  sys.exit(status)


if __name__ == "__main__":
  run_cli()
