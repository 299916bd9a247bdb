"""`compiled_step(config, task, schedule_steps)`: the trainer's train step for a benchmark.

The same state, optimizer and shard_map step `cnnjax train` builds, without a dataset: the
benchmarks feed it synthetic batches.
"""

from typing import Any, Callable

import jax

from cnnjax.train import optim
from cnnjax.train import parallel
from cnnjax.train import state as state_lib
from cnnjax.train import tasks


def compiled_step(
  config: Any, task: tasks.Task, schedule_steps: int, **step_options: Any
) -> tuple[Callable, Any, parallel.Runner]:
  """(jitted step, replicated initial state, runner) on all devices.

  Args:
    config: the trainer's config; its optimizer, schedule and global batch_size are used.
    task: `tasks.create(config, ...)`.
    schedule_steps: the schedule's length (constants only for a constant schedule).
    **step_options: for `state.make_train_step` (micro_batch_size per device, ...).
  """
  runner = parallel.Runner("shard_map")
  runner.check_batch_size(config.batch_size)
  variables = jax.device_get(jax.jit(task.init_variables)(jax.random.key(0)))
  schedule = optim.create_schedule(config.schedule, schedule_steps, config.batch_size)
  tx = optim.create_optimizer(config.optimizer, variables["params"], schedule)
  state = jax.device_get(
    state_lib.create_state(variables, tx, optim.plateau_transform(config.schedule))
  )
  step = runner.compile(
    state_lib.make_train_step(task, tx, schedule, jax.random.key(1), **step_options),
    in_specs=(parallel.REPLICATED, parallel.SHARDED),
    out_specs=(parallel.REPLICATED, parallel.REPLICATED),
    donate_argnums=(0,),
  )
  return step, runner.replicate(state), runner
