"""The default experiment config; every experiment config starts from `defaults()`.

Starting from the defaults makes every key overridable from the command line
(`--config.schedule.learning_rate=0.05`) and lets `validate` reject unknown keys. Tasks
add their own sections through `Task.config_defaults` (e.g. `metric`, `simclr`) and their
evaluators through `Task.default_evals`. `validate` is the one place that checks values
and choices; the parts of the trainer read their sections as they are.
"""

import ast
import difflib
import inspect
import io
import textwrap
import tokenize
from typing import Any, Callable

import ml_collections

from cnnjax.errors import UsageError
from cnnjax.inspect import show
from cnnjax.train import evaluators
from cnnjax.train import optim
from cnnjax.train import parallel
from cnnjax.train import tasks
from cnnjax.train import transfer
from cnnjax.train.tasks import inputs


def defaults(task: str = "classification") -> ml_collections.ConfigDict:
  """Every trainer setting with its default value, plus `task`'s own sections."""
  c = ml_collections.ConfigDict()
  c.task = task
  c.model = ""  # A name from `cnnjax models`.
  c.model_kwargs = ml_collections.ConfigDict()  # Module fields, e.g. {"width": 16}.
  c.dataset = ""  # A TFDS name, e.g. "digits", "cifar10".
  c.data_dir = ""  # Default: $TFDS_DATA_DIR or ~/tensorflow_datasets.
  c.train_split = "train"
  c.batch_size = 128  # Global, over all devices and processes.
  c.eval_batch_size = 0  # 0: batch_size.
  c.num_steps = 0  # Optimizer steps; 0: num_epochs over the train split.
  c.num_epochs = 0.0
  c.seed = 0
  c.dtype = "float32"  # Compute dtype ("bfloat16" on TPU/GPU); parameters stay float32.
  c.global_bn = False  # BatchNorm statistics over the global batch (SimCLR).
  c.parallel = "shard_map"  # Or "pmap".
  c.worker_count = 0  # Grain worker processes for the train iterator.
  c.accumulate_steps = 1  # Micro-batches per optimizer step, in one compiled step.
  c.micro_batch_size = 0  # Gradient caching: examples per device per chunk; 0: off.
  c.ema_decay = 0.0  # Moving average of parameters and BN statistics, evaluated as ema/...

  c.input = ml_collections.ConfigDict()
  c.input.size = 0  # Square model input side; 0: the stored image side.
  c.input.resize = 0  # Resize to this side, then zero-pad to `size`; 0: size.
  c.input.augment = "none"  # "none", "shift", "cifar" or "inception".
  c.input.pad = 4  # Padding before the random crop of "shift" and "cifar".
  c.input.center_crop = False  # Evaluate on a resize + central crop.
  c.input.mean = ()  # Per-channel, in [0, 1] units; (): the dataset's statistics.
  c.input.std = ()

  c.label_smoothing = 0.0
  c.aux_loss_weight = 0.3

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "sgd"  # "sgd", "adamw" or "lars".
  c.optimizer.momentum = 0.9
  c.optimizer.nesterov = False
  c.optimizer.weight_decay = 0.0
  c.optimizer.decay_bn_and_bias = False
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-8
  c.optimizer.trust_coefficient = 0.001
  c.optimizer.clip_norm = 0.0  # 0: no clipping.

  c.schedule = ml_collections.ConfigDict()
  c.schedule.name = "cosine"  # "constant", "cosine", "step" or "plateau".
  c.schedule.learning_rate = 0.1
  c.schedule.scale_with_batch = ""  # "", "linear" (x B/256) or "sqrt" (x sqrt(B)).
  c.schedule.warmup_steps = 0
  c.schedule.end_value = 0.0
  c.schedule.boundaries = ()  # Absolute train steps (warmup included), for "step".
  c.schedule.decay_factor = 0.1
  c.schedule.patience = 5  # Evaluations without improvement, for "plateau".
  c.schedule.rtol = 1e-4
  c.schedule.cooldown = 0
  c.schedule.min_scale = 0.0

  c.evals = ml_collections.ConfigDict(tasks.get(task).default_evals())  # Named evaluators.
  c.log_every = 50
  c.checkpoint_every = 500
  c.keep_checkpoints = 2
  c.best_metric = ""  # "NAME/metric" of an evaluator, e.g. "test/accuracy"; "": newest only.
  c.best_mode = "max"
  c.async_checkpoints = True
  c.progress = "auto"  # "auto" (bar on a terminal), "bar" or "lines".
  c.profile_steps = ()  # (A, B): a jax.profiler trace of steps A+1..B into tensorboard/.
  # The two cheap kinds every task draws: 1.1-1.5 s, 7% of `make demo`; features,
  # receptive-field, gradcam, saliency and predictions cost seconds more each.
  c.show_at_end = ("filters", "augment")  # `cnnjax show` kinds drawn into show/, TensorBoard.
  c.restart = False  # When no checkpoint restores: set them aside (renamed) and start over.
  c.new_optimizer = False  # When the checkpoint's optimizer differs: fresh optimizer state.

  c.transfer = ml_collections.ConfigDict()
  c.transfer.init_from = ""  # A cnnjax workdir whose latest checkpoint initialises the model.
  c.transfer.prefix = ""  # Take the parameters under this name (e.g. "backbone" of SimCLR).
  c.transfer.torchvision = ""  # Or a torchvision model name...
  c.transfer.torchvision_weights = ""  # ...and its state dict file (.pth).
  c.transfer.mode = "finetune_all"  # "linear_probe", "finetune_last_stages", "finetune_all".
  c.transfer.trainable = ()  # Regexes of trained parameters for "finetune_last_stages".
  c.transfer.head = ()  # Regexes of the head (re-initialised); (): shapes that changed.
  c.transfer.freeze = ()  # Regexes of parameters frozen in every mode.
  for name, section in tasks.get(task).config_defaults().items():
    c[name] = section
  return c


