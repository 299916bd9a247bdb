"""Network in Network: hand-counted parameters, shapes, training, minimum size."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnnjax import models
from cnnjax.errors import UsageError
import model_helpers

TINY = dict(widths=((8, 6, 4), (8, 8, 8), (8, 8)), num_classes=5)


def test_cifar10_parameter_count_and_shapes():
  # (kernel, in, out) of every conv in the paper's CIFAR-10 model; each has a bias.
  convs = [(5, 3, 192), (1, 192, 160), (1, 160, 96),
           (5, 96, 192), (1, 192, 192), (1, 192, 192),
           (3, 192, 192), (1, 192, 192), (1, 192, 10)]
  model = models.create("nin")
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  assert model_helpers.param_count(variables) == sum(k * k * cin * cout + cout for k, cin, cout in convs)
  assert jax.eval_shape(model.apply, variables, x).shape == (2, 10)


def test_features_without_class_maps():
  model = models.create("nin", num_classes=None)
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  assert jax.eval_shape(model.apply, variables, x).shape == (2, 192)
  assert "class_maps" not in variables["params"]


def test_forward_and_backward_with_dropout():
  model = models.create("nin", **TINY)
  x = model_helpers.normal((2, 32, 32, 3))
  variables = jax.jit(model.init)(model_helpers.key(1), x)

  def loss(params, rng):
    logits = model.apply({"params": params}, x, train=True, rngs={"dropout": rng})
    return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.array([1, 4])).mean()

  grad_fn = jax.jit(jax.value_and_grad(loss))
  loss_a, grads = grad_fn(variables["params"], model_helpers.key(2))
  loss_b, _ = grad_fn(variables["params"], model_helpers.key(3))
  assert loss_a != loss_b
  for grad in jax.tree.leaves(grads):
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0
  apply = jax.jit(model.apply)
  np.testing.assert_array_equal(apply(variables, x), apply(variables, x))


def test_minimum_input_size_and_bad_config():
  model = models.create("nin")
  smallest = jax.ShapeDtypeStruct((1, 4, 4, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), smallest)
  assert jax.eval_shape(model.apply, variables, smallest).shape == (1, 10)
  with pytest.raises(UsageError, match="4x4"):
    jax.eval_shape(model.apply, variables, jax.ShapeDtypeStruct((1, 3, 3, 3), jnp.float32))
  with pytest.raises(UsageError, match="kernel size"):
    models.create("nin", kernel_sizes=(5, 5)).init(model_helpers.key(0), jnp.zeros((1, 8, 8, 3)))
