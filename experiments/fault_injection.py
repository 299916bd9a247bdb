"""Fault injection: SIGKILL `cnnjax train` at random moments; every restart must end bit-identical.

Trains one uninterrupted reference run of experiments/configs/lenet_digits.py (made
small: `--num_steps` steps of batch 32, a checkpoint every `--checkpoint_every` steps,
asynchronous saves as in the default config). Then each of `--runs` runs trains the same
experiment in a fresh workdir, is SIGKILLed 1 to `--max_kills` times and restarted after
each kill until it finishes. A run passes when its newest checkpoint (the whole train
state: parameters, optimizer state, step, and the data iterator's state) equals the
reference's bit for bit and its summary.json is the same.

Each kill is drawn from the run's own random stream (`--seed`, run index): a target,
uniform over the steps after the newest checkpoint on disk and the finish (so some kills
come before any checkpoint), then
  at a step   a uniformly random moment inside the step after the target; for the finish,
              in the first 3 s after the final evaluation is logged (summary.json, plots);
  at a save   (a `--kill_during_save` fraction of kills) a random moment in the first
              0.2 s of an asynchronous save in flight at or after the target step (a save
              here takes 0.3-0.9 s, overlapping the next steps).
A kill is counted as "during a save" when a save's temporary directory exists at the kill.

Failed runs keep their workdir (and the reference is kept) under `--workdir_root` for
inspection; passing ones are deleted. The exit status is 1 if any run differs or fails.

    .venv/bin/python experiments/fault_injection.py --runs=10 --seed=0
"""

import concurrent.futures
import dataclasses
import datetime
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = REPO / "experiments" / "configs" / "lenet_digits.py"
# --config.progress=lines prints "[train] step 3/60: ..." and "[eval] step 60/60: ...".
PROGRESS = re.compile(r"^\[(train|eval)\] step (\d+)/(\d+)", re.MULTILINE)
TMP_SUFFIX = ".orbax-checkpoint-tmp"  # Orbax writes a step here, then renames it.
ATTEMPT_TIMEOUT_S = 600
POLL_S = 0.01
SAVE_KILL_DELAY_S = 0.2  # A save here takes 0.3-0.9 s: most kills within it land mid-save.
FINISH_KILL_DELAY_S = 3.0  # After the final evaluation: summary.json, then about 4 s of plots.

_RUNS = flags.DEFINE_integer("runs", 10, "Faulted runs to compare with the reference.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of where the kills land.")
_WORKDIR_ROOT = flags.DEFINE_string(
  "workdir_root",
  "workdirs/fault_injection",
  "Holds the shared XLA cache and one timestamped folder of workdirs per invocation.",
)
_NUM_STEPS = flags.DEFINE_integer("num_steps", 60, "Train steps of every run.")
_CHECKPOINT_EVERY = flags.DEFINE_integer("checkpoint_every", 8, "Steps between checkpoints.")
_MAX_KILLS = flags.DEFINE_integer("max_kills", 3, "Each run is killed 1 to this many times.")
_KILL_DURING_SAVE = flags.DEFINE_float(
  "kill_during_save", 0.5, "Fraction of kills aimed at an asynchronous save in flight."
)
_JOBS = flags.DEFINE_integer("jobs", 1, "Runs (the reference among them) trained at once.")


@dataclasses.dataclass(frozen=True)
class Kill:
  """Where a SIGKILL landed."""

  step: int  # The newest train step the process had logged.
  saving: int | None  # The step of a save whose temporary directory existed, if any.
  evaluated: bool  # Whether it had logged its final evaluation.

  def __str__(self) -> str:
    where = "the finish" if self.evaluated else f"step {self.step}"
    return where + (f" (save of {self.saving})" if self.saving is not None else "")


@dataclasses.dataclass
class RunResult:
  """What happened to one run (the reference or a faulted one)."""

  index: int  # -1 for the reference.
  workdir: pathlib.Path
  kills: list[Kill] = dataclasses.field(default_factory=list)
  resumes: list[int] = dataclasses.field(default_factory=list)  # Steps resumed from.
  error: str | None = None  # Why the run failed, before any comparison.

  def row(self, failed: bool) -> str:
    """This run's line of the per-run table."""
    return (
      f"| {self.index} | {', '.join(map(str, self.kills)) or '-'} | "
      f"{', '.join(map(str, self.resumes)) or '-'} | "
      f"{'differs or failed' if failed else 'bit-identical'} |"
    )


