"""What a model says about a batch, as arrays: top-k classes, confusion, neighbours, channels.

  probs, classes = top_k(logits, 5)                   # [B, 5] each
  confusion = confusion_matrix(labels, predicted, K)  # [K, K], rows true, columns predicted
  index, similarity = nearest_neighbours(queries, keys, 5, query_index)  # [Q, 5] each
  channels, maps = strongest_channels(feature_map, 4)  # [4], [B, h, w, 4]

Pure and jit-compiled; the figures are `cnnjax.inspect.plots`'.
"""

import functools

import jax
import jax.numpy as jnp


@functools.partial(jax.jit, static_argnames=("k",))
def top_k(logits: jax.Array, k: int = 5) -> tuple[jax.Array, jax.Array]:
  """(softmax probabilities [B, k], classes [B, k] int32) of the k likeliest classes."""
  k = min(k, logits.shape[-1])
  probs, classes = jax.lax.top_k(jax.nn.softmax(logits.astype(jnp.float32), axis=-1), k)
  return probs, classes.astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("num_classes",))
def confusion_matrix(
  labels: jax.Array, predicted: jax.Array, num_classes: int, valid: jax.Array | None = None
) -> jax.Array:
  """int32 [K, K]: count of examples of true class i (row) predicted as j (column).

  Args:
    labels, predicted: int [...] of one shape (images, or pixels of masks).
    num_classes: K.
    valid: bool [...] of the same shape, or None (all count).
  """
  weights = jnp.ones(labels.shape, jnp.int32) if valid is None else valid.astype(jnp.int32)
  index = labels.astype(jnp.int32).ravel() * num_classes + predicted.astype(jnp.int32).ravel()
  counts = jnp.zeros(num_classes * num_classes, jnp.int32).at[index].add(weights.ravel())
  return counts.reshape(num_classes, num_classes)


@functools.partial(jax.jit, static_argnames=("k",))
def nearest_neighbours(
  queries: jax.Array, keys: jax.Array, k: int, query_index: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
  """The k keys most cosine-similar to each query, most similar first.

  Args:
    queries: [Q, D] embeddings.
    keys: [N, D] embeddings.
    k: neighbours per query.
    query_index: [Q] int, each query's own row in `keys` (left out of its neighbours);
      None when the queries are not among the keys.

  Returns:
    (indices into keys [Q, k] int32, cosine similarities [Q, k]).
  """

  def unit(x):
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-12))

  similarity = unit(queries) @ unit(keys).T
  if query_index is not None:
    own = jnp.arange(keys.shape[0])[None, :] == query_index[:, None]
    similarity = jnp.where(own, -jnp.inf, similarity)
  values, indices = jax.lax.top_k(similarity, min(k, keys.shape[0]))
  return indices.astype(jnp.int32), values


@functools.partial(jax.jit, static_argnames=("k",))
def strongest_channels(feature_map: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """The k channels of largest mean |activation| over the batch and positions.

  Args:
    feature_map: [B, h, w, C].
    k: channels (at most C).

  Returns:
    (channel indices [k] int32, strongest first; their maps [B, h, w, k] float32).
  """
  k = min(k, feature_map.shape[-1])
  strength = jnp.mean(jnp.abs(feature_map.astype(jnp.float32)), axis=(0, 1, 2))
  _, channels = jax.lax.top_k(strength, k)
  return channels.astype(jnp.int32), jnp.take(feature_map, channels, axis=-1).astype(jnp.float32)
