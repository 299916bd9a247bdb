"""On-device image preparation shared by the tasks: uint8 batches -> normalised floats.

`config.input` fields (all optional):
  size: side of the square model input; default the stored image side.
  resize: side the stored image is resized to before zero-padding to `size` (LeNet-5
    reads 8x8 digits as 28x28 digits centred in 32x32, like MNIST); default `size`.
  augment: training augmentation from `cnnjax.data.augment`: "none", "cifar" (pad 4,
    crop, flip; applied to the resized and padded model input) or "inception" (random
    resized crop and flip of the stored image), or "shift" (pad and crop, no flip: digits).
  pad: zero padding of "cifar" and "shift" before the random crop; default 4.
  center_crop: evaluate on a resize + central crop (ImageNet protocol) instead of a resize.
  mean, std: per-channel normalisation in [0, 1] units; empty (the default): the dataset's
    statistics from `cnnjax.data.augment.DATASET_STATS`, else 0.5 and 0.5.

Segmentation and detection move their targets with the image only through `size` and
their own random flips; `check_targets_follow` refuses the other geometric options there.
"""

from typing import Any

import jax
import jax.numpy as jnp

from cnnjax.data import augment
from cnnjax.errors import UsageError
from cnnjax.train import tasks

AUGMENTATIONS = ("none", "shift", "cifar", "inception")


def normalization(input_config: Any, dataset: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """(mean, std) per channel for `dataset`, overridable in `config.input`.

  An empty `input.mean` or `input.std` (the config default is `()`) takes the dataset's
  statistics; TFDS versions and configs ("cifar10:3.0.2", "mnist/x") share their base name's.
  """
  mean, std = input_config.mean, input_config.std
  if not mean or not std:
    base = dataset.split(":")[0].split("/")[0]
    stats = augment.DATASET_STATS.get(base)
    if stats is not None:
      mean, std = (mean or stats[0]), (std or stats[1])
  return tuple(mean or (0.5,)), tuple(std or (0.5,))


def resize_and_pad(images: jax.Array, resize: int, size: int) -> jax.Array:
  """images: [B, H, W, C] -> [B, size, size, C], resized to `resize` and zero-padded."""
  b, h, w, c = images.shape
  if (h, w) != (resize, resize):
    images = jax.image.resize(images, (b, resize, resize, c), method="bilinear")
  pad = size - resize
  if pad < 0:
    raise UsageError(f"input.resize={resize} exceeds input.size={size}; make resize <= size.")
  if pad:
    images = jnp.pad(
      images, ((0, 0), (pad // 2, pad - pad // 2), (pad // 2, pad - pad // 2), (0, 0))
    )
  return images


def prepare_images(
  images: jax.Array,
  rng: jax.Array,
  train: bool,
  input_config: Any,
  dataset: str,
  size: int,
  dtype: jnp.dtype,
) -> jax.Array:
  """images: uint8 [B, H, W, C] -> normalised `dtype` [B, size, size, C].

  Args:
    images: uint8 [B, H, W, C].
    rng: the step's key (per-example keys come from it).
    train: apply `input_config.augment`.
    input_config: `config.input`.
    dataset: `config.dataset`, whose statistics normalise when `input_config` has none.
    size: side of the model input.
    dtype: of the result.
  """
  recipe = input_config.augment if train else "none"
  pad = input_config.pad
  x = images.astype(jnp.float32) / 255.0
  if recipe == "inception":
    x = tasks.per_example(augment.inception_train, rng, x, size)
  elif not train and input_config.center_crop:
    x = augment.eval_resize_center_crop(x, size)
  x = resize_and_pad(x, input_config.resize or size, size)
  if recipe == "cifar":  # On the model input, so the shift is `pad` of its pixels.
    x = tasks.per_example(augment.cifar_train, rng, x, pad)
  elif recipe == "shift":
    crop = augment.pad_and_random_crop
    x = jax.vmap(lambda key, image: crop(key, image, pad))(tasks.example_keys(rng, len(x)), x)
  mean, std = normalization(input_config, dataset)
  x = (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
  return x.astype(dtype)


def check_targets_follow(config: Any, targets: str) -> None:
  """UsageError when `config.input` moves image pixels in a way `targets` would not follow.

  `prepare_images` crops, shifts and pads the image alone; tasks whose labels are positions
  in the image (masks, boxes) only resize them to `input.size` and flip them with the image.

  Args:
    config: the experiment config.
    targets: what the task's labels are, for the message, e.g. "segmentation masks".
  """
  input_config = config.input
  recipe, resize = input_config.augment, input_config.resize
  if recipe != "none":
    problem = f"input.augment={recipe!r} crops and shifts the images"
  elif input_config.center_crop:
    problem = "input.center_crop crops the images"
  elif resize and resize != input_config.size:
    problem = f"input.resize={resize} shrinks the images inside zero padding"
  else:
    return
  raise UsageError(
    f"{problem} but not the {targets}; set input.augment='none', "
    "input.center_crop=False and input.resize=0 (the task flips both itself)."
  )


def prepare_batch(task: tasks.Task, batch: tasks.Batch, rng: jax.Array, train: bool) -> tasks.Batch:
  """`batch` with 'image' prepared for `task`'s model: uint8 [B, H, W, C] -> [B, h, w, c]."""
  images = prepare_images(
    batch["image"],
    rng,
    train,
    task.config.input,
    task.config.dataset,
    task.input_shape[0],
    task.dtype,
  )
  return {**batch, "image": images}
