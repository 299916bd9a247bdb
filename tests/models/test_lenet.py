"""LeNet-5: the 61,706-parameter count, padding of small inputs, training, options."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnnjax import models
from cnnjax.errors import UsageError
import model_helpers


@pytest.mark.parametrize("side", [32, 28, 8])
def test_parameter_count_at_32_and_below(side):
  model = models.create("lenet5")
  x = jax.ShapeDtypeStruct((1, side, side, 1), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  assert model_helpers.param_count(variables) == 61_706
  assert jax.eval_shape(model.apply, variables, x).shape == (1, 10)


def test_small_inputs_are_zero_padded_around_the_centre():
  model = models.create("lenet5")
  x = model_helpers.normal((2, 28, 28, 1))
  variables = jax.jit(model.init)(model_helpers.key(1), x)
  padded = jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
  apply = jax.jit(model.apply)
  np.testing.assert_allclose(apply(variables, x), apply(variables, padded), atol=1e-6)


def test_relu_max_pool_option_forward_and_backward():
  model = models.create("lenet5", activation=nn.relu, pooling="max")
  x = model_helpers.normal((4, 8, 8, 1))
  labels = jnp.array([0, 3, 7, 9])
  variables = jax.jit(model.init)(model_helpers.key(1), x)

  def loss(params):
    logits = model.apply({"params": params}, x, train=True)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  grads = jax.jit(jax.grad(loss))(variables["params"])
  for grad in jax.tree.leaves(grads):
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0


def test_features_without_classifier():
  model = models.create("lenet5", num_classes=None)
  x = jax.ShapeDtypeStruct((3, 28, 28, 1), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  assert jax.eval_shape(model.apply, variables, x).shape == (3, 84)


def test_unknown_pooling_is_a_usage_error():
  with pytest.raises(UsageError, match="pooling"):
    models.create("lenet5", pooling="median").init(model_helpers.key(0), jnp.zeros((1, 32, 32, 1)))
