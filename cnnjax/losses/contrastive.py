"""SimCLR's NT-Xent loss, dense or blockwise, on one device or across devices.

Views are ordered [z1; z2]: for anchor i < N the positive is view N + i and vice versa.
Every anchor's softmax runs over the other 2N - 1 views (self excluded by a mask, never a
large constant), and the loss is averaged over all 2N anchors as in the SimCLR paper.

With `axis_name` set (inside `jax.shard_map` or `jax.pmap`), z1 and z2 are this device's
[n, D] shards: its 2n views are the anchors and all 2N gathered views are the candidates,
so gradients reach the device that owns each negative. For reduction 'mean' and 'sum' the
value returned is the loss of the global batch, identical on every device, and
`jax.lax.pmean(grads, axis_name)` of the per-device gradients in the train step equals
the single-device gradient on the global batch exactly, under pmap and shard_map alike
(the exact convention is in the `cnnjax.losses` package doc).

With `block_size` set, the [2n, 2N] similarity matrix is never formed: an online
log-sum-exp runs over column blocks, and a custom VJP recomputes each block in the backward
pass, so memory is O(n x block_size) instead of O(n x N).

NaN or Inf in z1 or z2 gives a NaN loss, dense and blockwise alike (every anchor's softmax
runs over all views), so a diverged model shows in the loss. An empty batch raises
UsageError in both.
"""

import functools

import jax
import jax.numpy as jnp

from cnnjax.errors import UsageError
from cnnjax.losses import _common
from cnnjax.losses._common import AxisName

_dot = functools.partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)


def _column_masks(
  column_ids: jax.Array, self_column: jax.Array, positive_column: jax.Array, num_columns: int
) -> tuple[jax.Array, jax.Array]:
  """[rows, block] masks: candidate views (not self, not padding) and the positive view."""
  candidate = (column_ids[None, :] != self_column[:, None]) & (column_ids[None, :] < num_columns)
  return candidate, column_ids[None, :] == positive_column[:, None]


