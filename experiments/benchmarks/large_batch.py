"""Memory of the SimCLR and triplet train steps at the papers' batch sizes, with and without
gradient caching (`config.micro_batch_size`).

For each row the cnnjax train step (the one `cnnjax train` runs: on-device views,
forward, loss over the global batch, backward, LARS/SGD update) is compiled for this
machine's devices and its temporary memory read from `compiled.memory_analysis()`. Rows
with a global batch up to --run_max_batch also run: a fresh process per row compiles and
times --steps steps and reports its peak resident memory. Prints one markdown table.

    python experiments/benchmarks/large_batch.py                       # the default rows
    python experiments/benchmarks/large_batch.py \\
        --rows=simclr:resnet18:4096:0,simclr:resnet18:4096:32
"""

import json
import platform
import resource
import subprocess
import sys
import time

from absl import flags
import jax
import numpy as np

from cnnjax.train import config as config_lib
from cnnjax.train import tasks
import _train_step  # experiments/benchmarks/_train_step.py: the trainer's step.
import _script  # experiments/benchmarks/_script.py: absl flags with cnnjax's --help.

# task:model:global batch:micro_batch_size (0: the whole batch at once).
DEFAULT_ROWS = (
  "simclr:resnet18:1024:0,simclr:resnet18:1024:32,"
  "simclr:resnet18:4096:0,simclr:resnet18:4096:32,"
  "simclr:resnet50:1024:0,simclr:resnet50:1024:32,"
  "metric_learning:resnet18:1800:0,metric_learning:resnet18:1800:36"
)
flags.DEFINE_string("rows", DEFAULT_ROWS, "comma-separated task:model:batch:micro_batch_size")
flags.DEFINE_integer("image_size", 32, "side of the (CIFAR-sized) model input")
flags.DEFINE_integer("run_max_batch", 256, "rows with a larger global batch are compiled only")
flags.DEFINE_integer("steps", 2, "timed steps of the rows that run, after one untimed")
flags.DEFINE_string("one", "", "internal: run this one row in this process, print JSON")
FLAGS = flags.FLAGS


def _step_and_state(task_name: str, model: str, batch_size: int, micro_batch_size: int):
  """(compiled-to-be step, replicated state, runner, task) for one row."""
  config = config_lib.defaults(task_name)
  config.model, config.dataset, config.batch_size = model, "synthetic", batch_size
  config.input.size = FLAGS.image_size
  config.input.mean, config.input.std = (0.5,) * 3, (0.25,) * 3
  config.global_bn = True
  config.schedule.name = "constant"
  if task_name == "simclr":
    config.optimizer.name = "lars"
  else:
    config.metric.examples_per_class = 4
  shape = (FLAGS.image_size, FLAGS.image_size, 3)
  task = tasks.create(config, tasks.DataInfo(10, shape, {}))
  micro_batch_size //= jax.device_count()  # The step takes it per device.
  return _train_step.compiled_step(config, task, 10, micro_batch_size=micro_batch_size)


def _batch(batch_size: int) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  return {
    "image": rng.integers(
      0, 256, (batch_size, FLAGS.image_size, FLAGS.image_size, 3), dtype=np.uint8
    ),
    "label": np.repeat(np.arange(batch_size // 4) % 10, 4).astype(np.int32),
  }


def temporary_bytes(task_name: str, model: str, batch_size: int, micro: int) -> tuple[int, float]:
  """(temporary bytes of the compiled step, compile seconds)."""
  step, state, runner = _step_and_state(task_name, model, batch_size, micro)
  batch = runner.shard_batch(_batch(batch_size))
  start = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  return compiled.memory_analysis().temp_size_in_bytes, time.perf_counter() - start


def run_one(task_name: str, model: str, batch_size: int, micro: int) -> dict[str, float]:
  """Seconds per step and peak RSS of this process, which runs only this row."""
  step, state, runner = _step_and_state(task_name, model, batch_size, micro)
  batch = runner.shard_batch(_batch(batch_size))
  state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(FLAGS.steps):
    state, metrics = step(state, runner.shard_batch(_batch(batch_size)))
  jax.block_until_ready(metrics)
  return {
    "seconds": (time.perf_counter() - start) / FLAGS.steps,
    "rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
  }


def _parse(row: str) -> tuple[str, str, int, int]:
  task_name, model, batch_size, micro = row.split(":")
  return task_name, model, int(batch_size), int(micro)


def main() -> None:
  if FLAGS.one:
    print(json.dumps(run_one(*_parse(FLAGS.one))))
    return
  print(
    f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}; "
    f"{platform.processor() or platform.machine()}; input {FLAGS.image_size}x"
    f"{FLAGS.image_size}x3, global BN\n"
  )
  print(
    "| task | model | global batch | micro batch (global) | temp memory | vs whole batch "
    "| compile s | s / step | peak RSS |"
  )
  print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
  whole: dict[tuple[str, str, int], int] = {}
  for row in FLAGS.rows.split(","):
    task_name, model, batch_size, micro = _parse(row)
    temp, compile_seconds = temporary_bytes(task_name, model, batch_size, micro)
    if not micro:
      whole[(task_name, model, batch_size)] = temp
    base = whole.get((task_name, model, batch_size))
    ratio = f"{temp / base:.3f}" if base else ""
    seconds = rss = "not run"
    if batch_size <= FLAGS.run_max_batch:
      out = subprocess.run(
        [
          sys.executable,
          __file__,
          f"--one={row}",
          f"--image_size={FLAGS.image_size}",
          f"--steps={FLAGS.steps}",
        ],
        capture_output=True,
        text=True,
        check=True,
      ).stdout
      measured = json.loads(out.strip().splitlines()[-1])
      seconds, rss = f"{measured['seconds']:.2f}", f"{measured['rss_gib']:.2f} GiB"
    print(
      f"| {task_name} | {model} | {batch_size} | {micro or 'off'} | "
      f"{temp / 2**30:.2f} GiB | {ratio} | {compile_seconds:.0f} | {seconds} | {rss} |",
      flush=True,
    )


if __name__ == "__main__":
  _script.run(main)
