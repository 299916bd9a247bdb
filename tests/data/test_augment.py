"""Tests for cnnjax.data.augment: shapes, ranges, determinism, identities, jit and vmap."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.data import augment
from cnnjax.errors import UsageError

KEY = jax.random.key(0)


def _image(seed: int = 0, shape=(16, 16, 3)) -> jnp.ndarray:
  return jax.random.uniform(jax.random.key(seed), shape)


def _images(batch: int = 4, shape=(16, 16, 3)) -> jnp.ndarray:
  return jax.random.randint(jax.random.key(1), (batch, *shape), 0, 256).astype(jnp.uint8)


SINGLE = {
  "random_resized_crop": functools.partial(augment.random_resized_crop, size=12),
  "pad_and_random_crop": augment.pad_and_random_crop,
  "random_flip": augment.random_flip,
  "color_jitter": functools.partial(augment.color_jitter, strength=1.0, prob=1.0),
  "random_grayscale": functools.partial(augment.random_grayscale, prob=0.5),
  "gaussian_blur": functools.partial(augment.gaussian_blur, kernel_fraction=0.3, prob=1.0),
}
JITTED = {name: jax.jit(fn) for name, fn in SINGLE.items()}


@pytest.mark.parametrize("name", sorted(SINGLE))
def test_single_image_shape_range_determinism_and_key_dependence(name):
  fn = JITTED[name]
  image = _image()
  out = fn(KEY, image)
  expected_hw = (12, 12) if name == "random_resized_crop" else (16, 16)
  assert out.shape == (*expected_hw, 3) and out.dtype == jnp.float32
  assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
  np.testing.assert_array_equal(out, fn(KEY, image))
  outs = [fn(jax.random.key(seed), image) for seed in range(1, 9)]
  assert any(not np.allclose(outs[0], other) for other in outs[1:])


@pytest.mark.parametrize("name", sorted(SINGLE))
def test_single_image_functions_vmap_with_one_key_per_example(name):
  images = jnp.stack([_image(seed) for seed in range(2)])
  keys = jax.random.split(KEY, 2)
  batched = jax.jit(jax.vmap(SINGLE[name]))(keys, images)
  for i in range(2):
    np.testing.assert_allclose(batched[i], JITTED[name](keys[i], images[i]), atol=1e-5)


def test_identities_at_zero_strength_or_probability():
  image = _image()

  @jax.jit
  def identities(key, image):
    return [
      augment.color_jitter(key, image, strength=0.0, prob=1.0),
      augment.color_jitter(key, image, strength=1.0, prob=0.0),
      augment.gaussian_blur(key, image, kernel_fraction=0.3, prob=0.0),
      augment.random_flip(key, image, prob=0.0),
      augment.random_grayscale(key, image, prob=0.0),
      augment.random_resized_crop(key, image, 16, area=(1.0, 1.0), aspect=(1.0, 1.0)),
      augment.center_crop(image, 16, crop_fraction=1.0),
      augment.pad_and_random_crop(key, image, pad=0),
    ]

  for out in identities(KEY, image):
    np.testing.assert_allclose(out, image, atol=1e-5)


def test_flip_mirrors_and_grayscale_has_equal_channels():
  image = _image()
  np.testing.assert_array_equal(augment.random_flip(KEY, image, prob=1.0), image[:, ::-1])
  gray = augment.random_grayscale(KEY, image, prob=1.0)
  np.testing.assert_allclose(gray[..., 0], gray[..., 1])
  np.testing.assert_allclose(gray[..., 0], gray[..., 2])


def test_hsv_round_trip_and_known_colours():
  image = _image(shape=(8, 8, 3))
  np.testing.assert_allclose(augment.hsv_to_rgb(augment.rgb_to_hsv(image)), image, atol=1e-5)
  colours = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.5, 0.5]])
  np.testing.assert_allclose(
    augment.rgb_to_hsv(colours), [[0, 1, 1], [1 / 3, 1, 1], [2 / 3, 1, 1], [0, 0, 0.5]], atol=1e-6
  )


def test_pad_and_random_crop_is_a_shifted_window_of_the_padded_image():
  image = _image()
  out = augment.pad_and_random_crop(KEY, image, pad=4)
  padded = np.pad(np.asarray(image), ((4, 4), (4, 4), (0, 0)))
  windows = [padded[i : i + 16, j : j + 16] for i in range(9) for j in range(9)]
  assert any(np.array_equal(out, window) for window in windows)


def test_blur_keeps_a_constant_image_and_smooths_noise():
  constant = jnp.full((20, 20, 3), 0.3)
  blur = functools.partial(augment.gaussian_blur, sigma=(1.5, 2.0), kernel_fraction=0.3, prob=1.0)
  np.testing.assert_allclose(blur(KEY, constant), constant, atol=1e-6)
  noise = _image(shape=(20, 20, 3))
  assert float(jnp.std(blur(KEY, noise))) < 0.5 * float(jnp.std(noise))


def test_one_channel_images_pass_colour_ops():
  image = _image(shape=(16, 16, 1))
  assert jax.jit(augment.color_jitter)(KEY, image, 1.0, prob=1.0).shape == (16, 16, 1)
  with pytest.raises(UsageError):
    augment.color_jitter(KEY, _image(shape=(16, 16, 4)), 1.0)


def test_resize_keeps_aspect_ratio_for_an_int_size():
  assert augment.resize(_image(shape=(20, 40, 3)), 10).shape == (10, 20, 3)
  assert augment.resize(_image(shape=(20, 40, 3)), (5, 7)).shape == (5, 7, 3)


def test_simclr_views_are_two_independent_deterministic_views():
  images = _images(batch=2)
  views = jax.jit(functools.partial(augment.simclr_views, size=12))
  v1, v2 = views(KEY, images)
  assert v1.shape == v2.shape == (2, 12, 12, 3) and v1.dtype == jnp.float32
  assert float(v1.min()) >= 0.0 and float(v1.max()) <= 1.0
  assert not np.allclose(v1, v2)
  np.testing.assert_array_equal(v1, views(KEY, images)[0])


def test_supervised_recipes_shapes_and_normalisation():
  images = _images(batch=2)
  mean, std = augment.DATASET_STATS["cifar10"]

  @jax.jit
  def recipes(key, images):
    return (
      augment.cifar_train(key, images),
      augment.cifar_train(key, images, mean=mean, std=std),
      augment.inception_train(key, images, 8),
      augment.eval_resize_center_crop(images, 8),
    )

  cifar, normalised, inception, evaluated = recipes(KEY, images)
  assert cifar.shape == (2, 16, 16, 3) and float(cifar.min()) >= 0 and float(cifar.max()) <= 1
  np.testing.assert_allclose(normalised, (cifar - jnp.array(mean)) / jnp.array(std), atol=1e-5)
  assert inception.shape == evaluated.shape == (2, 8, 8, 3) and evaluated.dtype == jnp.float32
  with pytest.raises(UsageError):
    augment.cifar_train(KEY, images, mean=mean)