@dataclasses.dataclass
class Report:
  """The outcome of `inject`."""

  runs: int
  kills: int
  saves_hit: int
  resumes: int
  identical: int
  failures: list[tuple[int, str, str]]  # (run index, workdir, reason)
  wall_seconds: float
  rows: list[str]  # One line of the per-run table each.

  def markdown(self) -> str:
    """The summary table, the per-run table, then each failure's reason."""
    lines = [
      "| runs | kills | kills during a save | resumes | bit-identical | failures | wall time |",
      "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
      f"| {self.runs} | {self.kills} | {self.saves_hit} | {self.resumes} | "
      f"{self.identical} | {len(self.failures)} | {self.wall_seconds:.0f} s |",
      "",
      "| run | killed after (save in flight) | resumed from | end |",
      "| ---: | --- | --- | --- |",
      *self.rows,
    ]
    lines += [
      f"\nrun {index} failed ({workdir}): {reason}" for index, workdir, reason in self.failures
    ]
    return "\n".join(lines)


def _train_command(workdir: pathlib.Path, num_steps: int, checkpoint_every: int) -> list[str]:
  return [
    sys.executable,
    "-m",
    "cnnjax.main",
    "train",
    f"--workdir={workdir}",
    f"--config={CONFIG}",
    "--config.num_epochs=0",
    f"--config.num_steps={num_steps}",
    "--config.batch_size=32",
    "--config.log_every=1",
    f"--config.checkpoint_every={checkpoint_every}",
    "--config.progress=lines",
    "--config.schedule.warmup_steps=5",
  ]


class _Attempt:
  """One `cnnjax train` process, its log file, and the train steps it has logged."""

  def __init__(
    self, command: list[str], workdir: pathlib.Path, log: pathlib.Path, cache: pathlib.Path
  ):
    self.workdir = workdir
    self.log = log
    self._offset = 0  # How much of the log `poll_steps` has read.
    self.step = 0  # Newest train step this attempt logged.
    self.evaluated = False  # Whether it logged the final evaluation.
    self._first_seen: tuple[float, int] | None = None  # (time, step) of its first one.
    with open(log, "w") as out:
      self.process = subprocess.Popen(
        command,
        cwd=REPO,
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, "CNNJAX_COMPILATION_CACHE": str(cache)},
      )
    self._deadline = time.monotonic() + ATTEMPT_TIMEOUT_S

  def alive(self) -> bool:
    """Whether the process still runs; kills it past the deadline (then raises)."""
    if self.process.poll() is not None:
      return False
    if time.monotonic() > self._deadline:
      self.process.kill()
      self.process.wait()
      raise TimeoutError(f"still running after {ATTEMPT_TIMEOUT_S} s (log {self.log})")
    return True

  def poll_steps(self) -> int:
    """Reads the progress lines the log gained since the last call; returns `self.step`.

    The log, not metrics.jsonl: a resumed run rewrites that file without the records of
    the steps it trains again.
    """
    with open(self.log, "rb") as f:
      f.seek(self._offset)
      text = f.read()
    complete = text[: text.rfind(b"\n") + 1]  # A line being written has no newline yet.
    self._offset += len(complete)
    for split, step, num_steps in PROGRESS.findall(complete.decode(errors="replace")):
      if split != "train":
        self.evaluated |= step == num_steps
        continue
      self.step = max(self.step, int(step))
      if self._first_seen is None:
        self._first_seen = (time.monotonic(), self.step)
    return self.step

  def seconds_per_step(self) -> float:
    """Mean time per step this attempt has logged (0 before its second step)."""
    if self._first_seen is None or self.step == self._first_seen[1]:
      return 0.0
    start, first = self._first_seen
    return (time.monotonic() - start) / (self.step - first)

  def save_in_flight(self) -> int | None:
    """The step of a save this attempt has in flight now, or None.

    A killed attempt's temporary directory stays until a save of its step replaces it, so
    only those of steps this attempt has reached count.
    """
    directory = self.workdir / "checkpoints"
    if not directory.is_dir():
      return None
    return next(
      (
        step
        for step in (int(p.name.split(".")[0]) for p in directory.iterdir() if TMP_SUFFIX in p.name)
        if step <= self.step
      ),
      None,
    )

  def kill(self) -> Kill:
    """SIGKILLs the process; returns where it was."""
    landed = Kill(self.poll_steps(), self.save_in_flight(), self.evaluated)
    self.process.send_signal(signal.SIGKILL)
    self.process.wait()
    return landed

  def finish(self) -> str | None:
    """Waits for a process left to end by itself; None if it succeeded, else why not."""
    while self.alive():
      time.sleep(0.1)
    if self.process.returncode != 0:
      tail = self.log.read_text()[-1500:]
      return f"exited with status {self.process.returncode} (log {self.log}):\n{tail}"
    return None

  def resumed_from(self) -> int | None:
    """The step the log says this attempt resumed from, or None if it started afresh."""
    for line in self.log.read_text().splitlines():
      if line.startswith("resumed from step "):
        return int(line.split()[3])
    return None


