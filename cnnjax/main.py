"""The `cnnjax` command line.

    cnnjax --help                                # the commands; `cnnjax train --help`: its flags
    cnnjax train --config=experiments/configs/lenet_digits.py --workdir=workdirs/lenet_digits
    cnnjax train --config=experiments/configs/resnet_cifar10.py:local --config.batch_size=64 ...
    cnnjax eval --config=... --workdir=...       # evaluates the newest checkpoint
    cnnjax config [--config=...] [--task=NAME]   # every config key, its value and its meaning
    cnnjax models                                # lists the model names
    cnnjax summary resnet50 --input=224,224,3 --num-classes=1000
    cnnjax plan --config=experiments/configs/resnet50_imagenet.py --topology=v5e:2x4
    cnnjax show gradcam --workdir=workdirs/lenet_digits  # pictures: filters, features, ...

Multi-host runs add `--distributed` (Cloud TPU, SLURM: detected automatically) or
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I`.
`--config.model_kwargs.KEY=VALUE` sets any field of the model (e.g. `width=8`); other
`--config.KEY` overrides must name keys the config has.
SIGTERM saves a checkpoint and exits with status 0, or `--preempted_exit_code` (launchers
use 75 to tell a stopped run, which must be started again, from a finished one); Ctrl-C
saves and exits with 130, and a second Ctrl-C aborts at once.
Mistakes a user can make print one line, `cnnjax: error: ...`, and exit with status 2.
jax's own flags (`--jax_platforms=cpu`, `--jax_debug_nans`, ...) set `jax.config` for the
commands that run jax; `cnnjax COMMAND --helpfull` lists them.

Importing this module loads only the standard library and two small cnnjax modules, so that
`run_cli` installs the stop handlers before absl, ml_collections or jax load (the functions
import them).
"""

import json
import sys
from typing import TYPE_CHECKING, Any, NamedTuple

from cnnjax import stopping
from cnnjax.errors import UsageError

if TYPE_CHECKING:
  import logging

  from absl import flags
  import ml_collections


class Command(NamedTuple):
  usage: str  # What follows `cnnjax `.
  description: str
  jax_flags: bool  # Whether it takes jax's own flags (it runs jax).


COMMANDS = {
  "train": Command(
    "train --config=FILE[:ARG] --workdir=DIR [--config.KEY=VALUE ...] [flags]",
    "train an experiment; resumes from the newest checkpoint in --workdir",
    True,
  ),
  "eval": Command(
    "eval --config=FILE[:ARG] --workdir=DIR [--config.KEY=VALUE ...] [flags]",
    "evaluate the newest checkpoint in --workdir; prints its metrics as JSON",
    True,
  ),
  "config": Command(
    "config [--config=FILE[:ARG] [--config.KEY=VALUE ...] | --task=NAME]",
    "print every config key with its default (or the file's value) and meaning",
    False,
  ),
  "models": Command("models", "list the model names", False),
  "summary": Command(
    "summary NAME [--input=H,W,C] [--num-classes=N] [flags]",
    "print a model's layers, output shapes and parameter counts",
    True,
  ),
  "plan": Command(
    "plan --config=FILE[:ARG] --topology=T [--config.KEY=VALUE ...] [flags]",
    "compile the train and eval steps for a TPU topology (e.g. v5e:2x4); "
    "per-chip memory, FLOPs, roofline",
    True,
  ),
  "show": Command(
    "show KIND --workdir=DIR [--config=FILE[:ARG]] [--split=test] [--n=16] "
    "[--out=FILE.png] [--stage=NAME] [--unit=ROW,COL] [flags]",
    "draw the newest checkpoint in --workdir as DIR/show/KIND.png; KIND: "
    "filters, features, receptive-field, gradcam, saliency, predictions, "
    "neighbours, augment",
    True,
  ),
}
USAGE = f"usage: cnnjax {{{','.join(COMMANDS)}}} [flags]; `cnnjax --help` describes them"
# absl's spellings; each asks for the help of the command before it, if any.
HELP_FLAGS = {"-h": "help", "--help": "help", "--helpshort": "help", "--helpfull": "helpfull"}


