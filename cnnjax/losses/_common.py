"""Pieces shared by the losses: argument checks, safe maths, the cross-device convention."""

import math
from typing import Any

import jax
import jax.numpy as jnp

from cnnjax.errors import UsageError

AxisName = Any
# What a loss returns: its value, or (value, metrics) when called with return_metrics=True.
Loss = jax.Array | tuple[jax.Array, dict[str, jax.Array]]
REDUCTIONS = ("mean", "sum", "none")
FLOAT32_MAX = float(jnp.finfo(jnp.float32).max)
# float32's smallest normal number; below it accelerators flush to zero.
FLOAT32_TINY = float(jnp.finfo(jnp.float32).tiny)


def concrete_number(value: Any) -> float | None:
  """`value` as a Python float, or None when it is traced (its check then falls to the user)."""
  try:
    return float(value)
  except (TypeError, jax.errors.ConcretizationTypeError):
    return None


def check_number(
  value: Any, name: str, loss_name: str, minimum: float, use: str, strict: bool = False
) -> None:
  """Raises UsageError unless a concrete `value` is finite in float32 and >= minimum (> when
  strict); `use` says what to pass instead. Traced values cannot be checked.
  """
  number = concrete_number(value)
  if number is None:
    return
  if not math.isfinite(number) or abs(number) > FLOAT32_MAX:
    problem = "is not a finite float32 number"
  elif number < minimum or (strict and number == minimum):
    problem = "is negative" if number < 0 <= minimum else "is too small"
  else:
    return
  raise UsageError(f"{loss_name}: {name}={number} {problem}; use {use}.")


def check_batch(batch_size: int, loss_name: str, what: str = "examples") -> None:
  """Raises UsageError for an empty batch (of `what`), whose mean loss would be 0 / 0."""
  if batch_size == 0:
    raise UsageError(
      f"{loss_name}: the batch is empty (0 {what}); pass at least one, or skip the step."
    )


def check_reduction(reduction: str, loss_name: str) -> None:
  if reduction not in REDUCTIONS:
    raise UsageError(f"{loss_name}: reduction={reduction!r} is unknown; use one of {REDUCTIONS}.")


def check_embeddings(x: jax.Array, name: str, loss_name: str) -> None:
  if x.ndim != 2:
    raise UsageError(
      f"{loss_name}: {name} must be [batch, dim], got shape {tuple(x.shape)}; "
      "flatten or pool features first."
    )
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise UsageError(f"{loss_name}: {name} must be floating point, got {x.dtype}; cast it.")


def safe_sqrt(x: jax.Array) -> jax.Array:
  """sqrt(max(x, 0)) whose value and gradient are 0 (not NaN or Inf) at and below zero.

  NaN stays NaN, so that a NaN input shows in the loss instead of being hidden.
  """
  positive = x > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), jnp.where(jnp.isnan(x), x, 0.0))


def l2_normalize(x: jax.Array, epsilon: float = 1e-12) -> jax.Array:
  """x / max(||x||, epsilon) along the last axis: zero stays zero, gradients stay finite."""
  norm = safe_sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
  return x / jnp.where(norm > epsilon, norm, epsilon)


def power_of_two_scale(*arrays: jax.Array) -> jax.Array:
  """Largest power of two at most max |x| over `arrays` (1 for all zeros or none); no gradient.

  Dividing by it puts every |x| below 2, which keeps squared norms far from float32
  overflow for huge embeddings and, being a power of two, leaves every value (and so every
  tie between distances) exact. NaN or Inf anywhere gives NaN, so it reaches every result.
  """
  largest = jnp.max(jnp.stack([jnp.max(jnp.abs(a), initial=0.0) for a in arrays]))
  _, exponent = jnp.frexp(largest)
  scale = jnp.where(largest > 0, jnp.ldexp(jnp.float32(1), exponent - 1), 1.0)
  scale = jnp.where(jnp.isfinite(largest), scale, jnp.nan)
  return jax.lax.stop_gradient(scale.astype(jnp.float32))


def gather_global(x: jax.Array, axis_name: AxisName | None) -> tuple[jax.Array, jax.Array]:
  """(global batch [B, ...], global index of local row 0) for local rows x: [b, ...]."""
  if axis_name is None:
    return x, jnp.int32(0)
  gathered = jax.lax.all_gather(x, axis_name, tiled=True)
  return gathered, jax.lax.axis_index(axis_name) * x.shape[0]


def global_sum(x: jax.Array, axis_name: AxisName | None) -> jax.Array:
  """Sum over devices of a non-differentiable statistic (counts, metrics)."""
  x = jax.lax.stop_gradient(x)
  return x if axis_name is None else jax.lax.psum(x, axis_name)


def _tracks_varying_axes(x: jax.Array, axis_name: AxisName) -> bool:
  """True inside shard_map with check_vma=True, where x's type records the axes it varies over."""
  aval = jax.typeof(x)
  manual_axis_type = getattr(aval, "manual_axis_type", None)
  varying = (
    manual_axis_type.varying if manual_axis_type is not None else getattr(aval, "vma", frozenset())
  )
  names = axis_name if isinstance(axis_name, (tuple, list)) else (axis_name,)
  return any(name in varying for name in names)


def global_value(local_share: jax.Array, axis_name: AxisName | None) -> jax.Array:
  """Global loss from this device's share, with the convention in the `cnnjax.losses` doc."""
  if axis_name is None:
    return local_share
  total = jax.lax.psum(local_share, axis_name)
  if _tracks_varying_axes(local_share, axis_name):
    return total
  num_devices = jax.lax.psum(1, axis_name)
  scaled = local_share * num_devices
  return scaled + jax.lax.stop_gradient(total - scaled)


def reduce_terms(
  per_anchor: jax.Array, num_terms: jax.Array, reduction: str, axis_name: AxisName | None
) -> jax.Array:
  """Apply `reduction` to per-anchor sums of loss terms.

  per_anchor: [b] this device's per-anchor sums; num_terms: local number of terms the
  'mean' divides by. 'none' returns per_anchor as is; 'sum' and 'mean' return global
  values under the cross-device convention, 0 (with zero gradient) when there are no terms.
  """
  if reduction == "none":
    return per_anchor
  if reduction == "mean":
    # Dividing before summing keeps a mean of huge terms finite when it fits in float32.
    per_anchor = per_anchor / jnp.maximum(global_sum(num_terms, axis_name), 1)
  return global_value(jnp.sum(per_anchor), axis_name)


def count_ratio(numerator: jax.Array, count: jax.Array) -> jax.Array:
  """numerator / count for a count of terms; 0 when there are none (numerator is then 0)."""
  return numerator / jnp.maximum(count, 1)
