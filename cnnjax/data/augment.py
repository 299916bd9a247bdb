"""On-device image augmentation in JAX: jit- and vmap-safe, one PRNG key per example.

Single-image functions take `(key, image)` with image [H, W, C] float32 in [0, 1] and return
float32 in [0, 1]; every shape is static, so they compose under `jax.jit` and `jax.vmap`.
The batched recipes at the bottom split one key into one key per example and vmap:

  simclr_views             two independent SimCLR views (random resized crop, flip, colour
                           jitter, grayscale, blur); CIFAR: `strength=0.5, blur=False`.
  cifar_train              4-pixel zero pad + random crop + horizontal flip.
  inception_train          random resized crop (area 0.08-1, aspect 3/4-4/3) + flip.
  eval_resize_center_crop  resize the shorter side to size / 0.875, then a central crop.

Recipes accept uint8 images (divided by 255) or float images in [0, 1], and return float32 in
[0, 1], or normalised by `mean`/`std` when given (see `DATASET_STATS`).
"""

from collections.abc import Sequence
import math

import jax
import jax.numpy as jnp

from cnnjax.errors import UsageError

Size = int | tuple[int, int]

# Per-channel mean and std of images scaled to [0, 1], on each dataset's training split.
DATASET_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
  "imagenet2012": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
  "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
  "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
  "mnist": ((0.1307,), (0.3081,)),
  "fashion_mnist": ((0.2860,), (0.3530,)),
  "digits": ((0.3053,), (0.3760,)),
}

# ITU-R 601-2 luma, as torchvision's rgb_to_grayscale.
_LUMA = (0.2989, 0.587, 0.114)


def _pair(size: Size) -> tuple[int, int]:
  return (size, size) if isinstance(size, int) else tuple(size)


def _check_colour(image: jnp.ndarray, what: str) -> None:
  if image.shape[-1] not in (1, 3):
    raise UsageError(
      f"{what} needs 1 or 3 channels, got {image.shape[-1]}; "
      "drop extra channels before colour augmentation."
    )


def _resample(
  image: jnp.ndarray, out_size: tuple[int, int], scale: jnp.ndarray, translation: jnp.ndarray
) -> jnp.ndarray:
  """Bilinear, antialiased resampling mapping input point p to output point p * scale + t.

  image: [H, W, C] -> [out_h, out_w, C]. Coordinates are continuous, pixel centres at i + 0.5.
  """
  out_shape = (*out_size, image.shape[-1])
  resampled = jax.image.scale_and_translate(
    image, out_shape, (0, 1), scale, translation, method="linear", antialias=True
  )
  return jnp.clip(resampled, 0.0, 1.0)


def _crop_and_resize(image: jnp.ndarray, box: jnp.ndarray, size: tuple[int, int]) -> jnp.ndarray:
  """Resamples the box [top, left, height, width] (float pixels) of image [H, W, C] to `size`."""
  top, left, height, width = box
  scale = jnp.array([size[0] / height, size[1] / width])
  return _resample(image, size, scale, -jnp.array([top, left]) * scale)


def random_resized_crop(
  key: jax.Array,
  image: jnp.ndarray,
  size: Size,
  area: tuple[float, float] = (0.08, 1.0),
  aspect: tuple[float, float] = (3 / 4, 4 / 3),
  tries: int = 10,
) -> jnp.ndarray:
  """Inception-style crop: a random box of `area` x the image and aspect `aspect`, resized.

  As torchvision's RandomResizedCrop: `tries` boxes are drawn at once (static shapes) and the
  first that fits inside the image is used; if none fits, the central box with the aspect
  ratio clipped to `aspect`. Box corners are continuous (no rounding to whole pixels).

  image: [H, W, C] float in [0, 1] -> [size_h, size_w, C].
  """
  h, w = image.shape[:2]
  key_area, key_aspect, key_pos = jax.random.split(key, 3)
  target_area = h * w * jax.random.uniform(key_area, (tries,), minval=area[0], maxval=area[1])
  log_aspect = jax.random.uniform(
    key_aspect, (tries,), minval=math.log(aspect[0]), maxval=math.log(aspect[1])
  )
  ratio = jnp.exp(log_aspect)
  widths = jnp.sqrt(target_area * ratio)
  heights = jnp.sqrt(target_area / ratio)
  fits = (widths <= w) & (heights <= h)
  first = jnp.argmax(fits)

  # The fallback: the whole image, narrowed to the nearest allowed aspect ratio.
  image_ratio = w / h
  if image_ratio < aspect[0]:
    fallback = (w / aspect[0], float(w))
  elif image_ratio > aspect[1]:
    fallback = (float(h), h * aspect[1])
  else:
    fallback = (float(h), float(w))
  crop_h = jnp.where(fits[first], heights[first], fallback[0])
  crop_w = jnp.where(fits[first], widths[first], fallback[1])
  position = jax.random.uniform(key_pos, (2,))
  centred = jnp.array([0.5, 0.5])
  position = jnp.where(fits[first], position, centred)
  top = position[0] * (h - crop_h)
  left = position[1] * (w - crop_w)
  return _crop_and_resize(image, jnp.stack([top, left, crop_h, crop_w]), _pair(size))


