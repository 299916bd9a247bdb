"""Image classification: cross-entropy with label smoothing, top-1/top-5 accuracy.

Config fields: `model`, `model_kwargs`, `label_smoothing` (default 0), `aux_loss_weight`
(weight of each auxiliary head's loss when the model returns (logits, aux1, ...) in
training: 0.3 as in GoogLeNet).
"""

import jax
import jax.numpy as jnp
import optax

from cnnjax import models
from cnnjax.evaluate import accuracy
from cnnjax.train import tasks
from cnnjax.train.tasks import inputs


def cross_entropy(logits: jax.Array, labels: jax.Array, num_classes: int,
                  label_smoothing: float = 0.0) -> jax.Array:
  """Per-example cross-entropy [B] of logits [B, K] against int labels [B]."""
  targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


class Classification(tasks.Task):
  """Softmax classifier over `config.model` with `data.num_classes` outputs."""

  def create_model(self):
    return models.create(self.config.model, **self.backbone_kwargs(self.data.num_classes))

  def preprocess(self, batch, rng, train):
    return inputs.prepare_batch(self, batch, rng, train)

  def loss_fn(self, params, batch_stats, batch, rng, train):
    variables = {"params": params, "batch_stats": batch_stats}
    outputs, new_batch_stats = self.apply(variables, batch["image"], train=train, rng=rng)
    logits, *aux_logits = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    smoothing = self.config.get("label_smoothing", 0.0)
    main_loss = cross_entropy(logits, batch["label"], self.data.num_classes, smoothing).mean()
    loss = main_loss
    aux_weight = self.config.get("aux_loss_weight", 0.3)
    for aux in aux_logits:
      loss = loss + aux_weight * cross_entropy(aux, batch["label"], self.data.num_classes,
                                               smoothing).mean()
    metrics = {"loss": loss, "main_loss": main_loss,
               "accuracy": accuracy.top_k_correct(logits, batch["label"], 1).mean()}
    return loss, (metrics, new_batch_stats)

  def eval_step(self, variables, batch):
    logits = self.model.apply(variables, batch["image"], train=False)
    valid = batch["valid"].astype(jnp.float32)
    losses = cross_entropy(logits, batch["label"], self.data.num_classes)
    sums = {"count": valid.sum(), "loss": (losses * valid).sum(),
            "top1": (accuracy.top_k_correct(logits, batch["label"], 1) * valid).sum()}
    if self.data.num_classes > 5:
      sums["top5"] = (accuracy.top_k_correct(logits, batch["label"], 5) * valid).sum()
    return sums, {}

  def finalize_eval(self, sums, outputs):
    del outputs
    count = max(float(sums["count"]), 1.0)
    metrics = {"accuracy": float(sums["top1"]) / count, "loss": float(sums["loss"]) / count,
               "count": float(sums["count"])}
    if "top5" in sums:
      metrics["top5_accuracy"] = float(sums["top5"]) / count
    return metrics


tasks.register("classification", Classification)
