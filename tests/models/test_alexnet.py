"""AlexNet: torchvision and 2012 parameter counts, minimum size, LRN, training, dropout."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnnjax import models
from cnnjax.errors import UsageError
from cnnjax.models import alexnet
import model_helpers

TINY = dict(widths=(8, 8, 8, 8, 8), hidden=16, num_classes=5)


@pytest.mark.parametrize(
  "name,kwargs,count",
  [
    ("alexnet", {}, 61_100_840),
    ("alexnet2012", {}, 60_965_224),
    ("alexnet2012", {"grouped": False}, 62_378_344),
  ],
)
def test_parameter_counts(name, kwargs, count):
  model = models.create(name, **kwargs)
  x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  assert model_helpers.param_count(variables) == count
  assert jax.eval_shape(model.apply, variables, x).shape == (1, 1000)


@pytest.mark.parametrize("name", ["alexnet", "alexnet2012"])
def test_minimum_input_size(name):
  model = models.create(name)
  smallest = jax.ShapeDtypeStruct((1, 63, 63, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), smallest)
  assert jax.eval_shape(model.apply, variables, smallest).shape == (1, 1000)
  with pytest.raises(UsageError, match="63x63"):
    jax.eval_shape(model.apply, variables, jax.ShapeDtypeStruct((1, 62, 80, 3), jnp.float32))
  with pytest.raises(UsageError, match="63x63"):
    jax.eval_shape(model.apply, variables, jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32))


def test_local_response_norm_matches_the_paper_formula():
  x = np.random.default_rng(0).normal(size=(1, 2, 3, 7)).astype(np.float32) * 30
  expected = np.empty_like(x)
  for c in range(7):
    window = np.square(x[..., max(c - 2, 0) : c + 3]).sum(-1)
    expected[..., c] = x[..., c] / (2.0 + 1e-4 * window) ** 0.75
  np.testing.assert_allclose(alexnet.local_response_norm(jnp.asarray(x)), expected, rtol=1e-5)


@pytest.mark.parametrize("name", ["alexnet", "alexnet2012"])
def test_forward_and_backward_with_dropout(name):
  model = models.create(name, **TINY)
  x = model_helpers.normal((2, 63, 63, 3))
  variables = jax.jit(model.init)(model_helpers.key(1), x)

  def loss(params, rng):
    logits = model.apply({"params": params}, x, train=True, rngs={"dropout": rng})
    return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.array([1, 4])).mean()

  grad_fn = jax.jit(jax.value_and_grad(loss))
  loss_a, grads = grad_fn(variables["params"], model_helpers.key(2))
  loss_b, _ = grad_fn(variables["params"], model_helpers.key(3))
  assert loss_a != loss_b  # Dropout is active in training.
  for grad in jax.tree.leaves(grads):
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0


def test_no_dropout_in_evaluation():
  model = models.create("alexnet", **TINY)
  x = model_helpers.normal((2, 63, 63, 3))
  variables = jax.jit(model.init)(model_helpers.key(1), x)
  apply = jax.jit(model.apply)
  np.testing.assert_array_equal(apply(variables, x), apply(variables, x))


def test_features_without_classifier():
  model = models.create("alexnet", num_classes=None)
  x = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  assert jax.eval_shape(model.apply, variables, x).shape == (2, 4096)
