"""The train state and the per-device train and eval steps, written once in the pmap style.

The steps run inside `cnnjax.train.parallel` (shard_map under jit, or pmap): `batch` is
this device's shard, and gradients, metrics and BatchNorm statistics are averaged over
the named axis `batch`. Nothing leaves the device inside a step.
"""

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

from cnnjax.axis import AXIS
from cnnjax.train import freezing as freezing_lib
from cnnjax.train import gradients
from cnnjax.train import optim
from cnnjax.train.tasks import Task


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training, replicated on every device.

  Attributes:
    step: int32 scalar, the number of optimizer steps taken.
    params: trainable parameters (float32).
    batch_stats: BatchNorm running statistics.
    opt_state: the optax state.
    plateau: optax reduce-on-plateau state; its `scale` multiplies the updates.
    nonfinite_step: int32 scalar, the first step whose loss or gradient was not finite
      (-1 while all are); from then on the state keeps its last finite values.
    ema: {"params", "batch_stats"}, exponential moving averages of both
      (`config.ema_decay`), or {} without them.
  """

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  plateau: Any
  nonfinite_step: jax.Array
  ema: Any = flax.struct.field(default_factory=dict)


def create_state(
  variables: dict[str, Any],
  tx: optax.GradientTransformation,
  plateau: optax.GradientTransformation,
  ema: bool = False,
) -> TrainState:
  """A fresh state at step 0 for `variables` = {"params", "batch_stats"}.

  With `ema`, the moving averages start at the initial values.
  """
  params = variables["params"]
  batch_stats = variables.get("batch_stats", {})
  # Copies: the step donates the state's buffers, and one buffer cannot be donated twice.
  averages = jax.tree.map(jnp.copy, {"params": params, "batch_stats": batch_stats}) if ema else {}
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    batch_stats=batch_stats,
    opt_state=tx.init(params),
    plateau=plateau.init(params),
    nonfinite_step=jnp.full((), -1, jnp.int32),
    ema=averages,
  )


def make_train_step(
  task: Task,
  tx: optax.GradientTransformation,
  schedule: optax.Schedule,
  base_rng: jax.Array,
  freezing: freezing_lib.Freezing = freezing_lib.NOTHING,
  *,
  accumulate_steps: int = 1,
  micro_batch_size: int = 0,
  ema_decay: float = 0.0,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """The per-device train step (state, batch shard) -> (new state, averaged metrics).

  The gradient comes from `cnnjax.train.gradients`: the whole shard at once, the mean over
  `accumulate_steps` micro-batches (> 1), or gradient caching over chunks of
  `micro_batch_size` examples (> 0; the task's `embed` and `embedding_loss`). With
  `ema_decay` > 0 the state's moving averages follow each finite step:
  ema = decay * ema + (1 - decay) * new value.

  `freezing` (`transfer.freezing`) says what stays: frozen parameters enter the loss
  through `stop_gradient`, so their gradients are zero and never computed (a linear
  probe's backbone runs forward only), and with frozen BatchNorm statistics the model runs
  in inference mode and the statistics are kept. The step's randomness is
  `fold_in(base_rng, step)`, the same on every device, so that tasks can derive
  per-example keys that do not depend on the device layout.
  """

  model_train = not freezing.batch_stats

  def loss_fn(params, batch_stats, batch, rng):
    return task.loss_fn(freezing.stop_gradients(params), batch_stats, batch, rng, train=model_train)

  def grad_fn(batch: dict) -> gradients.GradFn:
    if micro_batch_size:
      chunks = jax.tree.leaves(batch)[0].shape[0] // micro_batch_size
      return gradients.cached(
        lambda params, batch_stats, chunk, rng: task.embed(
          freezing.stop_gradients(params), batch_stats, chunk, rng, train=model_train
        ),
        task.embedding_loss,
        chunks,
      )
    if accumulate_steps > 1:
      return gradients.accumulated(loss_fn, accumulate_steps)
    return gradients.whole_batch(loss_fn)

  def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    rng = jax.random.fold_in(base_rng, state.step)
    preprocess_rng, loss_rng = jax.random.split(rng)
    batch = task.preprocess(batch, preprocess_rng, train=True)
    (loss, (metrics, batch_stats)), grads = grad_fn(batch)(
      state.params, state.batch_stats, batch, loss_rng
    )
    grads = jax.lax.pmean(grads, AXIS)
    metrics = jax.lax.pmean({**metrics, "loss": loss}, AXIS)
    # Replicas that normalise their own shard still keep identical running statistics.
    if freezing.batch_stats:
      batch_stats = state.batch_stats
    else:
      batch_stats = jax.lax.pmean(batch_stats, AXIS)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    updates = optim.scale_updates(updates, state.plateau.scale)
    params = optax.apply_updates(state.params, updates)
    metrics["grad_norm"] = optax.tree.norm(grads)
    metrics["learning_rate"] = schedule(state.step) * state.plateau.scale
    finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
    ok = finite & (state.nonfinite_step < 0)
    ema = state.ema
    if ema_decay:
      ema = jax.tree.map(
        lambda average, new: ema_decay * average + (1 - ema_decay) * new,
        state.ema,
        {"params": params, "batch_stats": batch_stats},
      )
    new_state = state.replace(
      step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state, ema=ema
    )
    new_state = jax.tree.map(
      lambda new, old: jnp.where(ok, new, old), new_state, state.replace(step=state.step + 1)
    )
    nonfinite_step = jnp.where(
      (state.nonfinite_step < 0) & ~finite, state.step, state.nonfinite_step
    )
    return new_state.replace(nonfinite_step=nonfinite_step), metrics

  return train_step


def make_eval_step(task: Task) -> Callable[[dict, dict], tuple[dict, dict]]:
  """The per-device eval step (variables, batch shard) -> (summed sums, per-example outputs)."""

  def eval_step(variables: dict, batch: dict) -> tuple[dict, dict]:
    batch = task.preprocess(batch, jax.random.key(0), train=False)
    sums, outputs = task.eval_step(variables, batch)
    return jax.lax.psum(sums, AXIS), {**outputs, "valid": batch["valid"]}

  return eval_step