def validate(config: ml_collections.ConfigDict) -> None:
  """UsageError for the first unknown or missing key, unknown name or bad value.

  Runs before any work is done; the rest of the trainer relies on it and checks nothing
  of the config again.
  """
  if not isinstance(config, ml_collections.ConfigDict):
    raise UsageError(
      f"the config is a {type(config).__name__}, not a ConfigDict; start from "
      "cnnjax.train.config.defaults() and change its values."
    )
  task_name = config.get("task", "classification")
  task = tasks.get(task_name)
  known = defaults(task_name)
  _check_keys(config, known, "", keys(known))
  _check_choices(config, task)
  _check_batch_splitting(config, task)
  _check_schedule(config.schedule)
  _check_transfer(config.transfer)
  _check_evals(config.evals, task)
  _check_best_metric(config)
  _check_show_at_end(config.show_at_end, task, task_name)


def _check_choices(config: ml_collections.ConfigDict, task: type[tasks.Task]) -> None:
  """Every named choice (optimizer, schedule, parallel, ...) is one the trainer has."""
  choices = {
    "optimizer.name": optim.OPTIMIZERS,
    "schedule.name": optim.SCHEDULES,
    "schedule.scale_with_batch": optim.BATCH_SCALINGS,
    "parallel": parallel.KINDS,
    "input.augment": inputs.AUGMENTATIONS,
    "transfer.mode": transfer.MODES,
    "best_mode": ("max", "min"),
    "progress": ("auto", "bar", "lines"),
    "dtype": ("float32", "bfloat16", "float16"),
    **task.choices(),
  }
  for key, allowed in choices.items():
    value = _value(config, key)
    if value not in allowed:
      raise UsageError(
        f"unknown {key} {value!r}; choose one of "
        f"{', '.join(repr(a) if a == '' else str(a) for a in allowed)}."
      )


def _check_batch_splitting(config: ml_collections.ConfigDict, task: type[tasks.Task]) -> None:
  """Sizes and counts, gradient accumulation or caching, and the moving average's decay."""
  for key in ("batch_size", "log_every", "checkpoint_every", "keep_checkpoints"):
    if config[key] <= 0:
      raise UsageError(f"config.{key} must be positive, got {config[key]}.")
  for key in ("num_steps", "num_epochs", "micro_batch_size"):
    if config[key] < 0:
      raise UsageError(f"config.{key} must be positive (or 0: unset), got {config[key]}.")
  if config.accumulate_steps < 1:
    raise UsageError(f"config.accumulate_steps must be 1 or more, got {config.accumulate_steps}.")
  if not 0 <= config.ema_decay < 1:
    raise UsageError(
      f"config.ema_decay must lie in [0, 1) (0: no moving average), got {config.ema_decay}."
    )
  if config.micro_batch_size and not task.caches_gradients():
    raise UsageError(
      f"config.micro_batch_size: task {config.task!r} has no gradient caching "
      "(simclr and metric_learning have); use config.accumulate_steps instead."
    )
  if config.micro_batch_size and config.accumulate_steps > 1:
    raise UsageError(
      "config.micro_batch_size and config.accumulate_steps both split the batch; set one of them."
    )


def _check_schedule(schedule: ml_collections.ConfigDict) -> None:
  """The plateau schedule's factor, tolerance and patience."""
  if not 0 < schedule.decay_factor < 1:
    raise UsageError(
      f"config.schedule.decay_factor must lie in (0, 1), got {schedule.decay_factor}."
    )
  if not 0 < schedule.rtol <= 1 or schedule.patience < 1:
    raise UsageError(
      f"config.schedule needs 0 < rtol <= 1 and patience >= 1, got rtol "
      f"{schedule.rtol} and patience {schedule.patience}."
    )


