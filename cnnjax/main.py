"""The `cnnjax` command line.

    cnnjax train --config=experiments/configs/lenet_digits.py --workdir=workdirs/lenet_digits
    cnnjax train --config=experiments/configs/resnet_cifar10.py:local --config.batch_size=64 ...
    cnnjax eval --config=... --workdir=...       # evaluates the newest checkpoint
    cnnjax models                                # lists the model names
    cnnjax summary resnet50 --input=224,224,3 --num-classes=1000

Multi-host runs add `--distributed` (Cloud TPU, SLURM: detected automatically) or
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I`.
`--config.model_kwargs.KEY=VALUE` sets any field of the model (e.g. `width=8`); other
`--config.KEY` overrides must name keys the config has.
SIGTERM saves a checkpoint and exits with status 0, or `--preempted_exit_code` (launchers
use 75 to tell a stopped run, which must be started again, from a finished one).
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


def _define_flags(argv: list[str]) -> flags.FlagValues:
  """A fresh set of the command's flags for `argv` (so `main` can run more than once)."""
  values = flags.FlagValues()
  # New keys are accepted so that `--config.model_kwargs.KEY=VALUE` can set any module
  # field; `cnnjax.train.config.validate` rejects unknown keys everywhere else.
  config_flags.DEFINE_config_file("config", None, "experiment config file[:arg]",
                                  flag_values=values, lock_config=False,
                                  accept_new_attributes=True, sys_argv=argv)
  flags.DEFINE_string("workdir", None, "directory for checkpoints and logs", flag_values=values)
  flags.DEFINE_string("input", None, "H,W,C input shape for `summary`", flag_values=values)
  flags.DEFINE_integer("num_classes", None, "classes for `summary` (default: the model's)",
                       flag_values=values)
  flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize()",
                    flag_values=values)
  flags.DEFINE_string("coordinator_address", None, "multi-host coordinator HOST:PORT",
                      flag_values=values)
  flags.DEFINE_integer("num_processes", None, "multi-host process count", flag_values=values)
  flags.DEFINE_integer("process_id", None, "this process's index", flag_values=values)
  flags.DEFINE_integer("preempted_exit_code", 0,
                       "exit status of a `train` that SIGTERM stopped before its last step "
                       "(after saving a checkpoint); launchers that restart failed jobs set "
                       "it non-zero", flag_values=values)
  return values


def _parse(argv: list[str]) -> tuple[str, list[str], flags.FlagValues]:
  """(command, positional arguments, parsed flags) of `argv`."""
  if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
    raise UsageError(USAGE)
  command = argv[1]
  if command not in COMMANDS:
    raise UsageError(f"unknown command {command!r}; choose one of {', '.join(COMMANDS)}.")
  rest = [a.replace("--num-classes", "--num_classes", 1) for a in argv[2:]]
  values = _define_flags([argv[0], *rest])
  try:
    positional = values([argv[0], *rest])[1:]
  except flags.Error as error:
    raise UsageError(_one_line(_wrapped_usage_error(error) or error)) from None
  except (KeyError, AttributeError) as error:  # config_flags: an override of no such key.
    raise UsageError(f"unknown config key {_one_line(error)} in a --config.KEY override; "
                     "check its spelling.") from None
  except OSError as error:  # config_flags: the config file cannot be read.
    raise UsageError(f"cannot read the --config file: {_one_line(error)}") from None
  except (TypeError, ValueError) as error:  # config_flags: a value of the wrong type.
    raise UsageError(f"bad --config value: {_one_line(error)}") from None
  return command, positional, values


def _wrapped_usage_error(error: BaseException) -> UsageError | None:
  """The first UsageError raised under `error`, e.g. by a config's `get_config(arg)`.

  config_flags re-raises get_config's errors with their traceback as the message, and absl
  wraps that again; the original holds the one line to print.
  """
  found = None
  while error is not None:
    if isinstance(error, UsageError):
      found = error
    error = error.__cause__ or error.__context__
  return found


def _one_line(error: Exception) -> str:
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return " ".join(lines[:2]) if lines else type(error).__name__


def _experiment_flags(values: flags.FlagValues) -> tuple:
  if values.config is None:
    raise UsageError("--config=FILE is required; e.g. --config=experiments/configs/"
                     "lenet_digits.py")
  if not values.workdir:
    raise UsageError("--workdir=DIR is required.")
  config = values.config
  try:
    config.keys()  # config_flags defers a file that failed to load until first use.
  except OSError as error:
    reason = str(error).strip().splitlines()[-1].strip()
    raise UsageError(f"cannot load the --config file: {reason}") from None
  return config, values.workdir


def _enable_compilation_cache() -> None:
  """Reuses compiled steps across runs (a resumed or repeated run starts faster).

  $CNNJAX_COMPILATION_CACHE names the directory; an empty value turns the cache off.
  """
  import os
  import jax
  directory = os.environ.get("CNNJAX_COMPILATION_CACHE",
                             os.path.join(os.path.expanduser("~"), ".cache", "cnnjax", "xla"))
  if directory and not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def _initialize_distributed(values: flags.FlagValues) -> None:
  import jax
  if values.coordinator_address or values.distributed:
    # CPU devices need gloo for cross-process collectives; GPU and TPU ignore this setting.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if values.coordinator_address:
    jax.distributed.initialize(coordinator_address=values.coordinator_address,
                               num_processes=values.num_processes, process_id=values.process_id)
  elif values.distributed:
    jax.distributed.initialize()


def main(argv: list[str]) -> int:
  """Runs one command; returns the exit status."""
  command, positional, values = _parse(argv)
  if command == "models":
    from cnnjax import models
    print("\n".join(models.names()))
    return 0
  if command == "summary":
    return _summary(positional, values)
  if positional:
    raise UsageError(f"unexpected arguments {' '.join(positional)}; {USAGE}")
  config, workdir = _experiment_flags(values)
  _enable_compilation_cache()
  _initialize_distributed(values)
  from cnnjax.train import loop
  result = loop.run(config, workdir, train=command == "train")
  if command == "eval":
    print(json.dumps(result, sort_keys=True))
  if result.get("preempted"):
    return values.preempted_exit_code
  return 0


def _summary(positional: list[str], values: flags.FlagValues) -> int:
  if len(positional) != 1:
    raise UsageError("usage: cnnjax summary NAME [--input=H,W,C] [--num-classes=N]")
  from cnnjax.ops import summary
  input_shape = None
  if values.input:
    try:
      input_shape = tuple(int(v) for v in values.input.split(","))
    except ValueError:
      raise UsageError(f"--input={values.input} is not H,W,C integers, e.g. 224,224,3.") from None
    if len(input_shape) != 3:
      raise UsageError(f"--input={values.input} needs three numbers H,W,C, e.g. 224,224,3.")
  num_classes = ... if values.num_classes is None else values.num_classes
  result = summary.summarize(positional[0], input_shape, num_classes)
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