def pad_and_random_crop(key: jax.Array, image: jnp.ndarray, pad: int = 4) -> jnp.ndarray:
  """Zero-pads `pad` pixels on every side and crops back to the original size at random.

  image: [H, W, C] -> [H, W, C].
  """
  h, w, c = image.shape
  padded = jnp.pad(image, ((pad, pad), (pad, pad), (0, 0)))
  top, left = jax.random.randint(key, (2,), 0, 2 * pad + 1)
  return jax.lax.dynamic_slice(padded, (top, left, 0), (h, w, c))


def random_flip(key: jax.Array, image: jnp.ndarray, prob: float = 0.5) -> jnp.ndarray:
  """Mirrors left-right with probability `prob`. image: [H, W, C] -> [H, W, C]."""
  return jnp.where(jax.random.uniform(key) < prob, image[:, ::-1], image)


def resize(image: jnp.ndarray, size: Size) -> jnp.ndarray:
  """Bilinear, antialiased resize; an int resizes the shorter side, keeping the aspect ratio.

  image: [H, W, C] -> [size_h, size_w, C] (for an int, as torchvision's Resize(int)).
  """
  h, w, c = image.shape
  if isinstance(size, int):
    short, long = (h, w) if h <= w else (w, h)
    new_long = int(size * long / short)
    size = (size, new_long) if h <= w else (new_long, size)
  return jnp.clip(jax.image.resize(image, (*size, c), method="linear", antialias=True), 0.0, 1.0)


def center_crop(image: jnp.ndarray, size: Size, crop_fraction: float = 0.875) -> jnp.ndarray:
  """The central `crop_fraction` of the shorter side, resized to `size`, in one resampling.

  The same as resizing the shorter side to size / crop_fraction (256 for 224) and cropping
  the centre, as torchvision's eval transform, without rounding the intermediate size.

  image: [H, W, C] -> [size_h, size_w, C].
  """
  h, w = image.shape[:2]
  out = _pair(size)
  scale = max(out) / (crop_fraction * min(h, w))
  translation = jnp.array([out[0] / 2 - h / 2 * scale, out[1] / 2 - w / 2 * scale])
  return _resample(image, out, jnp.array([scale, scale]), translation)


def _grayscale(image: jnp.ndarray) -> jnp.ndarray:
  """[H, W, 3 or 1] -> [H, W, 1] luma."""
  if image.shape[-1] == 1:
    return image
  return jnp.tensordot(image, jnp.array(_LUMA, image.dtype), axes=(-1, 0))[..., None]


def rgb_to_hsv(image: jnp.ndarray) -> jnp.ndarray:
  """[..., 3] RGB in [0, 1] -> [..., 3] HSV, each in [0, 1] (hue as a fraction of a turn)."""
  r, g, b = image[..., 0], image[..., 1], image[..., 2]
  value = jnp.max(image, axis=-1)
  delta = value - jnp.min(image, axis=-1)
  saturation = jnp.where(value > 0, delta / jnp.where(value > 0, value, 1.0), 0.0)
  safe_delta = jnp.where(delta > 0, delta, 1.0)
  hue = jnp.where(
    value == r,
    (g - b) / safe_delta,
    jnp.where(value == g, (b - r) / safe_delta + 2.0, (r - g) / safe_delta + 4.0),
  )
  hue = jnp.where(delta > 0, jnp.mod(hue / 6.0, 1.0), 0.0)
  return jnp.stack([hue, saturation, value], axis=-1)


def hsv_to_rgb(image: jnp.ndarray) -> jnp.ndarray:
  """[..., 3] HSV in [0, 1] -> [..., 3] RGB in [0, 1]."""
  hue, saturation, value = image[..., 0:1], image[..., 1:2], image[..., 2:3]
  k = jnp.mod(jnp.array([5.0, 3.0, 1.0]) + hue * 6.0, 6.0)
  return value - value * saturation * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)


def _blend(image: jnp.ndarray, other: jnp.ndarray, factor: jnp.ndarray) -> jnp.ndarray:
  return jnp.clip(factor * image + (1.0 - factor) * other, 0.0, 1.0)


