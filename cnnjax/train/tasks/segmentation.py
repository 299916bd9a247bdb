"""Semantic segmentation: per-pixel cross-entropy plus soft Dice, mIoU and pixel accuracy.

The batch needs 'image' uint8 [B, H, W, C] and 'mask' uint8 [B, H, W] (0 = background).
Config section `segmentation`:
  num_classes: classes of the mask including background; 0: the dataset's classes + 1
    (shapes: background + 3 shapes). oxford_iiit_pet trimaps need 3.
  ignore_index: a mask value left out of loss and metrics; -1: none.
  dice_weight: weight of the soft Dice loss added to the cross-entropy.
  random_flip: flip image and mask together at random in training.
Masks follow the image's resize to `input.size` and these flips; the image-only geometry
of `config.input` (augment, center_crop, resize) is refused. The eval step sums a confusion
matrix; the default evaluator, "test" of kind "miou", reports mIoU, per-class IoU and pixel
accuracy.

Models whose output is smaller than their input (the original valid-padded U-Net) are
compared with the centre of the mask, the part of the image they see whole.
"""

import jax
import jax.numpy as jnp
import ml_collections

from cnnjax import models
from cnnjax.errors import UsageError
from cnnjax.evaluate import segmentation as seg_metrics
from cnnjax.losses import segmentation as seg_losses
from cnnjax.train import tasks
from cnnjax.train.tasks import inputs


def center_crop_mask(mask: jax.Array, height: int, width: int) -> jax.Array:
  """mask: [B, H, W] -> [B, height, width] about the centre."""
  top = (mask.shape[1] - height) // 2
  left = (mask.shape[2] - width) // 2
  return mask[:, top : top + height, left : left + width]


class Segmentation(tasks.Task):
  """Per-pixel classification of `config.model` (e.g. `unet_same`)."""

  produces = frozenset({"confusion", "loss", "pixels"})

  @classmethod
  def config_defaults(cls):
    section = ml_collections.ConfigDict()
    section.num_classes = 0
    section.ignore_index = -1
    section.dice_weight = 1.0
    section.random_flip = True
    return {"segmentation": section}

  @classmethod
  def default_evals(cls):
    return {"test": tasks.eval_config("miou")}

  @property
  def num_classes(self) -> int:
    return self.config.segmentation.num_classes or self.data.num_classes + 1

  @property
  def ignore_index(self) -> int | None:
    value = self.config.segmentation.ignore_index
    return None if value < 0 else value

  def create_model(self):
    if "mask" not in self.data.features:
      raise UsageError(
        f"dataset {self.config.dataset} has no segmentation masks; use shapes, "
        "oxford_iiit_pet or another dataset with a 'mask' feature."
      )
    inputs.check_targets_follow(self.config, "segmentation masks")
    return models.create(self.config.model, **self.backbone_kwargs(self.num_classes))

  def preprocess(self, batch, rng, train):
    size = self.input_shape[0]
    images = inputs.prepare_images(
      batch["image"], rng, train, self.config.input, self.config.dataset, size, self.dtype
    )
    mask = batch["mask"].astype(jnp.int32)
    if mask.shape[1:3] != (size, size):
      mask = jax.image.resize(mask, (mask.shape[0], size, size), method="nearest")
    if train and self.config.segmentation.random_flip:
      flip = jax.vmap(lambda key: jax.random.bernoulli(key, 0.5))(
        tasks.example_keys(jax.random.fold_in(rng, 1), images.shape[0])
      )
      images = jnp.where(flip[:, None, None, None], images[:, :, ::-1], images)
      mask = jnp.where(flip[:, None, None], mask[:, :, ::-1], mask)
    return {**batch, "image": images, "mask": mask}

  def _logits_and_mask(self, outputs, mask):
    return outputs, center_crop_mask(mask, outputs.shape[1], outputs.shape[2])

  def loss_fn(self, params, batch_stats, batch, rng, train):
    variables = {"params": params, "batch_stats": batch_stats}
    outputs, new_batch_stats = self.apply(variables, batch["image"], train=train, rng=rng)
    logits, mask = self._logits_and_mask(outputs, batch["mask"])
    ce = seg_losses.pixel_cross_entropy(logits, mask, self.ignore_index)
    dice = seg_losses.soft_dice_loss(logits, mask, self.ignore_index)
    loss = ce + self.config.segmentation.dice_weight * dice
    confusion = seg_metrics.confusion_matrix(
      jnp.argmax(logits, -1), mask, self.num_classes, self.ignore_index
    )
    metrics = {
      "loss": loss,
      "cross_entropy": ce,
      "dice_loss": dice,
      "pixel_accuracy": jnp.trace(confusion) / jnp.maximum(jnp.sum(confusion), 1),
    }
    return loss, (metrics, new_batch_stats)

  def eval_step(self, variables, batch):
    outputs = self.model.apply(variables, batch["image"], train=False)
    logits, mask = self._logits_and_mask(outputs, batch["mask"])
    valid = batch["valid"].astype(jnp.float32)[:, None, None]
    confusion = seg_metrics.confusion_matrix(
      jnp.argmax(logits, -1), mask, self.num_classes, self.ignore_index, weights=valid
    )
    ce = seg_losses.pixel_cross_entropy(logits, mask, self.ignore_index, reduction="none")
    # Integer counts: a float32 sum stops counting at 2^24 pixels (64 images of 512x512).
    counted = jnp.broadcast_to(valid > 0, mask.shape)
    if self.ignore_index is not None:
      counted &= mask != self.ignore_index
    return {
      "confusion": confusion,
      "loss": jnp.sum(ce * valid),
      "pixels": jnp.sum(counted, dtype=jnp.int32),
    }, {}


tasks.register("segmentation", Segmentation)
