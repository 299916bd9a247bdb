"""Heads that turn a backbone (a zoo classifier with num_classes=None) into another model.

SimCLR's projection MLP and metric learning's L2-normalised embedding. Each wraps a
backbone module under the name `backbone`, so its parameters are `backbone/...`, what
`transfer.prefix = "backbone"` takes for a downstream task.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp


class ProjectionNet(nn.Module):
  """SimCLR: x [N, H, W, C] -> (backbone features [N, F], projections [N, projection_dim]).

  The projection is Dense -> ReLU -> Dense (hidden width `hidden_dim`, 0: F), as in the
  paper; the loss sees the projections, downstream tasks the features.
  """

  backbone: nn.Module
  projection_dim: int = 128
  hidden_dim: int = 0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
    features = self.backbone(x, train=train)
    hidden = nn.Dense(
      self.hidden_dim or features.shape[-1], dtype=self.dtype, name="projection_hidden"
    )(features)
    projections = nn.Dense(self.projection_dim, dtype=self.dtype, name="projection")(
      nn.relu(hidden)
    )
    return features, projections.astype(jnp.float32)


class EmbeddingNet(nn.Module):
  """Metric learning: x [N, H, W, C] -> L2-normalised embeddings [N, embedding_dim] (float32)."""

  backbone: nn.Module
  embedding_dim: int = 128
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    features = self.backbone(x, train=train)
    embeddings = nn.Dense(self.embedding_dim, dtype=self.dtype, name="embedding")(features)
    embeddings = embeddings.astype(jnp.float32)
    return embeddings * jax.lax.rsqrt(jnp.maximum(jnp.sum(embeddings**2, -1, keepdims=True), 1e-12))
