"""The training loop: `run(config, workdir)` trains, evaluates and checkpoints one experiment.

A run resumes automatically from the newest readable checkpoint in `workdir`, stops
cleanly (after saving) on SIGTERM, and refuses a workdir that belongs to another
experiment. Everything task-specific is delegated to the `Task` named by `config.task`.
"""

import copy
import math
import queue
import signal
import threading
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from jax.experimental import multihost_utils

from cnnjax.data import pipeline
from cnnjax.errors import UsageError
from cnnjax.train import checkpoint
from cnnjax.train import config as config_lib
from cnnjax.train import optim
from cnnjax.train import parallel
from cnnjax.train import state as state_lib
from cnnjax.train import tasks
from cnnjax.train import transfer
from cnnjax.train import writer as writer_lib
from cnnjax.train.parallel import REPLICATED, SHARDED

# Config keys that define what the train state is: a workdir trained with other values is
# refused. Parameter shapes are added to them, so head and embedding sizes are covered.
# Training hyperparameters and evaluation-only settings (metric.knn_k, simclr.probe_epochs)
# may change between runs of one workdir.
FINGERPRINT_KEYS = ("task", "model", "model_kwargs", "dataset", "input.size", "global_bn",
                    "metric.distance")


class _Preemption:
  """Turns SIGTERM into a flag the loop polls, so it can save and exit cleanly."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  def any_process(self) -> bool:
    """Whether any process was asked to stop (all processes must agree on the step)."""
    if jax.process_count() == 1:
      return self.requested
    return bool(multihost_utils.process_allgather(np.array(self.requested)).any())


class _Prefetch:
  """Reads the next batches in a background thread, each with the iterator state after it.

  The state saved with a checkpoint is the one recorded right after the last batch the
  loop consumed, so resuming replays exactly the batches an uninterrupted run would see.
  """

  def __init__(self, iterator, depth: int = 2):
    self._iterator = iterator
    self._queue: queue.Queue = queue.Queue(maxsize=depth)
    self._stop = threading.Event()
    self.state = iterator.get_state()
    self._thread = threading.Thread(target=self._fill, daemon=True)
    self._thread.start()

  def _fill(self):
    try:
      while not self._stop.is_set():
        item = (next(self._iterator), self._iterator.get_state())
        while not self._stop.is_set():
          try:
            self._queue.put(item, timeout=0.1)
            break
          except queue.Full:
            continue
    except Exception as error:  # noqa: BLE001 -- re-raised in the consuming thread.
      self._queue.put(error)

  def __next__(self) -> dict[str, np.ndarray]:
    item = self._queue.get()
    if isinstance(item, Exception):
      raise item
    batch, self.state = item
    return batch

  def close(self):
    self._stop.set()
    self._thread.join()


class Experiment:
  """One configured experiment: task, devices, optimizer, checkpoints and data."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    config_lib.validate(config)
    if not config.model:
      raise UsageError("config.model is empty; set it to a name from `cnnjax models`.")
    if not config.dataset:
      raise UsageError("config.dataset is empty; set it to a TFDS name such as 'digits'.")
    self.config = config
    self.workdir = workdir
    self.runner = parallel.Runner(config.parallel)
    self.local_batch = self.runner.check_batch_size(config.batch_size)
    self.local_eval_batch = self.runner.check_batch_size(config.eval_batch_size or
                                                         config.batch_size)
    self.data_dir = config.data_dir or None
    info = pipeline.dataset_info(config.dataset, self.data_dir)
    self.data = tasks.DataInfo(info.num_classes, info.image_shape, info.splits, info.features)
    self.task = tasks.create(config, self.data)
    self.num_steps = self._num_steps()

    init_rng, self.step_rng = jax.random.split(jax.random.key(config.seed))
    variables = jax.device_get(jax.jit(self.task.init_variables)(init_rng))
    head: list[str] = []
    if transfer.enabled(config):
      variables, head = transfer.merge(variables, transfer.load_source(config),
                                       tuple(config.transfer.head))
    self.head = head
    self.schedule = optim.create_schedule(config, self.num_steps)
    self.frozen = transfer.frozen_patterns(config, variables["params"], head)
    self.tx = optim.create_optimizer(config, variables["params"], self.schedule, self.frozen)
    self.plateau = optim.plateau_transform(config)
    self.initial_state = jax.device_get(state_lib.create_state(variables, self.tx, self.plateau))

  def _num_steps(self) -> int:
    config = self.config
    if config.num_steps:
      return int(config.num_steps)
    if not config.num_epochs:
      raise UsageError("set config.num_steps or config.num_epochs to a positive number.")
    train_examples = self._split_size(config.train_split)
    if not train_examples:
      raise UsageError(f"train_split {config.train_split!r} of {config.dataset} is empty; "
                       "choose another split.")
    return max(1, math.ceil(config.num_epochs * train_examples / config.batch_size))

  def _split_size(self, split: str) -> int:
    """Examples in `split`, with TFDS's slicing and '+' ('train[:90%]', 'train+test')."""
    builder = tfds.builder(self.config.dataset, data_dir=pipeline.resolve_data_dir(self.data_dir))
    try:
      return builder.info.splits[split].num_examples
    except (KeyError, ValueError) as error:
      reason = str(error.args[0] if error.args else error).splitlines()[0]
      raise UsageError(f"cannot count the examples of train_split {split!r} of "
                       f"{self.config.dataset} ({reason}); fix it or set config.num_steps."
                       ) from None

  def fingerprint(self) -> dict[str, Any]:
    """The config values and parameter shapes that identify this experiment."""
    values = {}
    for key in FINGERPRINT_KEYS:
      node = self.config
      for part in key.split("."):
        node = node.get(part) if node is not None and part in node else None
      values[key] = node.to_dict() if isinstance(node, ml_collections.ConfigDict) else node
    values["params"] = {name: list(np.shape(leaf)) for name, leaf in zip(
        jax.tree.leaves(optim.path_names(self.initial_state.params)),
        jax.tree.leaves(self.initial_state.params))}
    return values

  def abstract_state(self) -> Any:
    """Shapes, dtypes and target shardings of the state, for checkpoint restore."""
    sharding = (self.runner.replicated_sharding() if self.runner.kind == "shard_map"
                else jax.sharding.SingleDeviceSharding(jax.local_devices()[0]))
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype,
                                                       sharding=sharding), self.initial_state)

  def compile_steps(self) -> tuple[Callable[[Any, dict[str, Any]], tuple[Any, dict[str, Any]]],
                                   Callable[[dict[str, Any], dict[str, Any]],
                                            tuple[dict[str, Any], dict[str, Any]]]]:
    """The compiled (train step, eval step) for this runner.

    Returns:
      train(state, batch) -> (state, metrics), with the state's buffers donated, and
      evaluate(variables, batch) -> (summed sums, per-example outputs).
    """
    train_step = state_lib.make_train_step(
        self.task, self.tx, self.schedule, self.step_rng, frozen=self.frozen)
    train = self.runner.compile(train_step, in_specs=(REPLICATED, SHARDED),
                                out_specs=(REPLICATED, REPLICATED), donate_argnums=(0,))
    evaluate = self.runner.compile(state_lib.make_eval_step(self.task),
                                   in_specs=(REPLICATED, SHARDED), out_specs=(REPLICATED, SHARDED))
    return train, evaluate

  def train_iterator(self, data_state: dict[str, Any] | None) -> _Prefetch:
    """This process's train batches, positioned as saved in `data_state`."""
    iterator = pipeline.train_iterator(
        self.config.dataset, split=self.config.train_split, batch_size=self.local_batch,
        seed=self.config.seed, data_dir=self.data_dir, process_index=jax.process_index(),
        process_count=jax.process_count(), worker_count=self.config.worker_count,
        **self.task.sampler_kwargs_for(self.runner.num_devices))
    if data_state is not None:
      iterator.set_state(data_state["iterator"])
    return _Prefetch(iterator)

  def extractor(self, eval_step: Callable[[dict[str, Any], dict[str, Any]],
                                          tuple[dict[str, Any], dict[str, Any]]],
                state: state_lib.TrainState
                ) -> Callable[[str], tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """`extract(split)` -> (summed sums, concatenated valid outputs) of a whole split."""
    variables = {"params": state.params, "batch_stats": state.batch_stats}

    def extract(split: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
      totals: dict[str, np.ndarray] = {}
      pieces: list[dict[str, np.ndarray]] = []
      iterator = pipeline.eval_iterator(
          self.config.dataset, split=split, batch_size=self.local_eval_batch,
          data_dir=self.data_dir, process_index=jax.process_index(),
          process_count=jax.process_count())
      for batch in iterator:
        sums, outputs = eval_step(variables, self.runner.shard_batch(batch))
        sums = self.runner.to_host(sums, REPLICATED)
        for name, value in sums.items():
          totals[name] = totals.get(name, 0) + np.asarray(value, np.float64)
        outputs = self.runner.to_host(outputs, SHARDED)
        valid = np.asarray(outputs.pop("valid"), bool)
        pieces.append({name: np.asarray(value)[valid] for name, value in outputs.items()})
      joined = {name: np.concatenate([p[name] for p in pieces]) for name in pieces[0]} \
          if pieces else {}
      return totals, joined

    return extract


def run(config: ml_collections.ConfigDict, workdir: str, train: bool = True) -> dict[str, Any]:
  """Trains (resuming from `workdir`) and evaluates one experiment.

  Args:
    config: a ConfigDict from an experiment's `get_config`.
    workdir: where checkpoints, metrics.jsonl, TensorBoard events, summary.json and plots go.
    train: False only evaluates the newest checkpoint (`cnnjax eval`).
  Returns:
    The final eval metrics with "step"; or {"preempted": True, "step": ...} after SIGTERM.
  Raises:
    UsageError: a bad config or workdir, or a loss that became NaN/Inf.
  """
  # SIGTERM is caught from the start: one during start-up stops the run after its first step.
  with _Preemption() as preemption:
    return _run(copy.deepcopy(config), workdir, train, preemption)


def _run(config: ml_collections.ConfigDict, workdir: str, train: bool,
         preemption: _Preemption) -> dict[str, Any]:
  """`run` with the SIGTERM handler installed."""
  config_lib.validate(config)  # Config mistakes first: they are the likelier ones.
  directory = _check_workdir(workdir, train)
  experiment = Experiment(config, workdir)
  if train:
    try:
      directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
      raise UsageError(f"cannot create --workdir {workdir} ({error}).") from None
  # Evaluation reads a workdir and creates nothing in it but its logs.
  checkpoint.check_fingerprint(directory, experiment.fingerprint(), claim=train)
  runner = experiment.runner
  checkpointer = checkpoint.Checkpointer(
      directory, keep=config.keep_checkpoints, best_metric=config.best_metric or None,
      best_mode=config.best_mode, async_save=config.async_checkpoints, create=train)
  restored = checkpointer.restore_latest(experiment.abstract_state())
  state, data_state, step = experiment.initial_state, None, 0
  if restored is not None:
    step, state, data_state = restored
  elif not train:
    checkpointer.close()
    raise UsageError(f"no readable checkpoint in {workdir}; train first with `cnnjax train`.")
  state = runner.replicate(state)
  train_step, eval_step = experiment.compile_steps()
  progress = {"auto": None, "bar": True, "lines": False}.get(config.progress)
  writer = writer_lib.MetricsWriter(directory, experiment.num_steps, step, progress)
  if restored is not None:
    writer.message(f"resumed from step {step} in {checkpointer.directory}")
  task = experiment.task

  def evaluate(state) -> dict[str, float]:
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    return task.evaluate(experiment.extractor(eval_step, state), variables)

  def check_finite(state, last_saved: int | None) -> None:
    bad = int(runner.to_host(state.nonfinite_step, REPLICATED))
    if bad >= 0:
      kept = f"the checkpoint at step {last_saved} is kept" if last_saved is not None else \
          "no checkpoint was saved"
      # `bad` counts the optimizer steps before the failing one; progress lines and
      # checkpoints number a step by the count after it.
      raise UsageError(f"loss or gradient became NaN/Inf at step {bad + 1}; {kept}; lower the "
                       "learning rate or add optimizer.clip_norm.")

  eval_metrics: dict[str, float] | None = None
  last_saved = step if restored is not None else None
  iterator = None
  try:
    iterator = experiment.train_iterator(data_state) if train else None
    while train and step < experiment.num_steps:
      batch = next(iterator)
      state, metrics = train_step(state, runner.shard_batch(batch))
      step += 1
      last = step == experiment.num_steps
      if step % config.log_every == 0 or last:
        check_finite(state, last_saved)
        writer.write(step, "train", runner.to_host(metrics, REPLICATED))
      evaluate_now = last or (config.eval_every and step % config.eval_every == 0)
      eval_metrics = None
      bad_metric = None
      if evaluate_now:
        eval_metrics = evaluate(state)
        writer.write(step, "eval", eval_metrics)
        bad_metric = _check_best_metric(config, eval_metrics, step)
        if bad_metric is None:
          state = _step_plateau(experiment, state, eval_metrics)
      # Agreeing on a stop across processes syncs every host with its device queue, so
      # multi-host runs poll only at log steps; one process polls its flag every step.
      poll = jax.process_count() == 1 or step % config.log_every == 0 or last
      stop = poll and preemption.any_process()
      if evaluate_now or stop or step % config.checkpoint_every == 0:
        check_finite(state, last_saved)
        checkpointer.save(step, runner.unreplicate(state),
                          {"iterator": iterator.state},
                          _checkpoint_metrics(config, eval_metrics))
        last_saved = step
      if bad_metric is not None:
        # Raised only once this step's checkpoint is on disk: a corrected run resumes here.
        checkpointer.wait()
        raise UsageError(bad_metric)
      if stop and not last:
        checkpointer.wait()
        writer.message(f"stopped by SIGTERM at step {step}; checkpoint saved; run the same "
                       "command again to resume.")
        return {"preempted": True, "step": step}
    if eval_metrics is None:
      eval_metrics = evaluate(state)
      writer.write(step, "eval", eval_metrics)
    checkpointer.wait()
    summary = {**eval_metrics, "step": step}
    if train:
      writer_lib.write_summary(directory, summary)
    if jax.process_index() == 0 and train:
      writer_lib.plot_curves(directory)
      outputs = getattr(task, "last_outputs", {})
      if task.has_embeddings and "embedding" in outputs:
        writer_lib.plot_embeddings(directory, outputs["embedding"], outputs["label"])
    writer.message("final " + ", ".join(f"{k}={v:.4f}" for k, v in eval_metrics.items()
                                        if k != "count"))
    return summary
  finally:
    if train and iterator is not None:
      iterator.close()
    checkpointer.close()
    writer.close()


def _check_workdir(workdir: str, train: bool) -> epath.Path:
  """`workdir` as a path, after checking it can hold (or, to evaluate, holds) checkpoints.

  Creates nothing, so a bad --workdir leaves no trace.
  """
  directory = checkpoint.workdir_path(workdir)
  try:
    if directory.exists() and not directory.is_dir():
      raise UsageError(f"--workdir {workdir} is a file; pass a directory path.")
    if "://" not in workdir:
      ancestor = next(p for p in directory.parents if p.exists())
      if not ancestor.is_dir():
        raise UsageError(f"--workdir {workdir} lies under {ancestor}, which is a file; pass a "
                         "directory path.")
    if not train and not checkpoint.has_checkpoint(directory):
      raise UsageError(f"no checkpoint in --workdir {workdir}; train first with `cnnjax train`.")
  except ImportError as error:  # epath lacks the file system of a remote URI (e.g. gcsfs).
    raise UsageError(f"--workdir {workdir}: {error}") from None
  return directory


def _check_best_metric(config: ml_collections.ConfigDict, eval_metrics: dict[str, float],
                       step: int) -> str | None:
  """The error for a `config.best_metric` that the evaluation lacks, or None."""
  if not config.best_metric or config.best_metric in eval_metrics:
    return None
  names = ", ".join(sorted(name for name in eval_metrics if name != "count"))
  return (f"config.best_metric {config.best_metric!r} is not among the eval metrics; choose "
          f"one of {names} (the checkpoint of step {step} is saved; a corrected run resumes).")


def _step_plateau(experiment: Experiment, state: state_lib.TrainState,
                  eval_metrics: dict[str, float]) -> state_lib.TrainState:
  """Steps reduce-on-plateau with the eval metric and stores its new scale in the state."""
  config = experiment.config
  if config.schedule.name != "plateau":
    return state
  plateau = experiment.runner.to_host(state.plateau, REPLICATED)
  plateau = optim.plateau_update(plateau, eval_metrics[config.best_metric], config)
  return state.replace(plateau=experiment.runner.replicate(plateau))


def _checkpoint_metrics(config, eval_metrics: dict[str, float] | None) -> dict[str, float] | None:
  if not eval_metrics or not config.best_metric or config.best_metric not in eval_metrics:
    return None
  return {config.best_metric: float(eval_metrics[config.best_metric])}