def _check_transfer(section: ml_collections.ConfigDict) -> None:
  """finetune_last_stages names the stages it trains."""
  if transfer.enabled(section) and section.mode == "finetune_last_stages" and not section.trainable:
    raise UsageError(
      "transfer.mode=finetune_last_stages needs transfer.trainable regexes, e.g. ('layer4',)."
    )


def _value(config: ml_collections.ConfigDict, dotted: str) -> Any:
  for part in dotted.split("."):
    config = config[part]
  return config


def _check_evals(evals: ml_collections.ConfigDict, task: type[tasks.Task]) -> None:
  """Each evaluator's kind (one the task can feed), split, cadence and option keys."""
  usable = evaluators.kinds_for(task.produces)
  for name, section in evals.items():
    where = f"config.evals.{name}"
    if name == "train" or "/" in name:
      raise UsageError(f"{where}: rename it; evaluator names cannot be 'train' or hold '/'.")
    if not isinstance(section, ml_collections.ConfigDict) or "kind" not in section:
      raise UsageError(
        f"{where} must be a ConfigDict with kind, split and every, e.g. "
        f"dict(kind={usable[0]!r}, split='test', every=0)."
      )
    kind = section.kind
    if kind not in evaluators.KINDS:
      close = difflib.get_close_matches(str(kind).lower(), list(evaluators.KINDS), n=1)
      hint = f"did you mean {close[0]!r}? " if close else ""
      raise UsageError(
        f"{where}.kind {kind!r} is unknown; {hint}task {task.__name__} "
        f"works with {', '.join(usable)}."
      )
    if kind not in usable:
      raise UsageError(
        f"{where}.kind {kind!r} needs what task {task.__name__}'s eval step "
        f"does not give; choose one of {', '.join(usable)}."
      )
    allowed = (*evaluators.COMMON_KEYS, *evaluators.KINDS[kind].options)
    for key in section.keys():
      if key not in allowed:
        raise UsageError(f"{where} has no key {key!r}; kind {kind!r} takes {', '.join(allowed)}.")
    if not isinstance(section.get("split"), str) or not section.split:
      raise UsageError(f"{where}.split must name a split of config.dataset, e.g. 'test'.")
    every = section.get("every")
    if not isinstance(every, int) or isinstance(every, bool) or every < 0:
      raise UsageError(
        f"{where}.every must be a whole number of steps >= 0 (0: at the end only), got {every!r}."
      )