def _define_flags(argv: list[str], jax_flags: bool = True) -> "flags.FlagValues":
  """A fresh set of the flags of the command `argv[1]` (so `main` can run more than once).

  Args:
    argv: the command line, from the program name on.
    jax_flags: also jax's own flags, if the command takes them (this imports jax).
  """
  from absl import flags
  from ml_collections import config_flags

  command = argv[1]
  values = flags.FlagValues()
  if command in ("train", "eval", "config", "plan"):
    # New keys are accepted so that `--config.model_kwargs.KEY=VALUE` can set any module
    # field; `cnnjax.train.config.validate` rejects unknown keys everywhere else.
    config_flags.DEFINE_config_file(
      "config",
      None,
      "the experiment: a Python file whose get_config(ARG) returns its "
      "config (FILE:ARG passes ARG, e.g. a variant such as `local`); then "
      "--config.KEY=VALUE changes one key (`cnnjax config` lists them)",
      flag_values=values,
      lock_config=False,
      accept_new_attributes=True,
      sys_argv=argv,
    )
  if command in ("train", "eval"):
    flags.DEFINE_string("workdir", None, "directory for checkpoints and logs", flag_values=values)
    flags.DEFINE_bool(
      "distributed",
      False,
      "call jax.distributed.initialize() (Cloud TPU, SLURM: detected automatically)",
      flag_values=values,
    )
    flags.DEFINE_string(
      "coordinator_address", None, "multi-host coordinator HOST:PORT", flag_values=values
    )
    flags.DEFINE_integer("num_processes", None, "multi-host process count", flag_values=values)
    flags.DEFINE_integer("process_id", None, "this process's index", flag_values=values)
  if command == "train":
    flags.DEFINE_integer(
      "preempted_exit_code",
      0,
      "exit status of a `train` that SIGTERM stopped before its last step "
      "(after saving a checkpoint); launchers that restart failed jobs set "
      "it non-zero",
      flag_values=values,
    )
  if command == "config":
    flags.DEFINE_string(
      "task",
      None,
      "without --config: list the defaults of this task, its own sections included (e.g. simclr)",
      flag_values=values,
    )
  if command == "plan":
    flags.DEFINE_string(
      "topology",
      None,
      "TPU slice GENERATION:SHAPE, e.g. v5e:2x4 (8 chips), "
      "v5e:16x16, v4:4x4x4; generations v4, v5e, v5p, v6e (needs libtpu)",
      flag_values=values,
    )
    flags.DEFINE_bool("eval", True, "also compile the eval step", flag_values=values)
    flags.DEFINE_bool(
      "search",
      True,
      "when the train step does not fit, compile smaller batches to find the largest that does",
      flag_values=values,
    )
    flags.DEFINE_integer("max_compiles", 6, "compiles that search may make", flag_values=values)
  if command == "show":
    config_flags.DEFINE_config_file(
      "config",
      None,
      "the experiment's config file (FILE:ARG passes ARG); default: the "
      "workdir's config.json, which training writes",
      flag_values=values,
      lock_config=False,
      accept_new_attributes=True,
      sys_argv=argv,
    )
    flags.DEFINE_string(
      "workdir", None, "a training workdir: its newest checkpoint is shown", flag_values=values
    )
    flags.DEFINE_string(
      "split",
      "test",
      "the split whose images are shown (augment: the config's train_split)",
      flag_values=values,
    )
    flags.DEFINE_integer("n", 16, "images (neighbours: queries) to show", flag_values=values)
    flags.DEFINE_string(
      "out", None, "the PNG to write; default DIR/show/KIND.png", flag_values=values
    )
    flags.DEFINE_string(
      "stage",
      None,
      "the feature map of gradcam (default: the deepest), "
      "features and receptive-field (default: up to 6 of them)",
      flag_values=values,
    )
    flags.DEFINE_string(
      "unit",
      None,
      "receptive-field: ROW,COL input pixel; each stage's unit "
      "is the one centred nearest it (default: the middle unit)",
      flag_values=values,
    )
    flags.DEFINE_integer("k", 5, "neighbours: nearest neighbours per query", flag_values=values)
    flags.DEFINE_integer(
      "seed", 0, "augment and saliency: seed of their randomness", flag_values=values
    )
  if command == "summary":
    flags.DEFINE_string("input", None, "H,W,C input shape", flag_values=values)
    flags.DEFINE_integer("num_classes", None, "classes (default: the model's)", flag_values=values)
  if jax_flags and COMMANDS[command].jax_flags:
    _define_jax_flags(values)
  return values


