"""Optimizers, learning-rate schedules and reduce-on-plateau, all from optax.

Each function takes its own config section, whose keys and defaults are in
`cnnjax.train.config.defaults()` and whose choices `cnnjax.train.config.validate` checks.

`config.optimizer`:
  name: "sgd" (momentum, nesterov; weight decay added to the gradient as in PyTorch),
    "adamw" (decoupled decay) or "lars" (SimCLR: BN and bias parameters skip both
    weight decay and trust-ratio adaptation).
  momentum, nesterov, b1, b2, eps (AdamW's, and LARS's in the trust ratio),
    trust_coefficient: the usual hyperparameters.
  weight_decay: coefficient; `decay_bn_and_bias` also decays 1-D params.
  clip_norm: clip gradients to this global norm first (0: no clipping).
`config.schedule`:
  name: "constant", "cosine" (linear warmup then cosine to `end_value`), "step"
    (multiply by `decay_factor` at each step in `boundaries`) or "plateau" (multiply
    by `decay_factor` when the eval metric `config.best_metric` stalls for `patience`
    evaluations: the AlexNet/ResNet "divide by 10"), each after `warmup_steps`.
    `boundaries` are absolute training steps, counted from the start of training as in
    the papers' recipes ("divide by 10 at 32k and 48k iterations"), warmup included.
  learning_rate: base rate; `scale_with_batch` ("linear": x B/256, "sqrt": x sqrt(B)).
"""

import math
from typing import Any

import jax
import ml_collections
import numpy as np
import optax

from cnnjax.train import freezing as freezing_lib

OPTIMIZERS = ("sgd", "adamw", "lars")
SCHEDULES = ("constant", "cosine", "step", "plateau")
BATCH_SCALINGS = ("", "linear", "sqrt")


def base_learning_rate(schedule: ml_collections.ConfigDict, batch_size: int) -> float:
  """`schedule.learning_rate`, scaled by the global batch size when asked."""
  if schedule.scale_with_batch == "linear":
    return schedule.learning_rate * batch_size / 256
  if schedule.scale_with_batch == "sqrt":
    return schedule.learning_rate * math.sqrt(batch_size)
  return schedule.learning_rate


def create_schedule(
  schedule: ml_collections.ConfigDict, num_steps: int, batch_size: int
) -> optax.Schedule:
  """Learning rate as a function of the step (without the plateau factor)."""
  lr = base_learning_rate(schedule, batch_size)
  warmup = int(schedule.warmup_steps)
  if schedule.name == "cosine":
    return optax.warmup_cosine_decay_schedule(
      0.0, lr, warmup, max(num_steps, warmup + 1), schedule.end_value
    )
  if schedule.name == "step":
    boundaries = {int(b): schedule.decay_factor for b in schedule.boundaries}
    main = optax.piecewise_constant_schedule(lr, boundaries)
  else:
    main = optax.constant_schedule(lr)
  if not warmup:
    return main
  # join_schedules counts the second schedule's steps from the warmup's end; shifting them
  # back keeps the step boundaries absolute.
  return optax.join_schedules(
    [optax.linear_schedule(0.0, lr, warmup), lambda step: main(step + warmup)], [warmup]
  )


def plateau_transform(schedule: ml_collections.ConfigDict) -> optax.GradientTransformationExtraArgs:
  """optax's reduce-on-plateau, whose state (with its `scale`) lives in the train state.

  Only its `init` is used: the loop steps the state on the host with `plateau_update`.
  Without the "plateau" schedule its scale stays 1.
  """
  return optax.contrib.reduce_on_plateau(
    factor=schedule.decay_factor,
    patience=schedule.patience,
    rtol=schedule.rtol,
    cooldown=schedule.cooldown,
    min_scale=schedule.min_scale,
  )


