"""How a train step computes its loss gradient: at once, accumulated, or by gradient caching.

All three return the same thing for one device's shard,

    grad_fn(params, batch_stats, batch, rng) -> ((loss, (metrics, batch_stats)), grads)

and differ in how much of the batch's activations memory holds at once:

- `whole_batch`: all of them (one `jax.value_and_grad`).
- `accumulated(loss_fn, k)` (`config.accumulate_steps`): 1/k. The shard is split into k
  micro-batches that a `lax.scan` runs one after another; the gradient, loss and metrics
  are their means, so a loss that is a mean over examples gets the whole batch's gradient
  exactly. BatchNorm statistics are threaded through the micro-batches in turn, as k
  forward passes would update them, and each micro-batch normalises with its own batch
  statistics. A loss that couples examples (triplets, NT-Xent) only sees each micro-batch.
- `cached(task, ...)` (`config.micro_batch_size`, gradient caching, Gao et al. 2021): one
  chunk's. (1) The chunks are embedded one by one without keeping activations, (2) the
  task's loss runs on the embeddings of the whole batch, negatives from every device
  included, and gives the gradient with respect to each embedding, (3) each chunk is
  embedded again and back-propagated with its cached embedding gradient as the cotangent,
  summing the parameter gradients. The result is the whole batch's gradient exactly for
  a network whose embedding of an example depends on that example alone (no BatchNorm in
  training mode, or frozen BatchNorm, or GroupNorm). With BatchNorm each chunk normalises
  with its own statistics (ghost batch norm of micro_batch_size x devices under
  `global_bn`), and the running statistics take the mean of the chunks' updates.

Randomness: each micro-batch or chunk gets `fold_in(rng, index)`; gradient caching uses the
same key for both passes of a chunk, so dropout masks agree between them.
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp

LossFn = Callable[[Any, Any, dict, jax.Array], tuple[jax.Array, tuple[dict, Any]]]
GradFn = Callable[[Any, Any, dict, jax.Array], tuple[tuple[jax.Array, tuple[dict, Any]], Any]]


def whole_batch(loss_fn: LossFn) -> GradFn:
  """The gradient of `loss_fn(params, batch_stats, batch, rng)` in one pass."""
  return jax.value_and_grad(loss_fn, has_aux=True)


def split(batch: dict, parts: int) -> dict:
  """Every leaf [B, ...] of `batch` as [parts, B / parts, ...] (B divisible by parts)."""
  return jax.tree.map(lambda x: x.reshape(parts, x.shape[0] // parts, *x.shape[1:]), batch)


def _mean(tree: Any) -> Any:
  return jax.tree.map(lambda x: jnp.mean(x, axis=0), tree)


def accumulated(loss_fn: LossFn, steps: int) -> GradFn:
  """The mean gradient of `loss_fn` over `steps` micro-batches of the shard, in a scan."""
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def accumulate(params, batch_stats, batch, rng):
    def one(batch_stats, inputs):
      micro_batch, index = inputs
      (loss, (metrics, batch_stats)), grads = grad_fn(
        params, batch_stats, micro_batch, jax.random.fold_in(rng, index)
      )
      return batch_stats, (loss, metrics, grads)

    batch_stats, (losses, metrics, grads) = jax.lax.scan(
      one, batch_stats, (split(batch, steps), jnp.arange(steps))
    )
    return (jnp.mean(losses), (_mean(metrics), batch_stats)), _mean(grads)

  return accumulate


def cached(
  embed: Callable[[Any, Any, dict, jax.Array], tuple[Any, Any]],
  embedding_loss: Callable[[Any, dict], tuple[jax.Array, dict]],
  chunks: int,
) -> GradFn:
  """The gradient of `embedding_loss(embed(batch), batch)` by gradient caching.

  Args:
    embed: `embed(params, batch_stats, chunk, rng) -> (embeddings [n, ...], batch_stats)`,
      a function of each example of the chunk (see the module docstring for BatchNorm).
    embedding_loss: `embedding_loss(embeddings [B, ...], batch) -> (loss, metrics)` on the
      whole shard (it may gather over the device axis).
    chunks: the number of chunks the shard is split into.
  """

  def cache(params, batch_stats, batch, rng):
    pieces = (split(batch, chunks), jnp.arange(chunks))

    def embed_only(_, inputs):
      chunk, index = inputs
      embeddings, new_stats = embed(
        jax.lax.stop_gradient(params), batch_stats, chunk, jax.random.fold_in(rng, index)
      )
      return None, (embeddings, new_stats)

    _, (embeddings, chunk_stats) = jax.lax.scan(embed_only, None, pieces)
    whole = jax.tree.map(lambda e: e.reshape(-1, *e.shape[2:]), embeddings)
    (loss, metrics), embedding_grads = jax.value_and_grad(embedding_loss, has_aux=True)(
      whole, batch
    )
    chunk_grads = jax.tree.map(lambda g, e: g.reshape(e.shape), embedding_grads, embeddings)

    def backward(grads, inputs):
      chunk, index, cotangent = inputs
      _, pull_back = jax.vjp(
        lambda p: embed(p, batch_stats, chunk, jax.random.fold_in(rng, index))[0], params
      )
      return jax.tree.map(jnp.add, grads, pull_back(cotangent)[0]), None

    grads, _ = jax.lax.scan(backward, jax.tree.map(jnp.zeros_like, params), (*pieces, chunk_grads))
    return (loss, (metrics, _mean(chunk_stats))), grads

  return cache
