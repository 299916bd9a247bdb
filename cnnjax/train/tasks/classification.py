"""Image classification: cross-entropy with label smoothing, top-1/top-5 accuracy.

Config fields: `model`, `model_kwargs`, `label_smoothing`, `aux_loss_weight` (weight of
each auxiliary head's loss when the model returns (logits, aux1, ...) in training: 0.3
as in GoogLeNet). Evaluator: "accuracy".
"""

import jax.numpy as jnp

from cnnjax import losses
from cnnjax import models
from cnnjax.evaluate import accuracy
from cnnjax.train import tasks
from cnnjax.train.tasks import inputs


class Classification(tasks.Task):
  """Softmax classifier over `config.model` with `data.num_classes` outputs."""

  produces = frozenset({"count", "loss", "top1", "top5"})

  @classmethod
  def default_evals(cls):
    return {"test": tasks.eval_config("accuracy")}

  def create_model(self):
    return models.create(self.config.model, **self.backbone_kwargs(self.data.num_classes))

  def preprocess(self, batch, rng, train):
    return inputs.prepare_batch(self, batch, rng, train)

  def loss_fn(self, params, batch_stats, batch, rng, train):
    variables = {"params": params, "batch_stats": batch_stats}
    outputs, new_batch_stats = self.apply(variables, batch["image"], train=train, rng=rng)
    loss, main_loss = losses.classification_loss(
      outputs, batch["label"], self.config.label_smoothing, self.config.aux_loss_weight
    )
    logits = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
    metrics = {
      "loss": loss,
      "main_loss": main_loss,
      "accuracy": accuracy.top_k_correct(logits, batch["label"], 1).mean(),
    }
    return loss, (metrics, new_batch_stats)

  def eval_step(self, variables, batch):
    logits = self.model.apply(variables, batch["image"], train=False)
    valid = batch["valid"].astype(jnp.float32)
    per_example = losses.cross_entropy(logits, batch["label"], reduction="none")
    sums = {
      "count": valid.sum(),
      "loss": (per_example * valid).sum(),
      "top1": (accuracy.top_k_correct(logits, batch["label"], 1) * valid).sum(),
    }
    if self.data.num_classes > 5:
      sums["top5"] = (accuracy.top_k_correct(logits, batch["label"], 5) * valid).sum()
    return sums, {}


tasks.register("classification", Classification)