def _define_jax_flags(values: "flags.FlagValues") -> "flags.FlagValues":
  """Defines jax's own flags in `values`, and returns it.

  `jax.config.config_with_absl()` defines the same flags, but in absl's global flags and
  once per process; `main` parses a fresh set each time it runs.
  """
  import jax
  from absl import flags

  define = {
    bool: flags.DEFINE_bool,
    int: flags.DEFINE_integer,
    float: flags.DEFINE_float,
    str: flags.DEFINE_string,
    "enum": flags.DEFINE_enum,
    "enum_class": flags.DEFINE_enum_class,
  }
  current = jax.config.values
  for name, (kind, args, kwargs) in jax.config.meta.items():
    define[kind](name, current[name], *args, flag_values=values, **kwargs)
  return values


def _apply_jax_flags(values: "flags.FlagValues") -> None:
  """Sets `jax.config` from the jax flags on the command line (before jax starts a backend)."""
  import jax

  for name in jax.config.meta:
    if values[name].present:
      jax.config.update(name, values[name].value)


def _command(name: str) -> Command:
  """The command `name`; UsageError naming the commands if there is none."""
  if name not in COMMANDS:
    import difflib

    close = difflib.get_close_matches(name, COMMANDS, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UsageError(f"unknown command {name!r}; {hint}choose one of {', '.join(COMMANDS)}.")
  return COMMANDS[name]


def _parse(argv: list[str]) -> tuple[str, list[str], "flags.FlagValues | None"]:
  """(command, positional arguments, parsed flags) of `argv`.

  A help request parses as ("help" or "helpfull", [the command it is about] or [], None).
  """
  from absl import flags

  if len(argv) < 2:
    raise UsageError(f"no command; {USAGE}.")
  if argv[1] == "help" or argv[1] in HELP_FLAGS:
    return HELP_FLAGS.get(argv[1], "help"), argv[2:3], None
  command = argv[1]
  _command(command)
  options = argv[2 : argv.index("--")] if "--" in argv[2:] else argv[2:]
  asked = {HELP_FLAGS[arg] for arg in options if arg in HELP_FLAGS}
  if asked:
    return max(asked, key=len), [command], None  # --helpfull wins over --help.
  rest = [a.replace("--num-classes", "--num_classes", 1) for a in argv[2:]]
  values = _define_flags(argv)
  try:
    positional = values([argv[0], *rest])[1:]
  except SyntaxError as error:  # config_flags: the config file is not Python.
    raise UsageError(
      f"syntax error in the --config file {error.filename}, line {error.lineno}: {error.msg}."
    ) from None
  except flags.Error as error:
    raise UsageError(_one_line(_wrapped_usage_error(error) or error)) from None
  except (KeyError, AttributeError) as error:  # config_flags: no such key.
    where = _config_file_line(error)
    if where:  # The config file reads a key that its config lacks.
      raise UsageError(
        f"{where}: unknown config key {'; '.join(_key_error_text(error).splitlines())}"
      ) from None
    raise UsageError(
      f"unknown config key {_one_line(error)} in a --config.KEY override; check its spelling."
    ) from None
  except OSError as error:  # config_flags: the config file cannot be read.
    raise UsageError(f"cannot read the --config file: {_one_line(error)}") from None
  except (TypeError, ValueError) as error:  # config_flags: a value of the wrong type.
    raise UsageError(f"bad --config value: {_one_line(error)}") from None
  if COMMANDS[command].jax_flags:
    _apply_jax_flags(values)
  return command, positional, values


def _config_file_line(error: BaseException) -> str | None:
  """ "FILE, line N" where the code of a --config file raised `error`; None elsewhere."""
  import traceback

  frames = traceback.extract_tb(error.__traceback__)
  files = [frame.filename for frame in frames if frame.name == "get_config"]
  if not files:
    return None
  line = [frame for frame in frames if frame.filename == files[-1]][-1]
  return f"{line.filename}, line {line.lineno}"


def _key_error_text(error: BaseException) -> str:
  """The message of a KeyError (or of an AttributeError around one), without its quotes."""
  while error.args and isinstance(error.args[0], KeyError):
    error = error.args[0]
  return str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)


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


def _experiment_flags(values: "flags.FlagValues") -> tuple:
  if not values["config"].present:
    raise UsageError("--config=FILE is required; e.g. --config=experiments/configs/lenet_digits.py")
  if not values.workdir:
    raise UsageError("--workdir=DIR is required.")
  return _loaded_config(values), values.workdir