def _newest_checkpoint(workdir: pathlib.Path) -> int:
  """The newest finished checkpoint's step (0 if none)."""
  directory = workdir / "checkpoints"
  if not directory.is_dir():
    return 0
  return max((int(p.name) for p in directory.iterdir() if p.name.isdigit()), default=0)


def _kill_somewhere(
  attempt: _Attempt, rng: np.random.Generator, num_steps: int, save_fraction: float
) -> Kill | None:
  """Kills `attempt` at a random moment (see the module docstring).

  Returns:
    Where the kill landed, or None if the process ended first.
  """
  floor = _newest_checkpoint(attempt.workdir)  # The attempt resumes here, or from 0.
  target = int(rng.integers(floor + 1, num_steps + 2))  # num_steps + 1: the finish.
  at_save = rng.random() < save_fraction and target <= num_steps
  fraction = rng.random()  # Where in the step or the finish, or how far into the save.
  while attempt.alive():
    step = attempt.poll_steps()
    if at_save:
      due, window = step >= target and attempt.save_in_flight() is not None, SAVE_KILL_DELAY_S
    elif target > num_steps:
      due, window = attempt.evaluated, FINISH_KILL_DELAY_S
    else:
      # The step after `target` takes about as long as this attempt's steps so far.
      due, window = step >= target, attempt.seconds_per_step()
    if due:
      time.sleep(fraction * window)
      return attempt.kill() if attempt.alive() else None
    time.sleep(POLL_S)
  return None


def _train_run(
  index: int,
  workdir: pathlib.Path,
  cache: pathlib.Path,
  seed: int,
  num_steps: int,
  checkpoint_every: int,
  max_kills: int,
  save_fraction: float,
) -> RunResult:
  """Trains in `workdir`, killed and restarted as drawn; index -1 trains the reference."""
  result = RunResult(index, workdir)
  rng = np.random.default_rng([seed, index]) if index >= 0 else None
  planned = 0 if rng is None else int(rng.integers(1, max_kills + 1))
  command = _train_command(workdir, num_steps, checkpoint_every)
  workdir.mkdir(parents=True)
  try:
    for number in range(planned + 1):
      attempt = _Attempt(command, workdir, workdir.parent / f"{workdir.name}.{number}.log", cache)
      landed = _kill_somewhere(attempt, rng, num_steps, save_fraction) if number < planned else None
      if landed is None:
        # The last attempt, or one that ended before its kill: it must finish by itself.
        result.error = attempt.finish()
      else:
        result.kills.append(landed)
      if (resumed := attempt.resumed_from()) is not None:
        result.resumes.append(resumed)
      if landed is None:
        break
  except TimeoutError as error:
    result.error = str(error)
  return result