def _check_best_metric(config: ml_collections.ConfigDict) -> None:
  """`best_metric` is "" or "NAME/metric" of one of `config.evals`."""
  offered = [
    f"{prefix}{name}/{metric}"
    for prefix in ("", "ema/")[: 1 + (config.ema_decay > 0)]
    for name, section in config.evals.items()
    for metric in evaluators.KINDS[section.kind].metrics
  ]
  if config.best_metric and config.best_metric not in offered:
    close = difflib.get_close_matches(config.best_metric, offered, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UsageError(
      f"config.best_metric {config.best_metric!r} is no evaluator's metric; "
      f"{hint}choose one of {', '.join(offered) or 'none (config.evals is empty)'}"
      ", or '' to keep the newest checkpoints only."
    )
  if config.schedule.name == "plateau" and not config.best_metric:
    raise UsageError(
      "schedule 'plateau' watches config.best_metric, which is empty; set it "
      "to an evaluator's metric such as 'test/accuracy'."
    )


def _check_show_at_end(kinds: Any, task: type[tasks.Task], task_name: str) -> None:
  """`show_at_end` is a tuple of kinds that `cnnjax show` draws for the task."""
  allowed = show.kinds_for(task)
  draws = f"task {task_name} draws {', '.join(allowed)}"
  if isinstance(kinds, str) or not isinstance(kinds, (tuple, list)):
    raise UsageError(f"config.show_at_end must be a tuple of kinds, got {kinds!r}; {draws}.")
  for kind in kinds:
    if kind in allowed:
      continue
    if kind in show.KINDS:
      raise UsageError(f"config.show_at_end: show {kind} needs {show.NEEDS[kind]}; {draws}.")
    close = difflib.get_close_matches(str(kind), allowed, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    if "," in str(kind):  # --config.show_at_end=a,b reaches the config as ("a,b",).
      quoted = ",".join(repr(part) for part in str(kind).split(",") if part)
      hint = f'quote each kind: --config.show_at_end="{quoted}"; '
    raise UsageError(f"config.show_at_end: unknown kind {kind!r}; {hint}{draws}.")


# Sections whose keys are not the trainer's: a model's fields, and evaluators by name
# (each checked by `_check_evals`).
_OPEN_SECTIONS = ("model_kwargs", "evals")


# Keys of earlier versions and where they went.
_MOVED_KEYS = {
  "eval_every": "config.evals.NAME.every (e.g. evals.test.every)",
  "eval_split": "config.evals.NAME.split (e.g. evals.test.split)",
}


def _check_keys(config: Any, known: Any, prefix: str, every_key: list[str]) -> None:
  """Recursively compares the keys of `config` with those of `known` (dotted: `every_key`)."""
  for key in config.keys():
    if not prefix and key in _MOVED_KEYS:
      raise UsageError(
        f"config.{key} is now {_MOVED_KEYS[key]}; `cnnjax config` lists the evaluators of the task."
      )
    if key not in known:
      # Over every dotted key: a key set at the wrong level finds its section too.
      close = difflib.get_close_matches(prefix + key, every_key, n=1)
      hint = f"did you mean {close[0]!r}? " if close else ""
      raise UsageError(
        f"unknown config key {prefix + key!r}; {hint}check its spelling in the "
        "config file or override (`cnnjax config` lists the keys)."
      )
  for key in known.keys():
    if key not in config or (
      isinstance(known[key], ml_collections.ConfigDict)
      and not isinstance(config[key], ml_collections.ConfigDict)
    ):
      raise UsageError(
        f"the config has no key {prefix + key!r}; start from "
        "cnnjax.train.config.defaults() and change its values."
      )
    if key not in _OPEN_SECTIONS and isinstance(known[key], ml_collections.ConfigDict):
      _check_keys(config[key], known[key], f"{prefix}{key}.", every_key)


def keys(config: ml_collections.ConfigDict) -> list[str]:
  """Every key of `config` with sections flattened ("schedule.learning_rate"), sorted.

  `model_kwargs` is one key: its fields belong to the model, not to the trainer.
  """
  found = []
  for key in config.keys():
    value = config[key]
    if key != "model_kwargs" and isinstance(value, ml_collections.ConfigDict):
      found += [f"{key}.{sub}" for sub in keys(value)]
    else:
      found.append(key)
  return found


def comments(task: str) -> dict[str, str]:
  """Dotted key -> its comment, for every key that `defaults(task)` sets, in that order.

  The comments are the trailing `# ...` of the assignments in the source of `defaults` and
  of the task's `config_defaults`, so they are written once, next to the default; a key
  without one maps to "". The task's default evaluators' keys say what they are.
  """
  found = {
    **_assignment_comments(defaults),
    **_assignment_comments(tasks.get(task).config_defaults),
  }
  del found["evals"]  # Listed by evaluator below.
  described = {
    "kind": f"Evaluator kind: {', '.join(evaluators.KINDS)}.",
    "split": "A split of config.dataset.",
    "every": "Steps between its evaluations; 0: at the end only.",
  }
  for name, section in tasks.get(task).default_evals().items():
    for key in section.keys():
      found[f"evals.{name}.{key}"] = described.get(key, f"Option of kind {section.kind!r}.")
  return found


def _assignment_comments(function: Callable[..., Any]) -> dict[str, str]:
  """Dotted key -> trailing comment of each `VAR.key... = value  # comment` in `function`.

  VAR is what `function` returns: the config itself (`return c`: keys "key...") or a dict
  of named sections (`return {"metric": metric}`: keys "metric.key...").
  """
  source = textwrap.dedent(inspect.getsource(function))
  line_comments = {
    token.start[0]: token.string.lstrip("#").strip()
    for token in tokenize.generate_tokens(io.StringIO(source).readline)
    if token.type == tokenize.COMMENT
  }
  tree = ast.parse(source)
  prefixes = {}
  for node in ast.walk(tree):
    if isinstance(node, ast.Return) and isinstance(node.value, ast.Name):
      prefixes[node.value.id] = ""
    elif isinstance(node, ast.Return) and isinstance(node.value, ast.Dict):
      prefixes.update(
        {
          value.id: f"{key.value}."
          for key, value in zip(node.value.keys, node.value.values)
          if isinstance(key, ast.Constant) and isinstance(value, ast.Name)
        }
      )
  found = {}
  assignments = [node for node in ast.walk(tree) if isinstance(node, ast.Assign)]
  for node in sorted(assignments, key=lambda node: node.lineno):  # ast.walk is breadth-first.
    if len(node.targets) != 1:
      continue
    path, target = [], node.targets[0]
    while isinstance(target, ast.Attribute):
      path.insert(0, target.attr)
      target = target.value
    if path and isinstance(target, ast.Name) and target.id in prefixes:
      found[prefixes[target.id] + ".".join(path)] = line_comments.get(node.end_lineno, "")
  return found
