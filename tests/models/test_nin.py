"""Network in Network: hand-counted parameters, shapes, pools, training, minimum size."""

import functools

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
  convs = [
    (5, 3, 192),
    (1, 192, 160),
    (1, 160, 96),
    (5, 96, 192),
    (1, 192, 192),
    (1, 192, 192),
    (3, 192, 192),
    (1, 192, 192),
    (1, 192, 10),
  ]
  model = models.create("nin")
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  count = model_helpers.param_count(variables)
  assert count == sum(k * k * cin * cout + cout for k, cin, cout in convs) == 966_986
  assert jax.eval_shape(model.apply, variables, x).shape == (2, 10)


def _pool_outputs(model, x):
  """{pool module name: output shape} of the pooling layers `model` runs on x."""
  _, state = jax.eval_shape(
    functools.partial(model.init_with_output, capture_intermediates=True), jax.random.key(0), x
  )
  return {
    name: out["__call__"][0].shape for name, out in state["intermediates"].items() if "Pool" in name
  }


def test_caffe_model_pools_max_then_average():
  x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  # pool1 (after block 1's 96 maps) is a 3x3/2 max pool, pool2 (after block 2's 192) a 3x3/2
  # average pool, then the global average.
  assert _pool_outputs(models.create("nin"), x) == {
    "MaxPool_0": (1, 16, 16, 96),
    "AvgPool_0": (1, 8, 8, 192),
    "GlobalAvgPool_0": (1, 10),
  }
  assert _pool_outputs(models.create("nin", pools=("max", "max")), x) == {
    "MaxPool_0": (1, 16, 16, 96),
    "MaxPool_1": (1, 8, 8, 192),
    "GlobalAvgPool_0": (1, 10),
  }


def test_average_pool_divides_by_the_pixels_inside_the_image():
  # 3x3/2 ceil mode on 16x16 overhangs the edge: Caffe divides the last windows by 6 and 4.
  model = models.create("nin", **TINY, pools=("avg", "avg"))
  x = model_helpers.normal((1, 16, 16, 3))
  variables = jax.jit(model.init)(model_helpers.key(1), x)
  _, state = jax.jit(
    functools.partial(model.apply, capture_intermediates=True, mutable=["intermediates"])
  )(variables, x)
  # Block 1's output [1, 16, 16, 4]: its last conv, captured before the ReLU.
  block1_out = np.maximum(state["intermediates"]["block1_cccp2"]["__call__"][0], 0)
  pooled = state["intermediates"]["AvgPool_0"]["__call__"][0]  # [1, 8, 8, 4]
  assert pooled.shape == (1, 8, 8, 4)
  np.testing.assert_allclose(pooled[0, 7, 7], block1_out[0, 14:, 14:].mean((0, 1)), rtol=1e-5)
  np.testing.assert_allclose(pooled[0, 3, 7], block1_out[0, 6:9, 14:].mean((0, 1)), rtol=1e-5)


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


@pytest.mark.parametrize("pools", [("max",), ("max", "avg", "avg"), ("max", "median")])
def test_bad_pools_are_a_usage_error(pools):
  with pytest.raises(UsageError, match="pool"):
    jax.eval_shape(
      models.create("nin", pools=pools).init, jax.random.key(0), jnp.zeros((1, 8, 8, 3))
    )