def final_state(workdir: pathlib.Path) -> tuple[int, dict[str, np.ndarray], Any]:
  """(step, {leaf path: array} of the whole train state, data state) of the newest checkpoint."""
  manager = ocp.CheckpointManager(
    workdir / "checkpoints",
    item_handlers={"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()},
  )
  try:
    step = manager.latest_step()
    restored = manager.restore(
      step, args=ocp.args.Composite(state=ocp.args.StandardRestore(), data=ocp.args.JsonRestore())
    )
  finally:
    manager.close()
  leaves = jax.tree_util.tree_flatten_with_path(restored["state"])[0]
  return (
    step,
    {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves},
    restored["data"],
  )


def compare(reference: pathlib.Path, workdir: pathlib.Path) -> str | None:
  """None if `workdir` ended exactly as `reference` did, else the first difference."""
  ref_step, ref_state, ref_data = final_state(reference)
  step, state, data = final_state(workdir)
  if step != ref_step:
    return f"newest checkpoint is step {step}, the reference's {ref_step}"
  if state.keys() != ref_state.keys():
    return f"train state leaves differ: {sorted(state.keys() ^ ref_state.keys())}"
  # Bytes, not values: NaNs and the sign of zero count too.
  differing = [
    name
    for name, array in state.items()
    if (array.dtype, array.shape, array.tobytes())
    != (ref_state[name].dtype, ref_state[name].shape, ref_state[name].tobytes())
  ]
  if differing:
    return f"train state differs in {', '.join(differing)}"
  if data != ref_data:
    return f"data state {data} differs from the reference's {ref_data}"
  summaries = [
    json.loads((w / "summary.json").read_text()) if (w / "summary.json").exists() else None
    for w in (reference, workdir)
  ]
  if summaries[0] != summaries[1]:
    return f"summary.json {summaries[1]} differs from the reference's {summaries[0]}"
  return None


def inject(
  runs: int,
  seed: int,
  workdir_root: str | os.PathLike,
  num_steps: int = 60,
  checkpoint_every: int = 8,
  max_kills: int = 3,
  kill_during_save: float = 0.5,
  jobs: int = 1,
) -> Report:
  """Trains a reference and `runs` SIGKILLed-and-restarted runs; compares each to the first.

  Args:
    runs: faulted runs.
    seed: with a run's index, seeds where its kills land.
    workdir_root: holds the shared XLA cache and a new timestamped folder of workdirs.
    num_steps: train steps of every run.
    checkpoint_every: steps between periodic checkpoints.
    max_kills: each run is killed a random 1 to `max_kills` times.
    kill_during_save: the fraction of kills aimed at an asynchronous save in flight.
    jobs: runs trained at once (the reference among them).
  Returns:
    The counts; failed runs' workdirs (and the reference, if any failed) are kept.
  """
  start = time.monotonic()
  root = pathlib.Path(workdir_root).resolve()
  cache = root / "xla_cache"
  folder = root / datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
  with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
    futures = [
      pool.submit(
        _train_run,
        index,
        folder / (f"run-{index}" if index >= 0 else "reference"),
        cache,
        seed,
        num_steps,
        checkpoint_every,
        max_kills,
        kill_during_save,
      )
      for index in range(-1, runs)
    ]  # The reference first: it gets a job at once.
    reference, *results = [future.result() for future in futures]
  failures = []
  for result in results:
    if result.error or reference.error:
      reason = result.error or f"the reference failed: {reference.error}"
    else:
      try:
        reason = compare(reference.workdir, result.workdir)
      except Exception as error:  # noqa: BLE001 -- an unreadable end state is a failed run.
        reason = f"cannot compare: {type(error).__name__}: {error}"
    if reason:
      failures.append((result.index, str(result.workdir), reason))
  failed = {index for index, _, _ in failures}
  for result in results:
    if result.index not in failed:
      shutil.rmtree(result.workdir)
      for log in folder.glob(f"{result.workdir.name}.*.log"):
        log.unlink()
  if not failures:
    shutil.rmtree(folder)
  return Report(
    runs=runs,
    kills=sum(len(r.kills) for r in results),
    saves_hit=sum(k.saving is not None for r in results for k in r.kills),
    resumes=sum(len(r.resumes) for r in results),
    identical=runs - len(failures),
    failures=failures,
    wall_seconds=time.monotonic() - start,
    rows=[r.row(r.index in failed) for r in results],
  )


def main(argv: list[str]) -> int:
  """Runs `inject` with the flags and prints its report; status 1 if any run failed."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)  # Orbax logs every restore of `compare` at INFO.
  report = inject(
    _RUNS.value,
    _SEED.value,
    _WORKDIR_ROOT.value,
    _NUM_STEPS.value,
    _CHECKPOINT_EVERY.value,
    _MAX_KILLS.value,
    _KILL_DURING_SAVE.value,
    _JOBS.value,
  )
  print(report.markdown())
  return 1 if report.failures else 0


if __name__ == "__main__":
  app.run(main)