def color_jitter(
  key: jax.Array, image: jnp.ndarray, strength: float, prob: float = 0.8
) -> jnp.ndarray:
  """SimCLR's colour distortion: with probability `prob`, jitter in a random order.

  Brightness, contrast and saturation factors are drawn from [1 - 0.8 s, 1 + 0.8 s] and the
  hue shift from [-0.2 s, 0.2 s] of a turn (s = strength), with torchvision's ColorJitter
  semantics (brightness scales, contrast blends with the mean luma, saturation blends with
  the grayscale image); each step clips to [0, 1]. Strength 0 is the identity. On
  one-channel images saturation and hue are the identity.

  image: [H, W, C] float in [0, 1], C in {1, 3} -> [H, W, C].
  """
  _check_colour(image, "color_jitter")
  key_apply, key_order, key_factors = jax.random.split(key, 3)
  spread = 0.8 * strength
  brightness, contrast, saturation = jax.random.uniform(
    key_factors, (3,), minval=jnp.maximum(0.0, 1.0 - spread), maxval=1.0 + spread
  )
  hue_shift = jax.random.uniform(
    jax.random.fold_in(key_factors, 1), minval=-0.2 * strength, maxval=0.2 * strength
  )

  def adjust_brightness(x):
    return jnp.clip(x * brightness, 0.0, 1.0)

  def adjust_contrast(x):
    return _blend(x, jnp.mean(_grayscale(x)), contrast)

  def adjust_saturation(x):
    return _blend(x, _grayscale(x), saturation)

  def adjust_hue(x):
    if x.shape[-1] == 1:
      return x
    hsv = rgb_to_hsv(x)
    hsv = hsv.at[..., 0].set(jnp.mod(hsv[..., 0] + hue_shift, 1.0))
    return jnp.clip(hsv_to_rgb(hsv), 0.0, 1.0)

  # A random order of the four steps. Under vmap a switch on the step would compute every
  # step in every slot; hue (an HSV round trip) costs most, so it runs once, with the cheap
  # steps drawn before it in the slots before its slot and after it in the slots after.
  cheap_steps = (adjust_brightness, adjust_contrast, adjust_saturation)
  order = jax.random.permutation(key_order, len(cheap_steps) + 1)
  hue_slot = jnp.argmax(order == len(cheap_steps))

  def cheap_slots(x, slots, before_hue):
    for slot in slots:
      active = slot < hue_slot if before_hue else slot > hue_slot
      for index, step in enumerate(cheap_steps):
        x = jnp.where(active & (order[slot] == index), step(x), x)
    return x

  jittered = cheap_slots(image, range(3), before_hue=True)
  jittered = cheap_slots(adjust_hue(jittered), range(1, 4), before_hue=False)
  return jnp.where(jax.random.uniform(key_apply) < prob, jittered, image)


def random_grayscale(key: jax.Array, image: jnp.ndarray, prob: float = 0.2) -> jnp.ndarray:
  """With probability `prob`, replaces every channel by the luma. [H, W, C] -> [H, W, C]."""
  _check_colour(image, "random_grayscale")
  gray = jnp.broadcast_to(_grayscale(image), image.shape)
  return jnp.where(jax.random.uniform(key) < prob, gray, image)


def gaussian_blur(
  key: jax.Array,
  image: jnp.ndarray,
  sigma: tuple[float, float] = (0.1, 2.0),
  kernel_fraction: float = 0.1,
  prob: float = 0.5,
) -> jnp.ndarray:
  """With probability `prob`, a separable Gaussian blur with sigma uniform in `sigma`.

  As SimCLR, the kernel spans `kernel_fraction` of the height (23 taps at 224 pixels: radius
  height * fraction // 2); edges are reflected. The kernel sums to one, so values stay in
  [0, 1]. An image too small for a one-pixel radius is returned unchanged.

  image: [H, W, C] -> [H, W, C].
  """
  h, w, _ = image.shape
  radius = int(h * kernel_fraction) // 2
  if radius == 0:
    return image
  key_apply, key_sigma = jax.random.split(key)
  std = jax.random.uniform(key_sigma, minval=sigma[0], maxval=sigma[1])
  taps = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  kernel = jnp.exp(-0.5 * (taps / std) ** 2)
  kernel = kernel / jnp.sum(kernel)
  padded = jnp.pad(image, ((radius, radius), (radius, radius), (0, 0)), mode="reflect")
  # Separable, as a weighted sum of shifted copies: XLA fuses it into one loop per axis, far
  # faster on CPU than the grouped convolution that vmap makes of a per-example kernel.
  rows = sum(kernel[t] * padded[t : t + h] for t in range(2 * radius + 1))
  blurred = sum(kernel[t] * rows[:, t : t + w] for t in range(2 * radius + 1))
  return jnp.where(jax.random.uniform(key_apply) < prob, blurred, image)


