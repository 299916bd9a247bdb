"""Metric learning: an L2-normalised embedding head on a backbone, trained with triplets.

Config section `metric`:
  loss: "semihard" (FaceNet / TensorFlow Addons), "hard" (batch-hard) or "all" (batch-all).
  margin, distance: of the triplet loss ("l2", "squared_l2" or "cosine").
  embedding_dim: size of the embedding (FaceNet: 128).
  examples_per_class: K of P x K batches; P = per-device batch / K classes per device.
  knn_k: neighbours of the kNN classifier in evaluation.
Triplets are mined over the global batch (`all_gather` inside the loss). Evaluation on
`config.eval_split`: leave-one-out kNN accuracy, recall@1/5 and pair verification
accuracy at the best threshold.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from cnnjax import losses
from cnnjax import models
from cnnjax.errors import UsageError
from cnnjax.evaluate import retrieval
from cnnjax.train import tasks
from cnnjax.train.tasks import inputs

LOSSES = {"semihard": losses.triplet_semihard_loss, "hard": losses.triplet_hard_loss,
          "all": losses.triplet_all_loss}


class EmbeddingNet(nn.Module):
  """backbone features [N, F] -> Dense -> L2-normalised embeddings [N, embedding_dim]."""
  backbone: nn.Module
  embedding_dim: int = 128
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    features = self.backbone(x, train=train)
    embeddings = nn.Dense(self.embedding_dim, dtype=self.dtype, name="embedding")(features)
    embeddings = embeddings.astype(jnp.float32)
    return embeddings * jax.lax.rsqrt(jnp.maximum(jnp.sum(embeddings ** 2, -1, keepdims=True),
                                                  1e-12))


class MetricLearning(tasks.Task):
  """Triplet-loss embeddings over `config.model` (used as a backbone, num_classes=None)."""

  has_embeddings = True

  @classmethod
  def config_defaults(cls):
    metric = ml_collections.ConfigDict()
    metric.loss = "semihard"
    metric.margin = 0.2
    metric.distance = "squared_l2"
    metric.embedding_dim = 64
    metric.examples_per_class = 8
    metric.knn_k = 1
    return {"metric": metric}

  def create_model(self):
    if self.config.metric.loss not in LOSSES:
      raise UsageError(f"unknown metric.loss {self.config.metric.loss!r}; choose one of "
                       f"{', '.join(LOSSES)}.")
    backbone = models.create(self.config.model, **self.backbone_kwargs(None))
    return EmbeddingNet(backbone, self.config.metric.embedding_dim, self.dtype)

  def sampler_kwargs_for(self, num_devices):
    per_device = self.config.batch_size // num_devices
    k = self.config.metric.examples_per_class
    if per_device % k:
      raise UsageError(f"per-device batch {per_device} is not a multiple of "
                       f"metric.examples_per_class={k}; change batch_size or K.")
    return {"classes_per_group": per_device // k, "examples_per_class": k}

  def preprocess(self, batch, rng, train):
    return inputs.prepare_batch(self, batch, rng, train)

  def loss_fn(self, params, batch_stats, batch, rng, train):
    variables = {"params": params, "batch_stats": batch_stats}
    embeddings, new_batch_stats = self.apply(variables, batch["image"], train=train, rng=rng)
    metric = self.config.metric
    loss, metrics = LOSSES[metric.loss](embeddings, batch["label"], margin=metric.margin,
                                        distance=metric.distance, axis_name=tasks.AXIS,
                                        return_metrics=True)
    return loss, (dict(metrics), new_batch_stats)

  def eval_step(self, variables, batch):
    embeddings = self.model.apply(variables, batch["image"], train=False)
    return {"count": batch["valid"].astype(jnp.float32).sum()}, {
        "embedding": embeddings, "label": batch["label"]}

  def finalize_eval(self, sums, outputs):
    embeddings, labels = outputs["embedding"], outputs["label"]
    recall = retrieval.recall_at_k(embeddings, labels, (1, 5))
    verification, threshold = retrieval.verification_accuracy(embeddings, labels)
    return {
        "knn_accuracy": retrieval.knn_accuracy(embeddings, labels, embeddings, labels,
                                               self.config.metric.knn_k, exclude_self=True),
        "recall_at_1": recall[1], "recall_at_5": recall[5],
        "verification_accuracy": verification, "verification_threshold": threshold,
        "count": float(sums["count"]),
    }


tasks.register("metric_learning", MetricLearning)
