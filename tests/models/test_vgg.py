"""VGG-11..19 and their BatchNorm variants: counts, minimum size, training, BN and dropout."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnnjax import models
from cnnjax.errors import UsageError
import model_helpers

TINY = dict(widths=(4, 8, 8, 8, 8), hidden=16, num_classes=5)
COUNTS = {
  "vgg11": 132_863_336,
  "vgg11_bn": 132_868_840,
  "vgg13": 133_047_848,
  "vgg13_bn": 133_053_736,
  "vgg16": 138_357_544,
  "vgg16_bn": 138_365_992,
  "vgg19": 143_667_240,
  "vgg19_bn": 143_678_248,
}


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_parameter_counts(name):
  model = models.create(name)
  x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  assert model_helpers.param_count(variables) == COUNTS[name]
  assert jax.eval_shape(model.apply, variables, x).shape == (1, 1000)


def test_minimum_input_size():
  model = models.create("vgg11_bn")
  smallest = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), smallest)
  assert jax.eval_shape(model.apply, variables, smallest).shape == (1, 1000)
  with pytest.raises(UsageError, match="32x32"):
    jax.eval_shape(model.apply, variables, jax.ShapeDtypeStruct((1, 31, 64, 3), jnp.float32))


def test_bn_variant_trains_updates_batch_stats_and_drops_out():
  model = models.create("vgg11_bn", **TINY)
  x = model_helpers.normal((2, 32, 32, 3))
  variables = jax.jit(model.init)(model_helpers.key(1), x)

  def loss(params, rng):
    logits, updates = model.apply(
      {**variables, "params": params}, x, train=True, rngs={"dropout": rng}, mutable=["batch_stats"]
    )
    labels = jnp.array([1, 4])
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), updates

  grad_fn = jax.jit(jax.value_and_grad(loss, has_aux=True))
  (loss_a, updates), grads = grad_fn(variables["params"], model_helpers.key(2))
  (loss_b, _), _ = grad_fn(variables["params"], model_helpers.key(3))
  assert loss_a != loss_b  # Dropout is active in training.
  for grad in jax.tree.leaves(grads):
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0
  old, new = variables["batch_stats"]["bn1_1"], updates["batch_stats"]["bn1_1"]
  assert not np.allclose(old["mean"], new["mean"]) and not np.allclose(old["var"], new["var"])


def test_plain_variant_trains_without_batch_norm():
  model = models.create("vgg11", **TINY)
  x = model_helpers.normal((2, 32, 32, 3))
  variables = jax.jit(model.init)(model_helpers.key(1), x)
  assert set(variables) == {"params"}

  def loss(params, rng):
    logits = model.apply({"params": params}, x, train=True, rngs={"dropout": rng})
    return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.array([1, 4])).mean()

  loss_value, grads = jax.jit(jax.value_and_grad(loss))(variables["params"], model_helpers.key(2))
  assert np.isfinite(loss_value)
  # Configuration A: 1, 1, 2, 2, 2 convs a stage and no BatchNorm layers.
  assert set(grads) == {
    "conv1_1",
    "conv2_1",
    "conv3_1",
    "conv3_2",
    "conv4_1",
    "conv4_2",
    "conv5_1",
    "conv5_2",
    "fc6",
    "fc7",
    "fc8",
  }
  for grad in jax.tree.leaves(grads):
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0


def test_one_width_per_stage_or_a_usage_error():
  model = models.create("vgg11", widths=(8, 8, 8), num_classes=5)
  with pytest.raises(UsageError, match="one width per stage: got 5 stages and 3 widths"):
    jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))


def test_features_without_classifier():
  model = models.create("vgg16", num_classes=None)
  x = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  assert jax.eval_shape(model.apply, variables, x).shape == (2, 4096)