def normalize(images: jnp.ndarray, mean: Sequence[float], std: Sequence[float]) -> jnp.ndarray:
  """(images - mean) / std per channel. images: [..., C] -> [..., C] float32."""
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  if mean.shape[-1] not in (1, images.shape[-1]) or std.shape != mean.shape:
    raise UsageError(
      f"mean {tuple(mean.tolist())} and std {tuple(std.tolist())} must have one "
      f"value per channel ({images.shape[-1]}) or a single value."
    )
  return (images.astype(jnp.float32) - mean) / std


def _to_unit(images: jnp.ndarray) -> jnp.ndarray:
  """uint8 images -> float32 / 255; float images are taken to be in [0, 1] already."""
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


def _check_stats(mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
  if (mean is None) != (std is None):
    raise UsageError("pass both mean and std to normalise, or neither to keep [0, 1].")


def _finish(
  images: jnp.ndarray, mean: Sequence[float] | None, std: Sequence[float] | None
) -> jnp.ndarray:
  return images if mean is None else normalize(images, mean, std)


def _per_example(key: jax.Array, images: jnp.ndarray, augment) -> jnp.ndarray:
  """Applies augment(key, image) to images [B, H, W, C] with one key per example."""
  return jax.vmap(augment)(jax.random.split(key, images.shape[0]), _to_unit(images))


def simclr_views(
  key: jax.Array,
  images: jnp.ndarray,
  size: Size,
  strength: float = 1.0,
  blur: bool = True,
  mean: Sequence[float] | None = None,
  std: Sequence[float] | None = None,
) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Two independent SimCLR views of every image (the paper's recipe, ANCHORS.md).

  Each view: random resized crop (area 0.08-1, aspect 3/4-4/3) to `size`, flip, colour
  jitter of `strength` with p 0.8, grayscale with p 0.2, and Gaussian blur with p 0.5 when
  `blur` (ImageNet); CIFAR uses strength 0.5 and no blur.

  images: [B, H, W, C] uint8 or float in [0, 1] -> two [B, size_h, size_w, C] float32 arrays,
  in [0, 1] or normalised by mean/std when given.
  """
  _check_stats(mean, std)

  def view(example_key, image):
    keys = jax.random.split(example_key, 5)
    image = random_resized_crop(keys[0], image, size)
    image = random_flip(keys[1], image)
    image = color_jitter(keys[2], image, strength, prob=0.8)
    image = random_grayscale(keys[3], image, prob=0.2)
    if blur:
      image = gaussian_blur(keys[4], image, prob=0.5)
    return image

  key1, key2 = jax.random.split(key)
  return (
    _finish(_per_example(key1, images, view), mean, std),
    _finish(_per_example(key2, images, view), mean, std),
  )


def cifar_train(
  key: jax.Array,
  images: jnp.ndarray,
  pad: int = 4,
  mean: Sequence[float] | None = None,
  std: Sequence[float] | None = None,
) -> jnp.ndarray:
  """The ResNet-paper CIFAR recipe: zero-pad `pad` pixels, random crop back, random flip.

  images: [B, H, W, C] uint8 or float in [0, 1] -> [B, H, W, C] float32 ([0, 1] or normalised).
  """
  _check_stats(mean, std)

  def augment(example_key, image):
    key_crop, key_flip = jax.random.split(example_key)
    return random_flip(key_flip, pad_and_random_crop(key_crop, image, pad))

  return _finish(_per_example(key, images, augment), mean, std)


def inception_train(
  key: jax.Array,
  images: jnp.ndarray,
  size: Size,
  area: tuple[float, float] = (0.08, 1.0),
  mean: Sequence[float] | None = None,
  std: Sequence[float] | None = None,
) -> jnp.ndarray:
  """The standard ImageNet training recipe: random resized crop to `size` + random flip.

  images: [B, H, W, C] uint8 or float in [0, 1] -> [B, size_h, size_w, C] float32.
  """
  _check_stats(mean, std)

  def augment(example_key, image):
    key_crop, key_flip = jax.random.split(example_key)
    return random_flip(key_flip, random_resized_crop(key_crop, image, size, area=area))

  return _finish(_per_example(key, images, augment), mean, std)


def eval_resize_center_crop(
  images: jnp.ndarray,
  size: Size,
  crop_fraction: float = 0.875,
  mean: Sequence[float] | None = None,
  std: Sequence[float] | None = None,
) -> jnp.ndarray:
  """The standard eval transform: the central `crop_fraction` of the shorter side at `size`.

  images: [B, H, W, C] uint8 or float in [0, 1] -> [B, size_h, size_w, C] float32.
  """
  _check_stats(mean, std)
  cropped = jax.vmap(lambda image: center_crop(image, size, crop_fraction))(_to_unit(images))
  return _finish(cropped, mean, std)