def _loaded_config(values: "flags.FlagValues") -> "ml_collections.ConfigDict":
  """The config of --config (whatever `get_config` returned: `validate` checks it)."""
  config = values.config
  try:
    getattr(config, "keys", None)  # config_flags defers a file that failed to load until use.
  except OSError as error:
    reason = str(error).strip().splitlines()[-1].strip()
    raise UsageError(f"cannot load the --config file: {reason}") from None
  return config


def _enable_compilation_cache() -> None:
  """Reuses compiled steps across runs (a resumed or repeated run starts faster).

  $CNNJAX_COMPILATION_CACHE names the directory; an empty value turns the cache off.
  """
  import os
  import jax

  directory = os.environ.get(
    "CNNJAX_COMPILATION_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "cnnjax", "xla")
  )
  if directory and not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def _initialize_distributed(values: "flags.FlagValues") -> None:
  import jax

  if values.coordinator_address or values.distributed:
    # CPU devices need gloo for cross-process collectives; GPU and TPU ignore this setting.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if values.coordinator_address:
    jax.distributed.initialize(
      coordinator_address=values.coordinator_address,
      num_processes=values.num_processes,
      process_id=values.process_id,
    )
  elif values.distributed:
    jax.distributed.initialize()


def main(argv: list[str]) -> int:
  """Runs one command; returns the exit status."""
  import logging

  logging.getLogger("absl").addFilter(_without_opencv_advice)  # Adds it once.
  command, positional, values = _parse(argv)
  if command != "train":
    # Only training has work to save on a stop; other commands end as the signal asks.
    stopping.uninstall()
    if stopping.requested():
      return stopping.exit_status(stopping.requested())
  if command in HELP_FLAGS.values():
    print(_help(positional[0] if positional else None, full=command == "helpfull"))
    return 0
  if command == "config":
    return _config(positional, values)
  if command == "models":
    from cnnjax import models

    print("\n".join(models.names()))
    return 0
  if command == "summary":
    return _summary(positional, values)
  if command == "plan":
    return _plan(positional, values)
  if command == "show":
    return _show(positional, values)
  if positional:
    raise UsageError(
      f"unexpected arguments {' '.join(positional)}; usage: cnnjax {COMMANDS[command].usage}"
    )
  config, workdir = _experiment_flags(values)
  _enable_compilation_cache()
  _initialize_distributed(values)
  from cnnjax.train import loop

  result = loop.run(config, workdir) if command == "train" else loop.evaluate(config, workdir)
  if command == "eval":
    print(json.dumps(result, sort_keys=True))
  if result.get("preempted") == "SIGINT":
    return stopping.exit_status("SIGINT")
  if result.get("preempted"):
    return values.preempted_exit_code
  return 0


def _without_opencv_advice(record: "logging.LogRecord") -> bool:
  """False for tfds's advice to install OpenCV, which every run printed: PIL decodes instead."""
  return not record.getMessage().startswith("OpenCV is not installed")


def _help(topic: str | None, full: bool) -> str:
  """`cnnjax --help` (no `topic`) or `cnnjax TOPIC --help`; `full` adds jax's own flags."""
  from absl import flags

  jax_note = "jax's own flags (--jax_platforms=cpu, --jax_debug_nans, ...)"
  if topic is None:
    width = max(map(len, COMMANDS))
    takers = ", ".join(name for name, command in COMMANDS.items() if command.jax_flags)
    lines = [
      "usage: cnnjax COMMAND [flags]",
      "",
      "commands:",
      *(f"  {name:<{width}}  {command.description}" for name, command in COMMANDS.items()),
      "",
      flags.text_wrap(
        f"`cnnjax COMMAND --help` lists the flags of COMMAND; "
        f"`--helpfull` adds {jax_note}, taken by {takers}."
      ),
    ]
    takes_jax_flags = True
  else:
    command = _command(topic)
    lines = [f"usage: cnnjax {command.usage}", "", f"{command.description}."]
    own = _define_flags(["cnnjax", topic], jax_flags=False)
    if list(own):
      lines += ["", "flags:", _flags_help(own)]
    notes = []
    if "config" in own and topic != "config":
      notes.append(
        "`cnnjax config [--config=FILE[:ARG]] [--task=NAME]` lists every "
        "--config.KEY with its default and meaning."
      )
    if command.jax_flags and not full:
      notes.append(f"`cnnjax {topic} --helpfull` adds {jax_note}.")
    if notes:
      lines += ["", *map(flags.text_wrap, notes)]
    takes_jax_flags = command.jax_flags
  if full and takes_jax_flags:
    lines += ["", "jax's flags:", _flags_help(_define_jax_flags(flags.FlagValues()))]
  return "\n".join(lines)


