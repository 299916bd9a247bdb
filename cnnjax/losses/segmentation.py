"""Per-pixel segmentation losses: cross-entropy with an ignore label, and soft Dice.

Labels outside [0, num_classes) that are not `ignore_index` are a user error: concrete
labels raise UsageError; traced labels (under jit) cannot be inspected, so such pixels are
left out of the loss exactly like `ignore_index` pixels. A batch with no counted pixel
gives loss 0 with zero gradient, never NaN; a batch with no image raises UsageError.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnnjax.errors import UsageError
from cnnjax.losses import _common


def _check(
  logits: jax.Array, labels: jax.Array, ignore_index: int | None, loss_name: str, reduction: str
) -> None:
  _common.check_reduction(reduction, loss_name)
  if logits.ndim != labels.ndim + 1 or logits.shape[:-1] != labels.shape:
    raise UsageError(
      f"{loss_name}: logits must be [N, H, W, K] and labels [N, H, W], got "
      f"{tuple(logits.shape)} and {tuple(labels.shape)}."
    )
  _common.check_batch(logits.shape[0], loss_name, "images")
  if isinstance(labels, jax.core.Tracer):
    return
  values = np.asarray(labels)
  if ignore_index is not None:
    values = values[values != ignore_index]
  num_classes = logits.shape[-1]
  if values.size and (values.min() < 0 or values.max() >= num_classes):
    raise UsageError(
      f"{loss_name}: mask labels must lie in [0, {num_classes}) or equal "
      f"ignore_index={ignore_index}, found {values.min()}..{values.max()}; "
      "remap the mask or set num_classes."
    )


def _counted(labels: jax.Array, num_classes: int, ignore_index: int | None) -> jax.Array:
  """bool [N, H, W]: pixels whose label is a class (not ignored, not out of range)."""
  counted = (labels >= 0) & (labels < num_classes)
  if ignore_index is not None:
    counted &= labels != ignore_index
  return counted


def pixel_cross_entropy(
  logits: jax.Array, labels: jax.Array, ignore_index: int | None = None, reduction: str = "mean"
) -> jax.Array:
  """Softmax cross-entropy per pixel.

  Args:
    logits: [N, H, W, K].
    labels: [N, H, W] int class per pixel.
    ignore_index: a label value whose pixels do not count (e.g. 255 for VOC borders).
    reduction: 'mean' over counted pixels, 'sum', or 'none' ([N, H, W], 0 at ignored pixels).

  Returns:
    The reduced loss (a scalar) or per-pixel losses.
  """
  _check(logits, labels, ignore_index, "pixel_cross_entropy", reduction)
  num_classes = logits.shape[-1]
  counted = _counted(labels, num_classes, ignore_index)
  safe_labels = jnp.where(counted, labels, 0)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), safe_labels)
  losses = jnp.where(counted, losses, 0.0)
  if reduction == "none":
    return losses
  total = jnp.sum(losses)
  if reduction == "sum":
    return total
  return _common.count_ratio(total, jnp.sum(counted))


def soft_dice_loss(
  logits: jax.Array,
  labels: jax.Array,
  ignore_index: int | None = None,
  smooth: float = 1.0,
  include_background: bool = True,
  reduction: str = "mean",
) -> jax.Array:
  """1 - soft Dice coefficient of softmax probabilities against one-hot labels.

  Per image and class: dice = (2 sum(p t) + smooth) / (sum p + sum t + smooth) over counted
  pixels; the image's loss is 1 - the mean dice over classes (class 0 left out when
  `include_background` is False). A class absent from both prediction and labels scores 1.

  Args:
    logits: [N, H, W, K].
    labels: [N, H, W] int class per pixel.
    ignore_index: a label value whose pixels do not count.
    smooth: additive smoothing; keeps the loss finite on empty classes.
    include_background: whether class 0 takes part in the mean.
    reduction: 'mean' over images, 'sum', or 'none' ([N]).

  Returns:
    The reduced loss or per-image losses [N].
  """
  _check(logits, labels, ignore_index, "soft_dice_loss", reduction)
  num_classes = logits.shape[-1]
  _common.check_number(
    smooth,
    "smooth",
    "soft_dice_loss",
    0.0,
    "a finite smooth > 0 (it keeps empty classes finite)",
    strict=True,
  )
  if not include_background and num_classes < 2:
    raise UsageError("soft_dice_loss: include_background=False needs at least 2 classes.")
  counted = _counted(labels, num_classes, ignore_index)[..., None]
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1) * counted
  targets = jax.nn.one_hot(labels, num_classes) * counted
  intersection = jnp.sum(probs * targets, axis=(1, 2))
  total = jnp.sum(probs, axis=(1, 2)) + jnp.sum(targets, axis=(1, 2))
  dice = (2 * intersection + smooth) / (total + smooth)
  if not include_background:
    dice = dice[:, 1:]
  losses = 1.0 - jnp.mean(dice, axis=-1)
  if reduction == "none":
    return losses
  return jnp.sum(losses) if reduction == "sum" else jnp.mean(losses)
