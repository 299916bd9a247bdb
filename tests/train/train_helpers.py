"""Small shared pieces of the trainer tests: configs, tasks and steps without datasets."""

import jax
import numpy as np

from cnnjax.train import config as config_lib
from cnnjax.train import optim
from cnnjax.train import parallel
from cnnjax.train import state as state_lib
from cnnjax.train import tasks

IMAGE_SHAPE = (8, 8, 3)
NUM_CLASSES = 4


def tiny_config(task: str = "classification", **overrides):
  """A tiny ResNet with global BatchNorm on 8x8 RGB images."""
  config = config_lib.defaults(task)
  config.model = "resnet20"
  config.model_kwargs = {"width": 4, "stage_sizes": (1, 1)}
  config.dataset = "synthetic"
  config.global_bn = True
  config.batch_size = 16
  config.num_steps = 3
  config.optimizer.name = "sgd"
  config.optimizer.weight_decay = 1e-4
  config.schedule.name = "constant"
  config.schedule.learning_rate = 0.1
  config.show_at_end = ()  # Pictures are tests/inspect's; drawing would add seconds per run.
  config.update_from_flattened_dict(overrides)
  return config


def make_task(config):
  data = tasks.DataInfo(NUM_CLASSES, IMAGE_SHAPE, {"train": 64, "test": 16})
  return tasks.create(config, data)


def batches(num_steps: int, batch_size: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
  """Random uint8 images with labels in P x K order (2 examples of each class in turn)."""
  rng = np.random.default_rng(seed)
  labels = np.repeat(np.arange(batch_size // 2) % NUM_CLASSES, 2).astype(np.int32)
  return [
    {"image": rng.integers(0, 256, (batch_size, *IMAGE_SHAPE), dtype=np.uint8), "label": labels}
    for _ in range(num_steps)
  ]


def initial_state(config, seed: int = 0):
  """(task, tx, schedule, step rng, initial state on the host) for `config`."""
  task = make_task(config)
  init_rng, step_rng = jax.random.split(jax.random.key(seed))
  variables = jax.device_get(jax.jit(task.init_variables)(init_rng))
  schedule = optim.create_schedule(config.schedule, config.num_steps, config.batch_size)
  tx = optim.create_optimizer(config.optimizer, variables["params"], schedule)
  state = jax.device_get(
    state_lib.create_state(variables, tx, optim.plateau_transform(config.schedule))
  )
  return task, tx, schedule, step_rng, state


def train(setup, runner: parallel.Runner, steps: list[dict[str, np.ndarray]], **step_options):
  """(params, batch_stats, losses) after running `steps` through the trainer's step.

  Each process feeds its own rows of every global batch. `step_options` go to
  `make_train_step` (accumulate_steps, micro_batch_size, ema_decay).
  """
  task, tx, schedule, step_rng, state = setup
  step = runner.compile(
    state_lib.make_train_step(task, tx, schedule, step_rng, **step_options),
    in_specs=(parallel.REPLICATED, parallel.SHARDED),
    out_specs=(parallel.REPLICATED, parallel.REPLICATED),
    donate_argnums=(0,),
  )
  state = runner.replicate(state)
  losses = []
  for batch in steps:
    process_rows = len(batch["label"]) // jax.process_count()
    start = jax.process_index() * process_rows
    local = {k: v[start : start + process_rows] for k, v in batch.items()}
    state, metrics = step(state, runner.shard_batch(local))
    losses.append(float(runner.to_host(metrics, parallel.REPLICATED)["loss"]))
  state = runner.to_host(state, parallel.REPLICATED)
  return state.params, state.batch_stats, losses
