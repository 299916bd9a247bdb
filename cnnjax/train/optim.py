"""Optimizers, learning-rate schedules and parameter masks, all from optax.

`config.optimizer`:
  name: "sgd" (momentum, nesterov; weight decay added to the gradient as in PyTorch),
    "adamw" (decoupled decay) or "lars" (SimCLR: BN and bias parameters skip both
    weight decay and trust-ratio adaptation).
  momentum, nesterov, b1, b2, eps, trust_coefficient: the usual hyperparameters.
  weight_decay: coefficient; `decay_bn_and_bias` (default False) also decays 1-D params.
  clip_norm: clip gradients to this global norm first (None: no clipping).
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
import re
from typing import Any

import jax
import ml_collections
import numpy as np
import optax

from cnnjax.errors import UsageError

OPTIMIZERS = ("sgd", "adamw", "lars")
SCHEDULES = ("constant", "cosine", "step", "plateau")


def base_learning_rate(config: ml_collections.ConfigDict) -> float:
  """`schedule.learning_rate`, scaled by the global batch size when asked."""
  schedule = config.schedule
  lr = schedule.learning_rate
  scaling = schedule.get("scale_with_batch")
  if scaling == "linear":
    return lr * config.batch_size / 256
  if scaling == "sqrt":
    return lr * math.sqrt(config.batch_size)
  if scaling:
    raise UsageError(f"unknown schedule.scale_with_batch {scaling!r}; use 'linear' or 'sqrt'.")
  return lr


def create_schedule(config: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
  """Learning rate as a function of the step (without the plateau factor)."""
  schedule = config.schedule
  if schedule.name not in SCHEDULES:
    raise UsageError(f"unknown schedule {schedule.name!r}; choose one of {', '.join(SCHEDULES)}.")
  lr = base_learning_rate(config)
  warmup = int(schedule.get("warmup_steps", 0))
  if schedule.name == "cosine":
    return optax.warmup_cosine_decay_schedule(
        0.0, lr, warmup, max(num_steps, warmup + 1), schedule.get("end_value", 0.0))
  if schedule.name == "step":
    boundaries = {int(b): schedule.get("decay_factor", 0.1) for b in schedule.boundaries}
    main = optax.piecewise_constant_schedule(lr, boundaries)
  else:
    main = optax.constant_schedule(lr)
  if not warmup:
    return main
  # join_schedules counts the second schedule's steps from the warmup's end; shifting them
  # back keeps the step boundaries absolute.
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup),
                               lambda step: main(step + warmup)], [warmup])


def plateau_transform(config: ml_collections.ConfigDict) -> optax.GradientTransformationExtraArgs:
  """optax's reduce-on-plateau, whose state (with its `scale`) lives in the train state.

  Only its `init` is used: the loop steps the state on the host with `plateau_update`.
  Without the "plateau" schedule its scale stays 1.
  """
  schedule = config.schedule
  return optax.contrib.reduce_on_plateau(
      factor=schedule.get("decay_factor", 0.1), patience=schedule.get("patience", 5),
      rtol=schedule.get("rtol", 1e-4), cooldown=schedule.get("cooldown", 0),
      min_scale=schedule.get("min_scale", 0.0))


def plateau_update(state: Any, value: float, config: ml_collections.ConfigDict) -> Any:
  """Steps reduce-on-plateau with one evaluation's `config.best_metric`, on the host.

  The metric improves when it beats the best so far by more than `schedule.rtol` times the
  best's magnitude, in the direction `config.best_mode` ("max" or "min") says is better:
  PyTorch's ReduceLROnPlateau with threshold_mode "rel", but right for negative values
  too. optax's own update tests `value < (1 - rtol) * best`, which counts a flat metric as
  improving once it is negative, so a negated accuracy would never decay the rate. After
  `patience` evaluations in a row without improvement the scale is multiplied by
  `decay_factor` (not below `min_scale`), then `cooldown` evaluations pass uncounted.
  PyTorch's `patience` counts one evaluation fewer: it decays on the (patience + 1)-th.

  Args:
    state: the `optax.contrib.ReduceLROnPlateauState` from `plateau_transform`, on the host.
      Its `best_value` is kept in "lower is better" units (a "max" metric negated).
    value: the metric of this evaluation.
    config: the experiment config.
  Returns:
    The next state, with the same dtypes.
  """
  schedule = config.schedule
  loss = -float(value) if config.best_mode == "max" else float(value)
  best = float(state.best_value)
  improved = not math.isnan(loss) and (
      math.isinf(best) or loss < best - schedule.get("rtol", 1e-4) * abs(best))
  best = loss if improved else best
  bad = 0 if improved else int(state.plateau_count) + 1
  scale, cooldown = float(state.scale), int(state.cooldown_count)
  if cooldown > 0:
    bad, cooldown = 0, cooldown - 1
  elif bad >= schedule.get("patience", 5):
    scale = max(scale * schedule.get("decay_factor", 0.1), schedule.get("min_scale", 0.0))
    bad, cooldown = 0, schedule.get("cooldown", 0)
  return state._replace(
      best_value=np.asarray(best, np.asarray(state.best_value).dtype),
      plateau_count=np.asarray(bad, np.asarray(state.plateau_count).dtype),
      scale=np.asarray(scale, np.asarray(state.scale).dtype),
      cooldown_count=np.asarray(cooldown, np.asarray(state.cooldown_count).dtype))


def decay_mask(params: Any, decay_bn_and_bias: bool = False) -> Any:
  """True for parameters that get weight decay: kernels, not BN scales/offsets or biases."""
  return jax.tree.map(lambda p: decay_bn_and_bias or p.ndim > 1, params)


def path_name(path: tuple[Any, ...]) -> str:
  """A pytree key path '/'-joined, e.g. 'layer4_1/conv1/kernel' or 'opt_state/0/mu'.

  Dict keys, attribute names and sequence indices alike, so a namedtuple's field reads the
  same in a live tree and in a checkpoint's metadata (where it is a dict key).
  """
  return "/".join(_key_name(key) for key in path)


def _key_name(key: Any) -> str:
  for attribute in ("key", "name", "idx"):
    if hasattr(key, attribute):
      return str(getattr(key, attribute))
  return str(key)


def path_names(params: Any) -> Any:
  """The '/'-joined path of every leaf, e.g. 'layer4_1/conv1/kernel'."""
  return jax.tree_util.tree_map_with_path(lambda path, _: path_name(path), params)


def freeze_labels(params: Any, patterns: list[str] | tuple[str, ...]) -> Any:
  """'frozen' for parameters whose path matches any regex in `patterns`, else 'trained'."""
  compiled = [re.compile(p) for p in patterns]
  return jax.tree.map(lambda name: "frozen" if any(c.search(name) for c in compiled)
                      else "trained", path_names(params))


def create_optimizer(config: ml_collections.ConfigDict, params: Any,
                     schedule: optax.Schedule,
                     frozen_patterns: tuple[str, ...] = ()) -> optax.GradientTransformation:
  """The optimizer for `params`, with frozen parameters getting zero updates."""
  opt = config.optimizer
  if opt.name not in OPTIMIZERS:
    raise UsageError(f"unknown optimizer {opt.name!r}; choose one of {', '.join(OPTIMIZERS)}.")
  mask = decay_mask(params, opt.get("decay_bn_and_bias", False))
  weight_decay = opt.get("weight_decay", 0.0)
  if opt.name == "sgd":
    tx = optax.chain(optax.add_decayed_weights(weight_decay, mask),
                     optax.sgd(schedule, opt.get("momentum", 0.9), opt.get("nesterov", False)))
  elif opt.name == "adamw":
    tx = optax.adamw(schedule, opt.get("b1", 0.9), opt.get("b2", 0.999), opt.get("eps", 1e-8),
                     weight_decay=weight_decay, mask=mask)
  else:
    tx = optax.lars(schedule, weight_decay=weight_decay, weight_decay_mask=mask,
                    trust_coefficient=opt.get("trust_coefficient", 0.001),
                    eps=opt.get("eps", 0.0), trust_ratio_mask=mask,
                    momentum=opt.get("momentum", 0.9), nesterov=opt.get("nesterov", False))
  if opt.get("clip_norm"):
    tx = optax.chain(optax.clip_by_global_norm(opt.clip_norm), tx)
  if frozen_patterns:
    labels = freeze_labels(params, frozen_patterns)
    if "trained" not in jax.tree.leaves(labels):
      raise UsageError("transfer.freeze matches every parameter; leave some trainable.")
    tx = optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, labels)
  return tx


def scale_updates(updates: Any, scale: jax.Array) -> Any:
  """Multiplies every update by the plateau scale."""
  return jax.tree.map(lambda u: u * scale.astype(u.dtype), updates)

