"""SimCLR's NT-Xent loss: constant-shift blockwise (the default), online blockwise or dense.

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

Three methods give the same values and gradients; none forms the [2n, 2N] matrix but dense:

- constant shift ('auto' when the temperature is a concrete number >= 0.025, compiled in
  as a constant: each new value compiles once): the views are L2-normalised, so every
  logit is at most 1 / t and that constant replaces the running max of an online
  log-sum-exp. The views are cut into pair blocks (z1 and z2 rows
  of the same examples together); on a device's own views only the upper block triangle of
  the symmetric similarity matrix is computed, each block's exp feeding the row sums of
  both its blocks, and the gradient H x with H symmetric comes from the same blocks: about
  2 block-matrix products of the full [2N, 2N] size where dense needs 3 and online 4.
  Other devices' views are rectangular blocks, rows only; their share of the gradient
  comes from gathering each view's cotangent / row sum (2N numbers), not [2N, D] columns.
- online ('auto' for smaller or traced temperatures, whose exp(logit - 1 / t) could
  underflow): log-sum-exp with a running max over column blocks and a custom VJP that
  recomputes each block.
- dense: the full [2n, 2N] logits, differentiated by JAX.

NaN or Inf in z1 or z2 gives a NaN loss in every method (every anchor's softmax runs over
all views), so a diverged model shows in the loss. An empty batch raises UsageError.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.errors import UsageError
from cnnjax.losses import _common
from cnnjax.losses._common import AxisName

_dot = functools.partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)
# The constant-shift terms exp((s - 1) / t) reach exp(-2 / t) at s = -1 (antipodal views),
# and a row of such terms only must still sum to a normal float32 number (accelerators
# flush subnormals to zero): the exact limit is 2 / t <= 126 ln 2, t >= 0.0229. At 0.025
# the smallest term is exp(-80) = 2^-115.4, 10 binades of room for rounding in s and in
# exp, and cotangent / row sum in the backward pass stays finite for cotangents up to
# 6000 times the 2N - 1 candidates.
SHIFT_MIN_TEMPERATURE = 0.025
# Views per block when block_size is None: [1024, 1024] blocks of logits (4 MB) keep the
# CPU's products near full speed; smaller blocks slow them, larger ones leave the cache.
DEFAULT_BLOCK_SIZE = 1024
METHODS = ("auto", "dense", "online")


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


def _where(mask: jax.Array | None, x: jax.Array, fill: float) -> jax.Array:
  """x where mask (None: everywhere), else fill."""
  return x if mask is None else jnp.where(mask, x, fill)


def _pair_layout(num_examples: int, block_size: int) -> tuple[int, int]:
  """(blocks, examples per block) for blocks of at most max(block_size, 2) views.

  The fewest blocks, or up to twice as many where that divides the examples exactly (no
  padding to mask); else evenly filled, padding under one example per block.
  """
  fewest = -(-num_examples // max(block_size // 2, 1))
  exact = (k for k in range(fewest, 2 * fewest) if num_examples % k == 0)
  num_blocks = next(exact, fewest)
  return num_blocks, -(-num_examples // num_blocks)


def _pair_blocks(z1: jax.Array, z2: jax.Array, num_blocks: int, per_block: int) -> jax.Array:
  """[n, D] twice -> [num_blocks, 2 * per_block, D], zero padded.

  Block I holds examples I * per_block onwards, first views then second views, so every
  positive pair lies in a diagonal block.
  """
  pad = ((0, num_blocks * per_block - z1.shape[0]), (0, 0))
  blocks = [jnp.pad(z, pad).reshape(num_blocks, per_block, -1) for z in (z1, z2)]
  return jnp.concatenate(blocks, axis=1)


def _unpair(blocks: jax.Array, num_examples: int) -> jax.Array:
  """[num_blocks, 2 * per_block] per-view values -> [2n], ordered [first views; second]."""
  half = blocks.shape[1] // 2
  first, second = blocks[:, :half].reshape(-1), blocks[:, half:].reshape(-1)
  return jnp.concatenate([first[:num_examples], second[:num_examples]])


class _Schedule:
  """Which [B, B] blocks of logits one device computes, over its pair blocks [nb, B, D].

  diagonal: (I, I), self masked; mirrored: (I, J) for I < J, whose exp and weights serve
  row block I directly and row block J transposed; cross: (I, c) for every block c of the
  other devices (indices into `gathered`, every device's blocks, given under axis_name
  with more than one device), rows only. Padded views are masked by `valid` ([nb, B],
  None without padding), the same pattern on every device.
  """

  def __init__(
    self,
    rows: jax.Array,
    num_examples: int,
    axis_name: AxisName | None = None,
    gathered: jax.Array | None = None,
  ):
    num_blocks, width, _ = rows.shape
    self.width = width
    per_block = width // 2
    self.valid = None
    if num_blocks * per_block != num_examples:
      example = np.arange(num_blocks)[:, None] * per_block + np.arange(width) % per_block
      self.valid = jnp.asarray(example < num_examples)
    self.mirrored = tuple(jnp.asarray(i, jnp.int32) for i in np.triu_indices(num_blocks, 1))
    self.gathered, self.cross = gathered, None
    if gathered is not None:
      others = gathered.shape[0] - num_blocks
      # Column blocks in the order after this device's own, each against every row block.
      step = np.arange(others * num_blocks)
      offset = jax.lax.axis_index(axis_name) * num_blocks
      columns = (offset + num_blocks + step // num_blocks) % gathered.shape[0]
      self.cross = (jnp.asarray(step % num_blocks, jnp.int32), columns)

  def diagonal_mask(self, block: jax.Array) -> jax.Array:
    """[B, B] candidates of diagonal block `block`: not self, not padding."""
    not_self = ~jnp.eye(self.width, dtype=bool)
    return not_self if self.valid is None else not_self & self.valid[block][None, :]

  def pair_mask(self, row: jax.Array, column: jax.Array | None) -> jax.Array | None:
    """[B, B] real rows of own block `row` against real columns of own block `column`
    (None: the columns only, for a cross block, whose padding follows its index mod nb)."""
    if self.valid is None:
      return None
    if column is None:
      return self.valid[row % self.valid.shape[0]][None, :]
    return self.valid[row][:, None] & self.valid[column][None, :]


def _block_logits(rows: jax.Array, columns: jax.Array) -> jax.Array:
  return _dot(rows, columns.T)


def _shifted_forward(rows, scale, axis_name, num_examples, with_metrics):
  """Row sums of exp((s - 1) * scale) over each view's candidates, with (for metrics) the
  max candidate similarity and the positive's, and the residuals of the backward pass."""
  gathered = None
  if axis_name is not None and jax.lax.psum(1, axis_name) > 1:
    gathered = jax.lax.all_gather(rows, axis_name, tiled=True)
  plan = _Schedule(rows, num_examples, axis_name, gathered)

  def reduce(logits, mask, axis):
    """(sum of exp((s - 1) * scale), max s) over the candidates along `axis`."""
    stats = (jnp.sum(_where(mask, jnp.exp((logits - 1.0) * scale), 0.0), axis=axis),)
    if with_metrics:
      stats += (jnp.max(_where(mask, logits, -jnp.inf), axis=axis),)
    return stats

  def add(acc, block, stats):
    total, *largest = acc
    return (
      total.at[block].add(stats[0]),
      *(a.at[block].max(b) for a, b in zip(largest, stats[1:])),
    )

  def diagonal(acc, block):
    logits = _block_logits(rows[block], rows[block])
    acc = add(acc, block, reduce(logits, plan.diagonal_mask(block), 1))
    if not with_metrics:
      return acc, None
    # The positive of view r is view r + B / 2 (mod B) of the same block.
    views = jnp.arange(plan.width)
    return acc, logits[views, (views + plan.width // 2) % plan.width]

  def mirrored(acc, pair):
    row, column = pair
    logits = _block_logits(rows[row], rows[column])
    mask = plan.pair_mask(row, column)
    acc = add(acc, row, reduce(logits, mask, 1))
    return add(acc, column, reduce(logits, mask, 0)), None

  def cross(acc, pair):
    row, column = pair
    logits = _block_logits(rows[row], plan.gathered[column])
    return add(acc, row, reduce(logits, plan.pair_mask(column, None), 1)), None

  # *_like keeps the rows' type, including the device axes they vary over in shard_map.
  zeros = jnp.zeros_like(rows[..., 0])
  acc = (zeros, zeros - jnp.inf) if with_metrics else (zeros,)
  acc, positive = jax.lax.scan(diagonal, acc, jnp.arange(rows.shape[0]))
  acc, _ = jax.lax.scan(mirrored, acc, plan.mirrored)
  if plan.cross is not None:
    acc, _ = jax.lax.scan(cross, acc, plan.cross)
  log_sum = jnp.log(acc[0])
  outputs = (log_sum, acc[1], positive) if with_metrics else (log_sum,)
  return outputs, (rows, acc[0], gathered)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _shifted_logsumexp(rows, scale, axis_name, num_examples, with_metrics):
  """log(sum over candidates j of exp((s_ij - 1) * scale)) for every view i of this
  device's pair blocks rows [nb, B, D] (L2-normalised, so s_ij <= 1 and the shift 1 is a
  bound in place of a running max; scale = 1 / t), against every device's views with
  axis_name. Returns ([nb, B],) plus, with metrics (not differentiated), the largest
  candidate similarity and the positive's, from the same products.
  """
  return _shifted_forward(rows, scale, axis_name, num_examples, with_metrics)[0]


def _shifted_logsumexp_fwd(rows, scale, axis_name, num_examples, with_metrics):
  return _shifted_forward(rows, scale, axis_name, num_examples, with_metrics)


def _shifted_logsumexp_bwd(scale, axis_name, num_examples, with_metrics, residuals, cotangents):
  # With q = cotangent / row sum and e_mj = exp((s_mj - 1) * scale), the gradient for view
  # m is scale * sum_j e_mj (q_m + q_j) x_j: one symmetric weight matrix, so a mirrored
  # block gives both its row block's and (transposed) its column block's gradient. Other
  # devices' views enter through their gathered q, so no column gradient travels back.
  del with_metrics
  rows, row_sum, gathered = residuals
  plan = _Schedule(rows, num_examples, axis_name, gathered)
  q = _where(plan.valid, cotangents[0] / row_sum, 0.0)

  def weights(logits, mask, row_q, column_q):
    exp = jnp.exp((logits - 1.0) * scale)
    return _where(mask, exp * (row_q[:, None] + column_q[None, :]), 0.0)

  def diagonal(grad, block):
    logits = _block_logits(rows[block], rows[block])
    weight = weights(logits, plan.diagonal_mask(block), q[block], q[block])
    return grad.at[block].add(_dot(weight, rows[block])), None

  # The column blocks' gradients accumulate transposed, [nb, D, B], as products x^T w
  # run at full speed on CPU where w^T x does not.
  rows_t = jnp.swapaxes(rows, 1, 2)

  def mirrored(carry, pair):
    grad, column_grad_t = carry
    row, column = pair
    logits = _block_logits(rows[row], rows[column])
    weight = weights(logits, plan.pair_mask(row, column), q[row], q[column])
    grad = grad.at[row].add(_dot(weight, rows[column]))
    return (grad, column_grad_t.at[column].add(_dot(rows_t[row], weight))), None

  grad, _ = jax.lax.scan(diagonal, jnp.zeros_like(rows), jnp.arange(rows.shape[0]))
  (grad, column_grad_t), _ = jax.lax.scan(mirrored, (grad, jnp.zeros_like(rows_t)), plan.mirrored)
  grad = grad + jnp.swapaxes(column_grad_t, 1, 2)
  if gathered is not None:
    gathered_q = jax.lax.all_gather(q, axis_name, tiled=True)

    def cross(grad, pair):
      row, column = pair
      logits = _block_logits(rows[row], gathered[column])
      weight = weights(logits, plan.pair_mask(column, None), q[row], gathered_q[column])
      return grad.at[row].add(_dot(weight, gathered[column])), None

    grad, _ = jax.lax.scan(cross, grad, plan.cross)
  return (grad * scale,)


_shifted_logsumexp.defvjp(_shifted_logsumexp_fwd, _shifted_logsumexp_bwd)


def nt_xent_loss(
  z1: jax.Array,
  z2: jax.Array,
  temperature: float = 0.5,
  axis_name: AxisName | None = None,
  block_size: int | None = None,
  reduction: str = "mean",
  return_metrics: bool = False,
  method: str = "auto",
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
    block_size: views per block of the blockwise methods, memory O(N x block_size); None
      picks DEFAULT_BLOCK_SIZE (or 2N when smaller). The constant-shift method keeps both
      views of an example in one block, so it rounds this down to an even number (at
      least 2), and may halve it at most where that splits the batch without padding.
    reduction: 'mean' (over the 2N anchors of the global batch), 'sum', or 'none' ([2N]
      per-anchor losses of this device's views, ordered [z1 rows; z2 rows]).
    return_metrics: also return {'accuracy': fraction of anchors whose positive is the
      most similar other view (ties count as correct), 'positive_similarity': mean cosine
      similarity of positive pairs}, both global.
    method: 'auto' (constant-shift blockwise when the temperature is a concrete number
      >= SHIFT_MIN_TEMPERATURE, else online), 'online' (running-max blockwise, for any
      temperature) or 'dense' (the full similarity matrix; block_size must be None).
      All give the same values and gradients (see module doc).

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
  if method not in METHODS:
    raise UsageError(f"nt_xent_loss: method={method!r} is unknown; use one of {METHODS}.")
  if method == "dense" and block_size is not None:
    raise UsageError(
      f"nt_xent_loss: block_size={block_size} has no use with method='dense'; drop it, "
      "or use method='auto' for blocks."
    )
  if method == "auto":
    # A traced temperature could be below the bound, so it takes the online path.
    number = _common.concrete_number(temperature)
    method = "shifted" if number is not None and number >= SHIFT_MIN_TEMPERATURE else "online"
  shift_temperature = number if method == "shifted" else None
  return _nt_xent(
    z1,
    z2,
    temperature,
    axis_name=axis_name,
    block_size=block_size,
    reduction=reduction,
    return_metrics=return_metrics,
    method=method,
    shift_temperature=shift_temperature,
  )


@functools.partial(
  jax.jit,
  static_argnames=(
    "axis_name",
    "block_size",
    "reduction",
    "return_metrics",
    "method",
    "shift_temperature",
  ),
)
def _nt_xent(
  z1,
  z2,
  temperature,
  *,
  axis_name,
  block_size,
  reduction,
  return_metrics,
  method,
  shift_temperature=None,
):
  z1 = _common.l2_normalize(z1.astype(jnp.float32))
  z2 = _common.l2_normalize(z2.astype(jnp.float32))
  num_local = z1.shape[0]
  positive_similarity = jnp.sum(z1 * z2, axis=1)
  if method == "shifted":
    shift = 1.0 / shift_temperature
    layout = _pair_layout(num_local, block_size or DEFAULT_BLOCK_SIZE)
    rows = _pair_blocks(z1, z2, *layout)
    outputs = _shifted_logsumexp(rows, shift, axis_name, num_local, return_metrics)
    log_sum, *stats = [_unpair(x, num_local) for x in outputs]
    row_max, positive_product = stats or (None, None)
    # lse - positive logit, as log_sum + (1 - s) / t: no term of size 1 / t to round.
    anchor_losses = log_sum + shift * (1.0 - jnp.concatenate([positive_similarity] * 2))
    num_examples = num_local * (1 if axis_name is None else jax.lax.psum(1, axis_name))
  else:
    all_z1, first_row = _common.gather_global(z1, axis_name)
    all_z2, _ = _common.gather_global(z2, axis_name)
    num_examples = all_z1.shape[0]
    anchors = jnp.concatenate([z1, z2]) / temperature
    columns = jnp.concatenate([all_z1, all_z2])
    first_view_ids = first_row + jnp.arange(num_local)
    self_column = jnp.concatenate([first_view_ids, num_examples + first_view_ids])
    positive_column = jnp.concatenate([num_examples + first_view_ids, first_view_ids])
    if method == "dense":
      lse, row_max, positive_product = _dense_logsumexp(
        anchors, columns, self_column, positive_column
      )
    else:
      lse, row_max, positive_product = _blockwise_logsumexp(
        anchors,
        columns,
        self_column,
        positive_column,
        block_size or min(DEFAULT_BLOCK_SIZE, columns.shape[0]),
      )
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