def _flags_help(values: "flags.FlagValues") -> str:
  """Each flag of `values` with its help and default, as absl's --help shows them."""
  from absl import flags

  lines = []
  for name in sorted(values):
    flag = values[name]
    default = "" if flag.default is None else f" (default: {flag.default_as_str})"
    spelled = f"--[no]{name}" if flag.boolean else f"--{name}"
    lines.append(
      flags.text_wrap(f"{spelled}: {flag.help}{default}", indent="    ", firstline_indent="  ")
    )
  return "\n".join(lines)


def _config(positional: list[str], values: "flags.FlagValues") -> int:
  """`cnnjax config`: every key, its value and its comment, once the config passes `validate`."""
  if positional:
    raise UsageError(
      f"unexpected arguments {' '.join(positional)}; usage: cnnjax {COMMANDS['config'].usage}"
    )
  from ml_collections import config_flags
  from cnnjax.train import config as config_lib

  if values["config"].present:
    if values.task is not None:
      raise UsageError("--task is for the defaults; a --config file's task is its config.task.")
    config = _loaded_config(values)
  else:
    config = config_lib.defaults(values.task) if values.task else config_lib.defaults()
  config_lib.validate(config)
  source = (
    config_flags.get_config_filename(values["config"])
    if values["config"].present
    else "the defaults"
  )
  print(f"# {source} (task {config.task!r}); change a key with --config.KEY=VALUE")
  print(
    "\n".join(_described_keys(config, config_lib.comments(config.task), config_lib.keys(config)))
  )
  return 0


def _described_keys(
  config: "ml_collections.ConfigDict", comments: dict[str, str], keys: list[str]
) -> list[str]:
  """`key = value  # comment` for each of `keys`, in the order of `comments`."""
  order = {key: index for index, key in enumerate(comments)}
  lines = []
  for key in sorted(keys, key=lambda key: order.get(key, len(order))):
    value = config
    for part in key.split("."):
      value = value[part]
    if hasattr(value, "to_dict"):  # model_kwargs, a ConfigDict.
      value = value.to_dict()
    lines.append((f"{key} = {value!r}", comments.get(key, "")))
  width = min(max(len(line) for line, _ in lines), 48)  # Comments line up, mostly.
  return [f"{line:<{width}}  # {comment}" if comment else line for line, comment in lines]


def _summary(positional: list[str], values: "flags.FlagValues") -> int:
  if len(positional) != 1:
    raise UsageError(f"usage: cnnjax {COMMANDS['summary'].usage}")
  from cnnjax.inspect import summary

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


def _plan(positional: list[str], values: "flags.FlagValues") -> int:
  """`cnnjax plan`: the config's steps compiled for --topology; prints one markdown table."""
  if positional:
    raise UsageError(
      f"unexpected arguments {' '.join(positional)}; usage: cnnjax {COMMANDS['plan'].usage}"
    )
  if not values["config"].present:
    raise UsageError("--config=FILE is required; e.g. --config=experiments/configs/lenet_digits.py")
  if not values.topology:
    raise UsageError("--topology is required, e.g. --topology=v5e:2x4.")
  from ml_collections import config_flags
  from cnnjax.train import plan

  plan.parse_topology(values.topology)  # A bad name fails before the config is built.
  config = _loaded_config(values)
  result = plan.plan(
    config,
    values.topology,
    config_name=config_flags.get_config_filename(values["config"]),
    evaluate=values.eval,
    search=values.search,
    max_compiles=values.max_compiles,
    log=lambda line: print(line, file=sys.stderr, flush=True),
  )
  print(result.markdown())
  return 0


def _show(positional: list[str], values: "flags.FlagValues") -> int:
  """`cnnjax show KIND`: draws KIND for the newest checkpoint of --workdir; prints the PNG path."""
  from cnnjax.inspect import show

  if len(positional) != 1:
    raise UsageError(
      f"name one kind to show ({', '.join(show.KINDS)}); usage: cnnjax {COMMANDS['show'].usage}"
    )
  kind = positional[0]
  show.check_kind(kind)
  if not values.workdir:
    raise UsageError("--workdir=DIR is required: a workdir that `cnnjax train` wrote.")
  unit = None
  if values.unit:
    try:
      unit = tuple(float(v) for v in values.unit.split(","))
    except ValueError:
      unit = ()
    if len(unit) != 2:
      raise UsageError(f"--unit={values.unit} is not ROW,COL input pixels, e.g. 16,16.")
  config = _loaded_config(values) if values["config"].present else None
  run = load_run(values.workdir, config)
  path = show.render(
    kind,
    run,
    out=values.out,
    n=values.n,
    split=values.split,
    stage=values.stage,
    unit=unit,
    k=values.k,
    seed=values.seed,
  )
  print(path)
  return 0