def _padded_blocks(columns: jax.Array, block_size: int) -> jax.Array:
  """[C, D] -> [ceil(C / block_size), block_size, D], zero padded."""
  num_blocks = -(-columns.shape[0] // block_size)
  padded = jnp.pad(columns, ((0, num_blocks * block_size - columns.shape[0]), (0, 0)))
  return padded.reshape(num_blocks, block_size, columns.shape[1])


def _blockwise_forward(anchors, columns, self_column, positive_column, block_size):
  """Online log-sum-exp over column blocks: (lse [R], row max [R], positive logit [R])."""
  blocks = _padded_blocks(columns, block_size)
  block_ids = jnp.arange(block_size)

  def step(carry, inputs):
    running_max, running_sum, positive_logit = carry
    block, start = inputs
    logits = _dot(anchors, block.T)
    candidate, is_positive = _column_masks(
      start + block_ids, self_column, positive_column, columns.shape[0]
    )
    masked = jnp.where(candidate, logits, -jnp.inf)
    new_max = jnp.maximum(running_max, jnp.max(masked, axis=1))
    # A row that has seen no candidate yet keeps max -inf; shift it by 0 to avoid inf - inf.
    shift = jnp.where(jnp.isfinite(new_max), new_max, 0.0)
    running_sum = running_sum * jnp.exp(running_max - shift) + jnp.sum(
      jnp.exp(masked - shift[:, None]), axis=1
    )
    positive_logit = jnp.maximum(
      positive_logit, jnp.max(jnp.where(is_positive, logits, -jnp.inf), axis=1)
    )
    return (new_max, running_sum, positive_logit), None

  # *_like keeps the anchors' type, including the device axes they vary over in shard_map.
  minus_inf = jnp.full_like(anchors[:, 0], -jnp.inf)
  init = (minus_inf, jnp.zeros_like(anchors[:, 0]), minus_inf)
  starts = jnp.arange(blocks.shape[0]) * block_size
  (row_max, row_sum, positive_logit), _ = jax.lax.scan(step, init, (blocks, starts))
  return row_max + jnp.log(row_sum), row_max, positive_logit


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _blockwise_logsumexp(anchors, columns, self_column, positive_column, block_size):
  """For anchors [R, D] and columns [C, D] (already scaled by 1/temperature on one side):
  log-sum-exp of each anchor's logits over the candidate columns, plus (not differentiated)
  the row max and the positive's logit from the same products, for the accuracy."""
  return _blockwise_forward(anchors, columns, self_column, positive_column, block_size)


def _blockwise_logsumexp_fwd(anchors, columns, self_column, positive_column, block_size):
  outputs = _blockwise_forward(anchors, columns, self_column, positive_column, block_size)
  return outputs, (anchors, columns, self_column, positive_column, outputs[0])


def _blockwise_logsumexp_bwd(block_size, residuals, cotangents):
  anchors, columns, self_column, positive_column, lse = residuals
  lse_cotangent = cotangents[0]
  blocks = _padded_blocks(columns, block_size)
  block_ids = jnp.arange(block_size)

  def step(anchor_grad, inputs):
    block, start = inputs
    candidate, _ = _column_masks(start + block_ids, self_column, positive_column, columns.shape[0])
    softmax = jnp.where(candidate, jnp.exp(_dot(anchors, block.T) - lse[:, None]), 0.0)
    weights = lse_cotangent[:, None] * softmax
    return anchor_grad + _dot(weights, block), _dot(weights.T, anchors)

  starts = jnp.arange(blocks.shape[0]) * block_size
  anchor_grad, block_grads = jax.lax.scan(step, jnp.zeros_like(anchors), (blocks, starts))
  column_grad = block_grads.reshape(-1, columns.shape[1])[: columns.shape[0]]
  return anchor_grad, column_grad, None, None


_blockwise_logsumexp.defvjp(_blockwise_logsumexp_fwd, _blockwise_logsumexp_bwd)


def _dense_logsumexp(anchors, columns, self_column, positive_column):
  """The same three outputs as _blockwise_logsumexp from the full [R, C] logits."""
  logits = _dot(anchors, columns.T)
  candidate, is_positive = _column_masks(
    jnp.arange(columns.shape[0]), self_column, positive_column, columns.shape[0]
  )
  masked = jnp.where(candidate, logits, -jnp.inf)
  positive_logit = jnp.max(jnp.where(is_positive, logits, -jnp.inf), axis=1)
  return (
    jax.nn.logsumexp(masked, axis=1),
    jax.lax.stop_gradient(jnp.max(masked, axis=1)),
    jax.lax.stop_gradient(positive_logit),
  )


def nt_xent_loss(
  z1: jax.Array,
  z2: jax.Array,
  temperature: float = 0.5,
  axis_name: AxisName | None = None,
  block_size: int | None = None,
  reduction: str = "mean",
  return_metrics: bool = False,
) -> _common.Loss:
  """SimCLR's normalised temperature-scaled cross-entropy over 2N views.

  loss_i = -log(exp(s_ip / t) / sum_{k != i} exp(s_ik / t)), with s the cosine similarity
  and p the other view of i's example, averaged over all 2N anchors. Deliberately as
  lightly, rows are normalised as z / max(||z||, 1e-12); SimCLR's TF objective clamps the
  norm at 1e-6 instead, which differs only for ||z|| < 1e-6.

  Args:
    z1: [N, D] projections of the first views (this device's shard with axis_name).
    z2: [N, D] projections of the second views; z1[i] and z2[i] are a positive pair.
      Any float dtype; computed in float32, L2-normalised here.
    temperature: softmax temperature (0.5 for CIFAR, 0.1 for ImageNet in SimCLR): finite
      and at least float32's smallest normal number, about 1.2e-38, so that 1 / temperature
      is finite (checked when concrete).
    axis_name: named device axis; negatives then come from every device (see module doc).
    block_size: if set, columns are processed in blocks of this many views with an online
      log-sum-exp and a recomputing custom VJP; same values and gradients as dense.
    reduction: 'mean' (over the 2N anchors of the global batch), 'sum', or 'none' ([2N]
      per-anchor losses of this device's views, ordered [z1 rows; z2 rows]).
    return_metrics: also return {'accuracy': fraction of anchors whose positive is the
      most similar other view (ties count as correct), 'positive_similarity': mean cosine
      similarity of positive pairs}, both global.

  Returns:
    The loss (a scalar, or [2N] for 'none'), and the metrics dict if requested.
  """
  _common.check_embeddings(z1, "z1", "nt_xent_loss")
  _common.check_embeddings(z2, "z2", "nt_xent_loss")
  if z1.shape != z2.shape:
    raise UsageError(
      f"nt_xent_loss: z1 {tuple(z1.shape)} and z2 {tuple(z2.shape)} must have "
      "the same shape (one row per example in each)."
    )
  _common.check_batch(z1.shape[0], "nt_xent_loss")
  _common.check_number(
    temperature,
    "temperature",
    "nt_xent_loss",
    _common.FLOAT32_TINY,
    f"a temperature >= {_common.FLOAT32_TINY:.8g}, so that 1 / temperature "
    "is finite in float32 (SimCLR uses 0.1 to 0.5)",
  )
  if block_size is not None and (not isinstance(block_size, int) or block_size <= 0):
    raise UsageError(f"nt_xent_loss: block_size={block_size!r} must be a positive int or None.")
  _common.check_reduction(reduction, "nt_xent_loss")
  return _nt_xent(
    z1,
    z2,
    temperature,
    axis_name=axis_name,
    block_size=block_size,
    reduction=reduction,
    return_metrics=return_metrics,
  )


@functools.partial(
  jax.jit, static_argnames=("axis_name", "block_size", "reduction", "return_metrics")
)
def _nt_xent(z1, z2, temperature, *, axis_name, block_size, reduction, return_metrics):
  z1 = _common.l2_normalize(z1.astype(jnp.float32))
  z2 = _common.l2_normalize(z2.astype(jnp.float32))
  all_z1, first_row = _common.gather_global(z1, axis_name)
  all_z2, _ = _common.gather_global(z2, axis_name)
  num_examples = all_z1.shape[0]
  anchors = jnp.concatenate([z1, z2]) / temperature
  columns = jnp.concatenate([all_z1, all_z2])
  first_view_ids = first_row + jnp.arange(z1.shape[0])
  self_column = jnp.concatenate([first_view_ids, num_examples + first_view_ids])
  positive_column = jnp.concatenate([num_examples + first_view_ids, first_view_ids])

  if block_size is None:
    lse, row_max, positive_product = _dense_logsumexp(
      anchors, columns, self_column, positive_column
    )
  else:
    lse, row_max, positive_product = _blockwise_logsumexp(
      anchors, columns, self_column, positive_column, block_size
    )
  positive_similarity = jnp.sum(z1 * z2, axis=1)
  positive_logit = jnp.concatenate([positive_similarity, positive_similarity]) / temperature
  anchor_losses = lse - positive_logit
  loss = _common.reduce_terms(anchor_losses, anchor_losses.shape[0], reduction, axis_name)
  if not return_metrics:
    return loss
  num_anchors = 2 * num_examples
  correct = jax.lax.stop_gradient(positive_product) >= jax.lax.stop_gradient(row_max)
  metrics = {
    "accuracy": _common.global_sum(jnp.sum(correct), axis_name) / num_anchors,
    "positive_similarity": _common.global_sum(jnp.sum(positive_similarity), axis_name)
    / num_examples,
  }
  return loss, metrics
