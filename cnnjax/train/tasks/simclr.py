"""SimCLR: two augmented views per image, a projection head and NT-Xent over all devices.

Config section `simclr`:
  temperature: of NT-Xent (0.5 CIFAR, 0.1 ImageNet).
  projection_dim, hidden_dim: the 2-layer MLP head (hidden 0: the feature width).
  strength, blur: colour-jitter strength and Gaussian blur of the views (CIFAR: 0.5, no blur).
  block_size: blockwise NT-Xent for large batches (0: dense).
  knn_k, probe_epochs, probe_learning_rate: the evaluation.
Set `global_bn = True` for BatchNorm statistics over the global batch, as the paper does.
Views are drawn per example (keyed by global batch position), so the step gives the same
numbers on any number of devices. Evaluation: a linear probe trained on frozen features
of `train_split` and kNN accuracy, both on `eval_split`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from cnnjax import losses
from cnnjax import models
from cnnjax.data import augment
from cnnjax.evaluate import linear_probe
from cnnjax.evaluate import retrieval
from cnnjax.train import tasks
from cnnjax.train.tasks import inputs


class SimCLRNet(nn.Module):
  """x [N, H, W, C] -> (backbone features [N, F], projections [N, projection_dim])."""
  backbone: nn.Module
  projection_dim: int = 128
  hidden_dim: int = 0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
    features = self.backbone(x, train=train)
    hidden = nn.Dense(self.hidden_dim or features.shape[-1], dtype=self.dtype,
                      name="projection_hidden")(features)
    projections = nn.Dense(self.projection_dim, dtype=self.dtype,
                           name="projection")(nn.relu(hidden))
    return features, projections.astype(jnp.float32)


class SimCLR(tasks.Task):
  """Contrastive pretraining of `config.model` (used as a backbone, num_classes=None)."""

  has_embeddings = True

  @classmethod
  def config_defaults(cls):
    simclr = ml_collections.ConfigDict()
    simclr.temperature = 0.5
    simclr.projection_dim = 128
    simclr.hidden_dim = 0
    simclr.strength = 0.5
    simclr.blur = False
    simclr.block_size = 0
    simclr.knn_k = 5
    simclr.probe_epochs = 100
    simclr.probe_learning_rate = 1e-2
    return {"simclr": simclr}

  def create_model(self):
    backbone = models.create(self.config.model, **self.backbone_kwargs(None))
    return SimCLRNet(backbone, self.config.simclr.projection_dim,
                     self.config.simclr.hidden_dim, self.dtype)

  def preprocess(self, batch, rng, train):
    if not train:
      images = inputs.prepare_images(batch["image"], rng, False, self.config,
                                     self.input_shape[0], self.dtype)
      return {**batch, "image": images}
    mean, std = inputs.normalization(self.config)
    view1, view2 = tasks.per_example(
        augment.simclr_views, rng, batch["image"], self.input_shape[0],
        strength=self.config.simclr.strength, blur=self.config.simclr.blur, mean=mean, std=std)
    return {**batch, "view1": view1.astype(self.dtype), "view2": view2.astype(self.dtype)}

  def loss_fn(self, params, batch_stats, batch, rng, train):
    variables = {"params": params, "batch_stats": batch_stats}
    views = jnp.concatenate([batch["view1"], batch["view2"]])
    (_, projections), new_batch_stats = self.apply(variables, views, train=train, rng=rng)
    z1, z2 = jnp.split(projections, 2)
    simclr = self.config.simclr
    loss, metrics = losses.nt_xent_loss(z1, z2, simclr.temperature, axis_name=tasks.AXIS,
                                        block_size=simclr.block_size or None,
                                        return_metrics=True)
    return loss, (dict(metrics), new_batch_stats)

  def eval_step(self, variables, batch):
    features, _ = self.model.apply(variables, batch["image"], train=False)
    return {"count": batch["valid"].astype(jnp.float32).sum()}, {
        "embedding": features.astype(jnp.float32), "label": batch["label"]}

  def finalize_eval(self, sums, outputs):
    return {"count": float(sums["count"])}

  def evaluate(self, extract, variables):
    del variables
    _, train = extract(self.config.train_split)
    sums, test = extract(self.config.get("eval_split", "test"))
    self.last_outputs = test
    simclr = self.config.simclr
    return {
        "linear_probe_accuracy": linear_probe.linear_probe_accuracy(
            train["embedding"], train["label"], test["embedding"], test["label"],
            self.data.num_classes, epochs=simclr.probe_epochs,
            learning_rate=simclr.probe_learning_rate),
        "knn_accuracy": retrieval.knn_accuracy(train["embedding"], train["label"],
                                               test["embedding"], test["label"], simclr.knn_k),
        "count": float(sums["count"]),
    }


tasks.register("simclr", SimCLR)
