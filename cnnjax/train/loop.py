"""The training loop: `run(config, workdir)` trains one experiment, `evaluate` evaluates it.

Before a run touches `workdir` it checks the config, the model and every data split it
will read, so a mistake leaves the workdir as it was. It then locks the workdir (one
trainer at a time), resumes from the newest checkpoint that verifies, and stops cleanly,
after saving, on SIGTERM or Ctrl-C. A workdir that holds checkpoints is never trained
from scratch by accident, and one that belongs to another experiment is refused.
Everything task-specific is delegated to the `Task` named by `config.task`, and metrics
to the evaluators of `config.evals`.

The data flow: `Experiment` turns the config into a task, its initial train state, the
optimizer and the evaluators; `compile_steps` gives the jit-compiled train and eval steps
for the device mesh; `_Training.run` restores the newest checkpoint, then repeats step,
log, evaluate, checkpoint and stop until the last step, and writes the summary, the plots
and the pictures of `config.show_at_end`.
"""

import contextlib
import copy
import math
import queue
import sys
import threading
import time
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from jax.experimental import multihost_utils

from cnnjax import stopping
from cnnjax.data import pipeline
from cnnjax.inspect import show
from cnnjax.errors import UsageError
from cnnjax.train import checkpoint
from cnnjax.param_paths import path_names
from cnnjax.train import config as config_lib
from cnnjax.train import evaluators as evaluators_lib
from cnnjax.train import optim
from cnnjax.train import parallel
from cnnjax.train import state as state_lib
from cnnjax.train import tasks
from cnnjax.train import transfer
from cnnjax.train import writer as writer_lib
from cnnjax.train.tasks import inputs
from cnnjax.train.parallel import REPLICATED, SHARDED

