"""Losses as pure array functions: jit- and grad-safe, NaN-free on legal batches, multi-device.

Cross-device convention (every loss with `axis_name` and reduction 'mean' or 'sum'):
each device computes the terms of its own anchors against the gathered global batch, and
the returned value is the loss of the whole global batch, identical on every device.
Gradients are exact under the usual data-parallel step, `grads = jax.lax.pmean(grads,
axis_name)` of the per-device gradients, in every mode:

- `jax.pmap` and `jax.shard_map(..., check_vma=False)` (pmap semantics, as
  `cnnjax.train.parallel` runs): the value's gradient on each device is `num_devices`
  times the gradient of this device's share. The share of every device reaches the
  embeddings of every other device through the transpose of `all_gather` (a
  `psum_scatter`), so the gradient with respect to a device's embedding shard is
  `num_devices` times the global loss's gradient for that shard, and the pmean of the
  parameter gradients is exactly the single-device gradient. (NT-Xent's default form
  gathers each view's cotangent / row sum in its custom VJP instead; the result is the
  same.)
- `jax.shard_map` with `check_vma=True` (its default), where JAX tracks which values vary
  over the axis: the value is a plain `psum` of the shares, whose transpose JAX derives
  exactly; the gradient with respect to a device's embedding shard is exactly the global
  loss's gradient for that shard, replicated parameters get the exact global gradient, and
  a further pmean leaves it unchanged.
"""

from cnnjax.losses.classification import classification_loss
from cnnjax.losses.classification import cross_entropy
from cnnjax.losses.contrastive import nt_xent_loss
from cnnjax.losses.detection import fast_rcnn_loss
from cnnjax.losses.detection import smooth_l1
from cnnjax.losses.detection import yolo_v1_loss
from cnnjax.losses.segmentation import pixel_cross_entropy
from cnnjax.losses.segmentation import soft_dice_loss
from cnnjax.losses.triplet import pairwise_distances
from cnnjax.losses.triplet import triplet_all_loss
from cnnjax.losses.triplet import triplet_hard_loss
from cnnjax.losses.triplet import triplet_semihard_loss

__all__ = [
  "classification_loss",
  "cross_entropy",
  "fast_rcnn_loss",
  "nt_xent_loss",
  "pairwise_distances",
  "pixel_cross_entropy",
  "smooth_l1",
  "soft_dice_loss",
  "triplet_all_loss",
  "triplet_hard_loss",
  "triplet_semihard_loss",
  "yolo_v1_loss",
]