def load_run(workdir: str, config: "ml_collections.ConfigDict | None" = None) -> Any:
  """The newest checkpoint of `workdir` as a `cnnjax.inspect.show.Run`, on the host.

  Args:
    workdir: a workdir that `cnnjax train` wrote.
    config: its experiment's config; None reads the workdir's config.json.

  Raises:
    UsageError: no checkpoint there, no config, or a config of another experiment.
  """
  import copy
  import jax
  from cnnjax.train import checkpoint
  from cnnjax.train import loop

  directory = checkpoint.workdir_path(workdir)
  if not directory.is_dir() or not checkpoint.has_checkpoint(directory):
    raise UsageError(
      f"no checkpoint in --workdir {workdir}; train it first with `cnnjax train "
      f"--config=FILE --workdir={workdir}`, or point --workdir at a trained run."
    )
  config = _workdir_config(directory) if config is None else copy.deepcopy(config)
  with config.unlocked():
    # The checkpoint holds the weights: nothing needs the transfer source again.
    config.transfer.init_from = ""
    config.transfer.torchvision = ""
  experiment = loop.Experiment(config, workdir)
  checkpoint.check_fingerprint(directory, experiment.fingerprint(), claim=False)
  checkpointer = checkpoint.Checkpointer(
    directory,
    keep=config.keep_checkpoints,
    best_metric=config.best_metric or None,
    best_mode=config.best_mode,
    async_save=False,
    create=False,
  )
  try:
    restored = checkpointer.restore_latest(
      experiment.abstract_state(), experiment.initial_state, new_optimizer=True
    )
  except checkpoint.NothingRestorable as error:
    raise UsageError(f"{error.problems}; there is nothing to show.") from None
  finally:
    checkpointer.close()
  state = jax.device_get(restored.state)
  return experiment.show_run(
    {"params": state.params, "batch_stats": state.batch_stats}, int(restored.step)
  )


def _workdir_config(directory: Any) -> "ml_collections.ConfigDict":
  """The config that trained `directory`, rebuilt from its config.json (flat keys)."""
  import ml_collections
  from cnnjax.train import config as config_lib
  from cnnjax.train import writer

  path = directory / writer.CONFIG_FILE
  if not path.exists():
    raise UsageError(
      f"{directory} has no {writer.CONFIG_FILE}; pass the experiment with --config=FILE."
    )
  flat = json.loads(path.read_text())
  config = config_lib.defaults(flat.get("task", "classification"))

  def value_of(value: Any, default: Any) -> Any:
    if isinstance(value, list):  # JSON has no tuples; configs keep sequences as tuples.
      return tuple(value_of(v, None) for v in value)
    if isinstance(value, dict):
      return ml_collections.ConfigDict(value)
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
      return float(value)
    return value

  with config.unlocked():
    config.evals = ml_collections.ConfigDict()  # Exactly the run's evaluators, below.
    for key, value in flat.items():
      *parents, name = key.split(".")
      section = config
      for parent in parents:
        if parent not in section:
          section[parent] = ml_collections.ConfigDict()
        section = section[parent]
      default = section.get(name) if name in section else None
      if name in section:
        del section[name]  # A value of the run's own type replaces the default's.
      section[name] = value_of(value, default)
  return config


def run_cli(argv: list[str] | None = None) -> None:
  """Console-script entry point: runs `main` and turns UsageError into one line and status 2."""
  stopping.install()  # First of all: a SIGTERM or Ctrl-C during start-up reaches the loop.
  try:
    status = main(list(sys.argv if argv is None else argv))
  except UsageError as error:
    print(f"cnnjax: error: {_one_line(error)}", file=sys.stderr)
    sys.exit(2)
  except KeyboardInterrupt:
    print(
      "cnnjax: interrupted; a training run resumes from its newest checkpoint when started again.",
      file=sys.stderr,
    )
    sys.exit(stopping.exit_status("SIGINT"))
  sys.exit(status)


if __name__ == "__main__":
  run_cli()