# Config keys that define what the train state is: a workdir trained with other values is
# refused. Parameter shapes and the task's own `state_keys` are added to them, so head and
# embedding sizes are covered. Training hyperparameters and evaluators may change between
# runs of one workdir.
FINGERPRINT_KEYS = ("task", "model", "model_kwargs", "dataset", "input.size", "global_bn")


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

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    workdir: str,
    devices: Sequence[jax.Device] | None = None,
  ):
    """Checks `config` and its data, and builds the task, initial state and optimizer.

    Args:
      config: the experiment's ConfigDict.
      workdir: where its checkpoints go.
      devices: the devices of the mesh (default: all); `cnnjax plan` passes the abstract
        devices of a TPU topology, for which the steps are compiled but never run.
    """
    config_lib.validate(config)
    if not config.model:
      raise UsageError("config.model is empty; set it to a name from `cnnjax models`.")
    if not config.dataset:
      raise UsageError("config.dataset is empty; set it to a TFDS name such as 'digits'.")
    self.config = config
    self.workdir = workdir
    self.runner = parallel.Runner(config.parallel, devices)
    self.local_batch = self.runner.check_batch_size(config.batch_size)
    self.local_eval_batch = self.runner.check_batch_size(
      config.eval_batch_size or config.batch_size,
      "eval_batch_size" if config.eval_batch_size else "batch_size",
    )
    self.data_dir = config.data_dir or None
    info = pipeline.dataset_info(config.dataset, self.data_dir)
    self.data = tasks.DataInfo(info.num_classes, info.image_shape, info.splits, info.features)
    self.task = tasks.create(config, self.data)
    self.evaluators = evaluators_lib.create(config.evals, self.task, config.train_split)
    splits = dict.fromkeys(
      [
        config.train_split,
        *(split for evaluator in self.evaluators for split in evaluator.splits()),
      ]
    )
    pipeline.check_readable(config.dataset, tuple(splits), self.data_dir)
    self.num_steps = self._num_steps()
    self._check_batch_splits()

    init_rng, self.step_rng = jax.random.split(jax.random.key(config.seed))
    variables = jax.device_get(jax.jit(self.task.init_variables)(init_rng))
    head: list[str] = []
    if transfer.enabled(config.transfer):
      variables, head = transfer.merge(
        variables, transfer.load_source(config.transfer), tuple(config.transfer.head)
      )
    self.head = head
    self.schedule = optim.create_schedule(config.schedule, self.num_steps, config.batch_size)
    self.freezing = transfer.freezing(config.transfer, variables["params"], head)
    self.tx = optim.create_optimizer(
      config.optimizer, variables["params"], self.schedule, self.freezing
    )
    self.plateau = optim.plateau_transform(config.schedule)
    self.initial_state = jax.device_get(
      state_lib.create_state(variables, self.tx, self.plateau, ema=config.ema_decay > 0)
    )

  def _check_batch_splits(self) -> None:
    """UsageError unless accumulate_steps and micro_batch_size divide the per-device batch."""
    per_device = self.config.batch_size // self.runner.num_devices
    for key, size in (
      ("accumulate_steps", self.config.accumulate_steps),
      ("micro_batch_size", self.config.micro_batch_size),
    ):
      if size and per_device % size:
        raise UsageError(
          f"config.{key}={size} does not divide the per-device batch "
          f"{per_device} (batch_size {self.config.batch_size} over "
          f"{self.runner.num_devices} devices); choose a divisor of it."
        )

  def _num_steps(self) -> int:
    config = self.config
    if config.num_steps:
      return int(config.num_steps)
    if not config.num_epochs:
      raise UsageError("set config.num_steps or config.num_epochs to a positive number.")
    train_examples = self._split_size(config.train_split)
    if not train_examples:
      raise UsageError(
        f"train_split {config.train_split!r} of {config.dataset} is empty; choose another split."
      )
    return max(1, math.ceil(config.num_epochs * train_examples / config.batch_size))

  def _split_size(self, split: str) -> int:
    """Examples in `split`, with TFDS's slicing and '+' ('train[:90%]', 'train+test')."""
    builder = tfds.builder(self.config.dataset, data_dir=pipeline.resolve_data_dir(self.data_dir))
    try:
      return builder.info.splits[split].num_examples
    except (KeyError, ValueError) as error:
      reason = str(error.args[0] if error.args else error).splitlines()[0]
      raise UsageError(
        f"cannot count the examples of train_split {split!r} of "
        f"{self.config.dataset} ({reason}); fix it or set config.num_steps."
      ) from None

  def fingerprint(self) -> dict[str, Any]:
    """The config values and parameter shapes that identify this experiment."""
    values = {}
    for key in FINGERPRINT_KEYS + self.task.state_keys:
      node = self.config
      for part in key.split("."):
        node = node.get(part) if node is not None and part in node else None
      values[key] = node.to_dict() if isinstance(node, ml_collections.ConfigDict) else node
    values["params"] = {
      name: list(np.shape(leaf))
      for name, leaf in zip(
        jax.tree.leaves(path_names(self.initial_state.params)),
        jax.tree.leaves(self.initial_state.params),
      )
    }
    return values

  def abstract_state(self) -> Any:
    """Shapes, dtypes and target shardings of the state, for checkpoint restore."""
    sharding = (
      self.runner.replicated_sharding()
      if self.runner.kind == "shard_map"
      else jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    )
    return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype, sharding=sharding),
      self.initial_state,
    )

  def compile_steps(
    self,
  ) -> tuple[
    Callable[[Any, Any, dict[str, Any]], tuple[Any, Any]],
    Callable[[dict[str, Any], dict[str, Any]], tuple[dict[str, Any], dict[str, Any]]],
  ]:
    """The compiled (train step, eval step) for this runner.

    Returns:
      train(state, sums, batch) -> (state, sums + this step's metrics), with the state's
      and the sums' buffers donated: the loop logs interval means without a host sync per
      step (`sums=None` returns the metrics alone, for `jax.eval_shape`); and
      evaluate(variables, batch) -> (summed sums, per-example outputs).
    """
    config = self.config
    train_step = state_lib.make_train_step(
      self.task,
      self.tx,
      self.schedule,
      self.step_rng,
      self.freezing,
      accumulate_steps=config.accumulate_steps,
      micro_batch_size=config.micro_batch_size,
      ema_decay=config.ema_decay,
    )

    def train_and_sum(state, sums, batch):
      state, metrics = train_step(state, batch)
      return state, metrics if sums is None else jax.tree.map(jnp.add, sums, metrics)

    train = self.runner.compile(
      train_and_sum,
      in_specs=(REPLICATED, REPLICATED, SHARDED),
      out_specs=(REPLICATED, REPLICATED),
      donate_argnums=(0, 1),
    )
    evaluate = self.runner.compile(
      state_lib.make_eval_step(self.task),
      in_specs=(REPLICATED, SHARDED),
      out_specs=(REPLICATED, SHARDED),
    )
    return train, evaluate

  def show_run(self, variables: dict[str, Any], step: int) -> show.Run:
    """Host {"params", "batch_stats"} at `step` as the `cnnjax.inspect.show.Run` to draw."""
    config = self.config
    mean, std = inputs.normalization(config.input, config.dataset)

    def batches(split: str, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
      return pipeline.eval_iterator(
        config.dataset, split=split, batch_size=batch_size, data_dir=self.data_dir
      )

    return show.Run(
      task=self.task,
      variables=variables,
      step=step,
      batches=batches,
      class_names=pipeline.class_names(config.dataset, self.data_dir),
      mean=mean,
      std=std,
      workdir=self.workdir,
    )

  def train_iterator(self, data_state: dict[str, Any] | None) -> _Prefetch:
    """This process's train batches, positioned as saved in `data_state`."""
    iterator = pipeline.train_iterator(
      self.config.dataset,
      split=self.config.train_split,
      batch_size=self.local_batch,
      seed=self.config.seed,
      data_dir=self.data_dir,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
      worker_count=self.config.worker_count,
      **self.task.sampler_kwargs_for(self.runner.num_devices),
    )
    if data_state is not None:
      iterator.set_state(data_state["iterator"])
    return _Prefetch(iterator)

  def evaluate(
    self, eval_step: Callable, state: state_lib.TrainState, due: list[evaluators_lib.Evaluator]
  ) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Runs the evaluators `due` on the state's weights, and on its moving averages if any.

    Returns:
      ({evaluator name, "ema/" + name for the averages: its metrics},
       {split: (sums, outputs)} read with the raw weights).
    """
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    metrics, results = evaluators_lib.evaluate_all(due, self.extractor(eval_step, variables))
    if state.ema:
      averaged, _ = evaluators_lib.evaluate_all(due, self.extractor(eval_step, state.ema))
      metrics.update({f"ema/{name}": values for name, values in averaged.items()})
    return metrics, results

  def extractor(
    self,
    eval_step: Callable[[dict[str, Any], dict[str, Any]], tuple[dict[str, Any], dict[str, Any]]],
    variables: dict[str, Any],
  ) -> Callable[[str], tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """`extract(split)` -> (summed sums, concatenated valid outputs) of a whole split.

    `variables` are {"params", "batch_stats"} on the devices.
    """

    def extract(split: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
      totals: dict[str, np.ndarray] = {}
      pieces: list[dict[str, np.ndarray]] = []
      iterator = pipeline.eval_iterator(
        self.config.dataset,
        split=split,
        batch_size=self.local_eval_batch,
        data_dir=self.data_dir,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
      )
      for batch in iterator:
        sums, outputs = eval_step(variables, self.runner.shard_batch(batch))
        sums = self.runner.to_host(sums, REPLICATED)
        for name, value in sums.items():
          # Counts stay integers (exact at any size); other sums in float64.
          value = np.asarray(value)
          totals[name] = totals.get(name, 0) + value.astype(
            np.int64 if np.issubdtype(value.dtype, np.integer) else np.float64
          )
        outputs = self.runner.to_host(outputs, SHARDED)
        valid = np.asarray(outputs.pop("valid"), bool)
        pieces.append({name: np.asarray(value)[valid] for name, value in outputs.items()})
      joined = (
        {name: np.concatenate([p[name] for p in pieces]) for name in pieces[0]} if pieces else {}
      )
      return totals, joined

    return extract


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains one experiment in `workdir`, resuming from its newest checkpoint, and evaluates it.

  Args:
    config: a ConfigDict from an experiment's `get_config`.
    workdir: where checkpoints, metrics.jsonl, config.json, TensorBoard events,
      summary.json and plots go.
  Returns:
    The final eval metrics with "step"; or {"preempted": "SIGTERM" or "SIGINT", "step": N}
    when a signal stopped the run (after saving a checkpoint).
  Raises:
    UsageError: a bad config, data or workdir, unrestorable checkpoints, or a loss that
      became NaN/Inf.
  """
  stopping.install()  # A no-op under the command line, which installed it first.
  try:
    config = copy.deepcopy(config)
    experiment = Experiment(config, workdir)  # Every check that needs no workdir, first.
    profiler = _Profiler(config.profile_steps, workdir)
    directory = _check_workdir(workdir, train=True)
    created = not directory.exists()
    try:
      directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
      raise UsageError(f"cannot create --workdir {workdir} ({error}).") from None
    training = _Training(experiment, directory, profiler)
    try:
      with checkpoint.WorkdirLock(directory):
        return training.run()
    except BaseException:
      # A run that failed before its first step leaves no workdir behind to claim.
      if (
        created
        and not training.started
        and jax.process_index() == 0
        and not checkpoint.has_checkpoint(directory)
      ):
        directory.rmtree(missing_ok=True)
      raise
  finally:
    stopping.uninstall()


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """The eval metrics, with "step", of the newest checkpoint in `workdir`; writes nothing.

  Raises:
    UsageError: a bad config, or a workdir without a checkpoint of this experiment.
  """
  config = copy.deepcopy(config)
  experiment = Experiment(config, workdir)
  directory = _check_workdir(workdir, train=False)
  checkpoint.check_fingerprint(directory, experiment.fingerprint(), claim=False)
  checkpointer = _checkpointer(config, directory, create=False)
  try:
    # The optimizer state plays no part in evaluation: any optimizer's checkpoint will do.
    restored = checkpointer.restore_latest(
      experiment.abstract_state(), experiment.initial_state, new_optimizer=True
    )
  except checkpoint.NothingRestorable as error:
    raise UsageError(f"{error.problems}; there is nothing to evaluate.") from None
  finally:
    checkpointer.close()
  _say(f"evaluating checkpoint {restored.step} in {checkpointer.directory}")
  runner = experiment.runner
  state = runner.replicate(restored.state)
  _, eval_step = experiment.compile_steps()
  metrics, _ = experiment.evaluate(eval_step, state, experiment.evaluators)
  return {**evaluators_lib.flat(metrics), "step": restored.step}


def _say(text: str) -> None:
  """A line on stderr from process 0, where the run has no MetricsWriter."""
  if jax.process_index() == 0:
    print(text, file=sys.stderr, flush=True)


def _checkpointer(
  config: ml_collections.ConfigDict, directory: epath.Path, create: bool
) -> checkpoint.Checkpointer:
  return checkpoint.Checkpointer(
    directory,
    keep=config.keep_checkpoints,
    best_metric=config.best_metric or None,
    best_mode=config.best_mode,
    async_save=config.async_checkpoints,
    create=create,
  )


class _Training:
  """One `cnnjax train` in a locked workdir: restore, then step, log, evaluate, save, stop."""

  def __init__(self, experiment: Experiment, directory: epath.Path, profiler: "_Profiler"):
    self.experiment = experiment
    self.config = experiment.config
    self.directory = directory
    self.profiler = profiler
    self.runner = experiment.runner
    self.started = False  # Whether a train step ran: from then on the workdir is kept.
    self.log: _TrainLog | None = None

  def run(self) -> dict[str, Any]:
    config, experiment = self.config, self.experiment
    checkpoint.check_fingerprint(self.directory, experiment.fingerprint(), claim=True)
    self.checkpointer = _checkpointer(config, self.directory, create=True)
    try:
      step, state, data_state, notes = self._restore()
      summary = writer_lib.read_summary(self.directory)
      if step >= experiment.num_steps and summary is not None and summary.get("step") == step:
        _say(
          f"already trained to step {step}; final metrics in "
          f"{self.directory / writer_lib.SUMMARY_FILE}"
        )
        return summary
      changes = writer_lib.record_config(self.directory, config.to_dict(), step)
      self.writer = writer_lib.MetricsWriter(
        self.directory,
        experiment.num_steps,
        step,
        {"auto": None, "bar": True, "lines": False}[config.progress],
      )
      try:
        self.writer.write_config(
          writer_lib.flat_config(config.to_dict()), writer_lib.git_commit(), step
        )
        for note in notes + changes:
          self.writer.message(note)
        if step >= experiment.num_steps:
          return self._finish(step, self.runner.replicate(state), None, {})
        return self._train(step, self.runner.replicate(state), data_state)
      finally:
        self.writer.close()
    finally:
      self.checkpointer.close()

  def _restore(self) -> tuple[int, state_lib.TrainState, dict[str, Any] | None, list[str]]:
    """(step, host state, data state, messages) to start from: a checkpoint, else step 0."""
    experiment = self.experiment
    try:
      restored = self.checkpointer.restore_latest(
        experiment.abstract_state(),
        experiment.initial_state,
        new_optimizer=self.config.new_optimizer,
      )
    except checkpoint.NothingRestorable:
      if not self.config.restart:
        raise
      self.checkpointer.close()
      aside = checkpoint.set_aside(self.directory)
      writer_lib.set_aside_metrics(self.directory, aside)
      self.checkpointer = _checkpointer(self.config, self.directory, create=True)
      return (
        0,
        experiment.initial_state,
        None,
        [f"no checkpoint could be restored; they were moved to {aside}; training from step 0"],
      )
    if restored is None:
      return 0, experiment.initial_state, None, []
    notes = [f"resumed from step {restored.step} in {self.checkpointer.directory}"]
    if restored.new_optimizer:
      notes.append(
        "the optimizer changed: parameters and BatchNorm statistics restored, "
        "optimizer state started afresh (config.new_optimizer)"
      )
    writer_lib.truncate_metrics(self.directory, restored.step)
    return restored.step, restored.state, restored.data, notes

  def _train(
    self, step: int, state: state_lib.TrainState, data_state: dict[str, Any] | None
  ) -> dict[str, Any]:
    """Steps from `step` to the end (or to a stop signal), then finishes.

    After each step, in order: log (every `log_every`), evaluate (each evaluator at its
    own cadence), checkpoint (every `checkpoint_every`, after an evaluation, and on a stop
    signal), stop (the last step, or a signal).
    """
    experiment, runner = self.experiment, self.runner
    train_step, self.eval_step = experiment.compile_steps()
    iterator = experiment.train_iterator(data_state)
    try:
      batch = runner.shard_batch(next(iterator))
      self.log = _TrainLog(
        runner,
        self.writer,
        self.config.log_every,
        jax.eval_shape(train_step, state, None, batch)[1],
        step,
      )
      while True:
        state, self.log.sums = train_step(state, self.log.sums, batch)
        step += 1
        self._after_step(step, state)
        last = step == experiment.num_steps
        if self.log.due(step, last):
          self._check_finite(state)
          self.log.write(step)
        eval_metrics, results = self._evaluate(step, state, last)
        state = self._step_plateau(state, eval_metrics)
        # Agreeing on a stop across processes syncs every host with its device queue, so
        # multi-host runs poll only at log steps; one process polls every step.
        stop = _stop_requested(
          jax.process_count() == 1 or step % self.config.log_every == 0 or last
        )
        if eval_metrics is not None or stop or step % self.config.checkpoint_every == 0:
          with self.log.speed.excluded(state):
            self._save(step, state, iterator.state, eval_metrics)
        if last:
          return self._finish(step, state, eval_metrics, results)
        if stop:
          self.checkpointer.wait()
          self.writer.message(
            f"stopped by {_SIGNAL_NAMES[stop]} at step {step}; checkpoint "
            "saved; run the same command again to resume."
          )
          return {"preempted": stop, "step": step}
        batch = runner.shard_batch(next(iterator))
    finally:
      iterator.close()
      self.profiler.close()

  def _after_step(self, step: int, state: Any) -> None:
    """Reports the first step's time (compilation included) and drives the profiler."""
    if not self.started:
      self.started = True
      jax.block_until_ready(state)
      self.writer.message(
        f"first step (compilation included) took {self.log.speed.restart():.1f} s"
      )
    else:
      self.log.speed.count()
    self.profiler.after(step, state)

  def _evaluate(
    self, step: int, state: Any, last: bool
  ) -> tuple[dict[str, float] | None, dict[str, Any]]:
    """Runs the evaluators due after `step`, each logged as its own split.

    Returns:
      ({"NAME/metric": value} or None when none was due, {split: (sums, outputs)} read).
    """
    due = [evaluator for evaluator in self.experiment.evaluators if evaluator.due(step, last)]
    if not due:
      return None, {}
    # Evaluation time is not training time (before the first step there is no log).
    with self.log.speed.excluded(state) if self.log else contextlib.nullcontext():
      metrics, results = self.experiment.evaluate(self.eval_step, state, due)
    for name, values in metrics.items():
      self.writer.write(step, name, values)
    return evaluators_lib.flat(metrics), results

  def _step_plateau(
    self, state: state_lib.TrainState, eval_metrics: dict[str, float] | None
  ) -> state_lib.TrainState:
    """Steps reduce-on-plateau with the evaluation of `best_metric`, when there is one."""
    config = self.config
    if (
      config.schedule.name != "plateau"
      or not eval_metrics
      or config.best_metric not in eval_metrics
    ):
      return state
    plateau = self.runner.to_host(state.plateau, REPLICATED)
    plateau = optim.plateau_update(
      plateau, eval_metrics[config.best_metric], config.schedule, config.best_mode
    )
    return state.replace(plateau=self.runner.replicate(plateau))

  def _save(
    self, step: int, state: Any, data_state: dict[str, Any], eval_metrics: dict[str, float] | None
  ) -> None:
    self._check_finite(state)
    best = self.config.best_metric
    metrics = {best: float(eval_metrics[best])} if eval_metrics and best in eval_metrics else None
    self.checkpointer.save(step, self.runner.unreplicate(state), {"iterator": data_state}, metrics)

  def _check_finite(self, state: Any) -> None:
    bad = int(self.runner.to_host(state.nonfinite_step, REPLICATED))
    if bad < 0:
      return
    saved = self.checkpointer.all_steps()
    kept = f"the checkpoint at step {saved[-1]} is kept" if saved else "no checkpoint was saved"
    # `bad` counts the optimizer steps before the failing one; progress lines and
    # checkpoints number a step by the count after it.
    raise UsageError(
      f"loss or gradient became NaN/Inf at step {bad + 1}; {kept}; lower the "
      "learning rate or add optimizer.clip_norm (then rerun with "
      "--config.new_optimizer=True)."
    )

  def _finish(
    self, step: int, state: Any, eval_metrics: dict[str, float] | None, results: dict[str, Any]
  ) -> dict[str, Any]:
    """Writes the run's summary, plots and pictures; evaluates when `step` has no eval record."""
    self.checkpointer.wait()
    if eval_metrics is None:
      eval_metrics = writer_lib.eval_record(self.directory, step)
    if eval_metrics is None:
      self.eval_step = self.experiment.compile_steps()[1]
      eval_metrics, results = self._evaluate(step, state, last=True)
    summary = {**(eval_metrics or {}), "step": step}
    writer_lib.write_summary(self.directory, summary)
    if jax.process_index() == 0:
      self._plot(results)
      self._show(step, state)
    self.writer.message(
      "final "
      + ", ".join(
        f"{k}={v:.4f}" for k, v in summary.items() if k != "step" and not k.endswith("/count")
      )
    )
    return summary

  def _plot(self, results: dict[str, Any]) -> None:
    """curves.png, per_class.png and, for embeddings, a projection of the first eval split's."""
    smoothing = self.config.label_smoothing
    writer_lib.plot_curves(
      self.directory, notes={"train/loss": f"label smoothing {smoothing}"} if smoothing else None
    )
    writer_lib.plot_per_class(self.directory)
    if not self.experiment.task.has_embeddings:
      return
    for evaluator in self.experiment.evaluators:
      outputs = results.get(evaluator.split, (None, {}))[1]
      if "embedding" in outputs:
        writer_lib.plot_embeddings(self.directory, outputs["embedding"], outputs["label"])
        return

  def _show(self, step: int, state: Any) -> None:
    """Draws the kinds of `config.show_at_end` as show/KIND.png and TensorBoard's show/KIND.

    Images come from the first evaluator's split, which the run has checked it can read. A
    picture the model cannot give (filters of a model without convolutions) is reported,
    not raised: the run itself has finished.
    """
    kinds = tuple(dict.fromkeys(self.config.show_at_end))
    if not kinds:
      return
    start = time.perf_counter()
    split = next((e.split for e in self.experiment.evaluators), self.config.train_split)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    run = self.experiment.show_run(self.runner.to_host(variables, REPLICATED), step)
    drawn = []
    for kind in kinds:
      try:
        path = show.render(kind, run, split=split)
      except UsageError as error:
        self.writer.message(f"config.show_at_end: no {kind} picture: {error}")
        continue
      self.writer.write_image(step, f"show/{kind}", path)
      drawn.append(kind)
    if drawn:
      self.writer.message(
        f"drew {', '.join(drawn)} into {self.directory / 'show'} and TensorBoard in "
        f"{time.perf_counter() - start:.1f} s (config.show_at_end)"
      )


class _TrainLog:
  """Train metrics summed on the device over each `log_every` interval, written as means."""

  def __init__(
    self,
    runner: parallel.Runner,
    writer: writer_lib.MetricsWriter,
    log_every: int,
    metric_shapes: Any,
    step: int,
  ):
    self.runner, self.writer, self.log_every = runner, writer, log_every
    per_device = (lambda s: s.shape[1:]) if runner.kind == "pmap" else (lambda s: s.shape)
    # Host zeros shaped like one device's step metrics, to start each interval's sums.
    self.zeros = jax.tree.map(lambda s: np.zeros(per_device(s), s.dtype), metric_shapes)
    self.sums = runner.replicate(self.zeros)
    self.logged_step = step
    self.speed = _Speed()

  def due(self, step: int, last: bool) -> bool:
    return last or step % self.log_every == 0

  def write(self, step: int) -> None:
    """Writes the interval's means and starts the next interval."""
    totals = self.runner.to_host(self.sums, REPLICATED)
    means = {name: value / (step - self.logged_step) for name, value in totals.items()}
    self.writer.write(step, "train", {**means, "steps_per_second": self.speed.per_second()})
    self.sums, self.logged_step = self.runner.replicate(self.zeros), step
    self.speed.restart()


_SIGNAL_NAMES = {"SIGTERM": "SIGTERM", "SIGINT": "Ctrl-C (SIGINT)"}
_STOP_CODES = (None, "SIGTERM", "SIGINT")


def _stop_requested(poll: bool) -> str | None:
  """The stop signal any process received ("SIGTERM" or "SIGINT"), when `poll`; else None."""
  if not poll:
    return None
  if jax.process_count() == 1:
    return stopping.requested()
  codes = multihost_utils.process_allgather(np.array(_STOP_CODES.index(stopping.requested())))
  return _STOP_CODES[int(np.max(codes))]


class _Speed:
  """Steps per second of training alone: compilation, evaluations and checkpoints excluded."""

  def __init__(self):
    self._since, self._excluded, self._steps = time.perf_counter(), 0.0, 0

  def restart(self) -> float:
    """Starts a new interval; returns the seconds since the previous start."""
    now = time.perf_counter()
    elapsed, self._since, self._excluded, self._steps = now - self._since, now, 0.0, 0
    return elapsed

  def count(self) -> None:
    self._steps += 1

  @contextlib.contextmanager
  def excluded(self, state: Any) -> Iterator[None]:
    """Leaves the block's time out; first waits for the steps already queued on the device."""
    jax.block_until_ready(state)
    start = time.perf_counter()
    try:
      yield
    finally:
      self._excluded += time.perf_counter() - start

  def per_second(self) -> float:
    seconds = time.perf_counter() - self._since - self._excluded
    return self._steps / seconds if self._steps and seconds > 0 else float("nan")


class _Profiler:
  """A jax.profiler trace of steps A+1..B (`config.profile_steps = (A, B)`) in tensorboard/."""

  def __init__(self, profile_steps: tuple[int, ...], workdir: str):
    steps = tuple(profile_steps)
    if steps and (
      len(steps) != 2 or not all(isinstance(s, int) for s in steps) or not 0 <= steps[0] < steps[1]
    ):
      raise UsageError(
        f"config.profile_steps must be two steps A,B with 0 <= A < B, got {profile_steps!r}."
      )
    self.steps = steps
    self.logdir = checkpoint.workdir_path(workdir) / writer_lib.TENSORBOARD_DIR
    self.tracing = False

  def after(self, step: int, state: Any) -> None:
    """Starts or stops the trace once step `step` has been dispatched."""
    if not self.steps or jax.process_index() != 0:
      return
    if step == self.steps[0]:
      jax.block_until_ready(state)
      jax.profiler.start_trace(str(self.logdir))
      self.tracing = True
    elif step == self.steps[1] and self.tracing:
      jax.block_until_ready(state)
      self.close()

  def close(self) -> None:
    if self.tracing:
      jax.profiler.stop_trace()
      self.tracing = False


def _check_workdir(workdir: str, train: bool) -> epath.Path:
  """`workdir` as a path, after checking it can hold (or, to evaluate, holds) checkpoints.

  Creates nothing, so a bad --workdir leaves no trace.
  """
  directory = checkpoint.workdir_path(workdir)
  try:
    if directory.exists() and not directory.is_dir():
      raise UsageError(f"--workdir {workdir} is a file; pass a directory path.")
    if not checkpoint.is_remote(workdir):
      ancestor = next(p for p in directory.parents if p.exists())
      if not ancestor.is_dir():
        raise UsageError(
          f"--workdir {workdir} lies under {ancestor}, which is a file; pass a directory path."
        )
    if not train and not checkpoint.has_checkpoint(directory):
      raise UsageError(f"no checkpoint in --workdir {workdir}; train first with `cnnjax train`.")
  except ImportError as error:  # epath lacks the file system of a remote URI (e.g. gcsfs).
    raise UsageError(f"--workdir {workdir}: {error}") from None
  return directory
