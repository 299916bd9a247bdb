"""Classification accuracy as jit-safe array functions."""

import jax
import jax.numpy as jnp


def top_k_correct(logits: jax.Array, labels: jax.Array, k: int = 1) -> jax.Array:
  """1.0 where the label is among the k largest logits, else 0.0.

  Args:
    logits: [N, K] scores.
    labels: [N] int labels.
    k: how many top classes count as correct.
  Returns:
    [N] float32.
  """
  _, top = jax.lax.top_k(logits, k)
  return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)