def plateau_update(state: Any, value: float, schedule: ml_collections.ConfigDict, mode: str) -> Any:
  """Steps reduce-on-plateau with one evaluation's `config.best_metric`, on the host.

  The metric improves when it beats the best so far by more than `schedule.rtol` times the
  best's magnitude, in the direction `mode` ("max" or "min", `config.best_mode`) says is
  better: PyTorch's ReduceLROnPlateau with threshold_mode "rel", but right for negative
  values too. optax's own update tests `value < (1 - rtol) * best`, which counts a flat
  metric as improving once it is negative, so a negated accuracy would never decay the
  rate. After `patience` evaluations in a row without improvement the scale is multiplied
  by `decay_factor` (not below `min_scale`), then `cooldown` evaluations pass uncounted.
  PyTorch's `patience` counts one evaluation fewer: it decays on the (patience + 1)-th.

  Args:
    state: the `optax.contrib.ReduceLROnPlateauState` from `plateau_transform`, on the host.
      Its `best_value` is kept in "lower is better" units (a "max" metric negated).
    value: the metric of this evaluation.
    schedule: `config.schedule`.
    mode: "max" or "min".
  Returns:
    The next state, with the same dtypes.
  """
  loss = -float(value) if mode == "max" else float(value)
  best = float(state.best_value)
  improved = not math.isnan(loss) and (math.isinf(best) or loss < best - schedule.rtol * abs(best))
  best = loss if improved else best
  bad = 0 if improved else int(state.plateau_count) + 1
  scale, cooldown = float(state.scale), int(state.cooldown_count)
  if cooldown > 0:
    bad, cooldown = 0, cooldown - 1
  elif bad >= schedule.patience:
    scale = max(scale * schedule.decay_factor, schedule.min_scale)
    bad, cooldown = 0, schedule.cooldown
  return state._replace(
    best_value=np.asarray(best, np.asarray(state.best_value).dtype),
    plateau_count=np.asarray(bad, np.asarray(state.plateau_count).dtype),
    scale=np.asarray(scale, np.asarray(state.scale).dtype),
    cooldown_count=np.asarray(cooldown, np.asarray(state.cooldown_count).dtype),
  )


def decay_mask(params: Any, decay_bn_and_bias: bool = False) -> Any:
  """True for parameters that get weight decay: kernels, not BN scales/offsets or biases."""
  return jax.tree.map(lambda p: decay_bn_and_bias or p.ndim > 1, params)


def create_optimizer(
  optimizer: ml_collections.ConfigDict,
  params: Any,
  schedule: optax.Schedule,
  freezing: freezing_lib.Freezing = freezing_lib.NOTHING,
) -> optax.GradientTransformation:
  """The optimizer `config.optimizer` for `params`, frozen parameters getting zero updates."""
  mask = decay_mask(params, optimizer.decay_bn_and_bias)
  if optimizer.name == "sgd":
    tx = optax.chain(
      optax.add_decayed_weights(optimizer.weight_decay, mask),
      optax.sgd(schedule, optimizer.momentum, optimizer.nesterov),
    )
  elif optimizer.name == "adamw":
    tx = optax.adamw(
      schedule,
      optimizer.b1,
      optimizer.b2,
      optimizer.eps,
      weight_decay=optimizer.weight_decay,
      mask=mask,
    )
  else:
    tx = optax.lars(
      schedule,
      weight_decay=optimizer.weight_decay,
      weight_decay_mask=mask,
      trust_coefficient=optimizer.trust_coefficient,
      eps=optimizer.eps,
      trust_ratio_mask=mask,
      momentum=optimizer.momentum,
      nesterov=optimizer.nesterov,
    )
  if optimizer.clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(optimizer.clip_norm), tx)
  if freezing.freezes_parameters:
    tx = optax.multi_transform(
      {freezing_lib.TRAINED: tx, freezing_lib.FROZEN: optax.set_to_zero()}, freezing.labels
    )
  return tx


def scale_updates(updates: Any, scale: jax.Array) -> Any:
  """Multiplies every update by the plateau scale."""
  return jax.tree.map(lambda u: u * scale.astype(u.dtype), updates)
