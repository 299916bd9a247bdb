"""SimCLR: two augmented views per image, a projection head and NT-Xent over all devices.

Config section `simclr`:
  temperature: of NT-Xent (0.5 CIFAR, 0.1 ImageNet).
  projection_dim, hidden_dim: the 2-layer MLP head (hidden 0: the feature width).
  strength, blur: colour-jitter strength and Gaussian blur of the views (CIFAR: 0.5, no blur).
  block_size: views per block of NT-Xent (0: the loss's default, 1024); never dense.
Set `global_bn = True` for BatchNorm statistics over the global batch, as the paper does.
Views are drawn per example (keyed by global batch position), so the step gives the same
numbers on any number of devices. The eval step gives the backbone's features of each
image ("embedding"); the default evaluators are kNN accuracy ("knn", k = 5) and the
linear probe of the paper ("probe", on frozen features of `train_split`), both on the
test split; the probe's 100 epochs run at the end only.
"""

import jax.numpy as jnp
import ml_collections

from cnnjax import losses
from cnnjax import models
from cnnjax.axis import AXIS
from cnnjax.data import augment
from cnnjax.models import heads
from cnnjax.train import tasks
from cnnjax.train.tasks import inputs


class SimCLR(tasks.Task):
  """Contrastive pretraining of `config.model` (used as a backbone, num_classes=None)."""

  has_embeddings = True
  produces = frozenset({"count", "embedding", "label"})

  @classmethod
  def config_defaults(cls):
    simclr = ml_collections.ConfigDict()
    simclr.temperature = 0.5
    simclr.projection_dim = 128
    simclr.hidden_dim = 0
    simclr.strength = 0.5
    simclr.blur = False
    simclr.block_size = 0
    return {"simclr": simclr}

  @classmethod
  def default_evals(cls):
    return {
      "knn": tasks.eval_config("knn", k=5),
      "probe": tasks.eval_config("linear_probe", epochs=100, learning_rate=1e-2),
    }

  def create_model(self):
    backbone = models.create(self.config.model, **self.backbone_kwargs(None))
    return heads.ProjectionNet(
      backbone, self.config.simclr.projection_dim, self.config.simclr.hidden_dim, self.dtype
    )

  def preprocess(self, batch, rng, train):
    if not train:
      images = inputs.prepare_images(
        batch["image"],
        rng,
        False,
        self.config.input,
        self.config.dataset,
        self.input_shape[0],
        self.dtype,
      )
      return {**batch, "image": images}
    mean, std = inputs.normalization(self.config.input, self.config.dataset)
    view1, view2 = tasks.per_example(
      augment.simclr_views,
      rng,
      batch["image"],
      self.input_shape[0],
      strength=self.config.simclr.strength,
      blur=self.config.simclr.blur,
      mean=mean,
      std=std,
    )
    return {**batch, "view1": view1.astype(self.dtype), "view2": view2.astype(self.dtype)}

  def embed(self, params, batch_stats, batch, rng, train):
    """Projections of both views [n, 2, projection_dim] of each example, and batch_stats."""
    variables = {"params": params, "batch_stats": batch_stats}
    views = jnp.concatenate([batch["view1"], batch["view2"]])
    (_, projections), new_batch_stats = self.apply(variables, views, train=train, rng=rng)
    return jnp.stack(jnp.split(projections, 2), axis=1), new_batch_stats

  def embedding_loss(self, embeddings, batch):
    """NT-Xent of the shard's view pairs [B, 2, D] against every device's views."""
    del batch
    simclr = self.config.simclr
    loss, metrics = losses.nt_xent_loss(
      embeddings[:, 0],
      embeddings[:, 1],
      simclr.temperature,
      axis_name=AXIS,
      block_size=simclr.block_size or None,
      return_metrics=True,
    )
    return loss, dict(metrics)

  def loss_fn(self, params, batch_stats, batch, rng, train):
    embeddings, new_batch_stats = self.embed(params, batch_stats, batch, rng, train)
    loss, metrics = self.embedding_loss(embeddings, batch)
    return loss, (metrics, new_batch_stats)

  def eval_step(self, variables, batch):
    features, _ = self.model.apply(variables, batch["image"], train=False)
    return {"count": batch["valid"].astype(jnp.float32).sum()}, {
      "embedding": features.astype(jnp.float32),
      "label": batch["label"],
    }


tasks.register("simclr", SimCLR)
