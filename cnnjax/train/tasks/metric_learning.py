"""Metric learning: an L2-normalised embedding head on a backbone, trained with triplets.

Config section `metric`:
  loss: "semihard" (FaceNet / TensorFlow Addons), "hard" (batch-hard) or "all" (batch-all).
  margin, distance: of the triplet loss ("l2", "squared_l2" or "cosine").
  embedding_dim: size of the embedding (FaceNet: 128).
  examples_per_class: K of P x K batches; P = per-device batch / K classes per device.
Triplets are mined over the global batch (`all_gather` inside the loss). The default
evaluator, "test" of kind "retrieval": leave-one-out kNN accuracy, recall@1/5 and pair
verification accuracy at the best threshold, within the test split.
"""

import jax.numpy as jnp
import ml_collections

from cnnjax import losses
from cnnjax import models
from cnnjax.axis import AXIS
from cnnjax.errors import UsageError
from cnnjax.models import heads
from cnnjax.train import tasks
from cnnjax.train.tasks import inputs

LOSSES = {
  "semihard": losses.triplet_semihard_loss,
  "hard": losses.triplet_hard_loss,
  "all": losses.triplet_all_loss,
}


class MetricLearning(tasks.Task):
  """Triplet-loss embeddings over `config.model` (used as a backbone, num_classes=None)."""

  has_embeddings = True
  produces = frozenset({"count", "embedding", "label"})
  # The distance defines what the embedding means: another one is another experiment.
  state_keys = ("metric.distance",)

  @classmethod
  def config_defaults(cls):
    metric = ml_collections.ConfigDict()
    metric.loss = "semihard"
    metric.margin = 0.2
    metric.distance = "squared_l2"
    metric.embedding_dim = 64
    metric.examples_per_class = 8
    return {"metric": metric}

  @classmethod
  def choices(cls):
    return {"metric.loss": tuple(LOSSES), "metric.distance": losses.triplet.DISTANCES}

  @classmethod
  def default_evals(cls):
    return {"test": tasks.eval_config("retrieval", k=1)}

  def create_model(self):
    backbone = models.create(self.config.model, **self.backbone_kwargs(None))
    return heads.EmbeddingNet(backbone, self.config.metric.embedding_dim, self.dtype)

  def sampler_kwargs_for(self, num_devices):
    per_device = self.config.batch_size // num_devices
    k = self.config.metric.examples_per_class
    if per_device % k:
      raise UsageError(
        f"per-device batch {per_device} is not a multiple of "
        f"metric.examples_per_class={k}; change batch_size or K."
      )
    return {"classes_per_group": per_device // k, "examples_per_class": k}

  def preprocess(self, batch, rng, train):
    return inputs.prepare_batch(self, batch, rng, train)

  def embed(self, params, batch_stats, batch, rng, train):
    """L2-normalised embeddings [n, embedding_dim] of the images, and batch_stats."""
    variables = {"params": params, "batch_stats": batch_stats}
    return self.apply(variables, batch["image"], train=train, rng=rng)

  def embedding_loss(self, embeddings, batch):
    """The triplet loss of the shard's embeddings [B, D], mined over every device's."""
    metric = self.config.metric
    loss, metrics = LOSSES[metric.loss](
      embeddings,
      batch["label"],
      margin=metric.margin,
      distance=metric.distance,
      axis_name=AXIS,
      return_metrics=True,
    )
    return loss, dict(metrics)

  def loss_fn(self, params, batch_stats, batch, rng, train):
    embeddings, new_batch_stats = self.embed(params, batch_stats, batch, rng, train)
    loss, metrics = self.embedding_loss(embeddings, batch)
    return loss, (metrics, new_batch_stats)

  def eval_step(self, variables, batch):
    embeddings = self.model.apply(variables, batch["image"], train=False)
    return {"count": batch["valid"].astype(jnp.float32).sum()}, {
      "embedding": embeddings,
      "label": batch["label"],
    }


tasks.register("metric_learning", MetricLearning)
