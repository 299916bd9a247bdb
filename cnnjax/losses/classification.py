"""Softmax classification: cross-entropy with label smoothing, and auxiliary heads.

GoogLeNet (and any model whose training output is (logits, aux_1, ...)) adds each
auxiliary head's loss with a weight: 0.3 in the paper.
"""

from typing import Sequence

import jax
import jax.numpy as jnp
import optax

from cnnjax.errors import UsageError
from cnnjax.losses import _common


def cross_entropy(
  logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0, reduction: str = "mean"
) -> jax.Array:
  """Softmax cross-entropy of logits [B, K] against int labels [B], computed in float32.

  Args:
    logits: [B, K].
    labels: [B] int in [0, K).
    label_smoothing: the targets are (1 - s) one-hot + s / K (Szegedy et al. 2016).
    reduction: 'mean', 'sum' or 'none' ([B]).
  """
  _common.check_reduction(reduction, "cross_entropy")
  if logits.ndim != 2 or labels.shape != logits.shape[:1]:
    raise UsageError(
      f"cross_entropy: logits must be [B, K] and labels [B], got "
      f"{tuple(logits.shape)} and {tuple(labels.shape)}."
    )
  _common.check_batch(logits.shape[0], "cross_entropy")
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
  losses = optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)
  if reduction == "none":
    return losses
  return losses.mean() if reduction == "mean" else losses.sum()


def classification_loss(
  outputs: jax.Array | Sequence[jax.Array],
  labels: jax.Array,
  label_smoothing: float = 0.0,
  aux_weight: float = 0.3,
) -> tuple[jax.Array, jax.Array]:
  """Mean cross-entropy of a classifier's output, auxiliary heads weighted in.

  Args:
    outputs: logits [B, K], or (logits, aux_logits_1, ...) each [B, K].
    labels: [B] int.
    label_smoothing: for every head.
    aux_weight: weight of each auxiliary head's loss.
  Returns:
    (total loss, the main head's loss), scalars.
  """
  logits, *aux_logits = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
  main = cross_entropy(logits, labels, label_smoothing)
  total = main
  for aux in aux_logits:
    total = total + aux_weight * cross_entropy(aux, labels, label_smoothing)
  return total, main
