"""U-Net: the paper's parameter count and shapes, the 'same' variant, training, bad sizes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax import models
from cnnjax.errors import UsageError
from cnnjax.models import unet
import model_helpers


def test_original_parameter_count_and_output_shape():
  model = models.create("unet")
  x = jax.ShapeDtypeStruct((1, 572, 572, 1), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  assert model_helpers.param_count(variables) == 31_030_658
  assert jax.eval_shape(model.apply, variables, x).shape == (1, 388, 388, 2)


def test_valid_output_size_matches_the_paper_and_refuses_untileable_sizes():
  assert unet.valid_output_size(572, 4) == 388
  assert unet.valid_output_size(20, 1) == 4
  # 570 -> 566 -> 283 -> 279: odd at the second pool; 12 -> 8 -> 4 -> 0: empty at the bottom.
  assert unet.valid_output_size(570, 4) is None
  assert unet.valid_output_size(12, 1) is None


def test_same_variant_keeps_the_input_size_and_trains():
  model = models.create("unet_same", depth=1, width=4, num_classes=3)
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
  variables = jax.jit(model.init)(jax.random.key(1), x)

  def loss(params):
    out, _ = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
    return jnp.mean(out**2), out.shape

  grads, shape = jax.jit(jax.grad(loss, has_aux=True))(variables["params"])
  assert shape == (2, 8, 8, 3)
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
  assert any(np.abs(g).sum() > 0 for g in jax.tree.leaves(grads))


def test_tiny_valid_forward_and_backward():
  model = models.create("unet", depth=1, width=4)
  x = jax.random.normal(jax.random.key(0), (1, 20, 20, 1))  # 20 -> 16 -> 8 -> 4 -> 8 -> 4
  variables = jax.jit(model.init)(jax.random.key(1), x)
  assert jax.eval_shape(model.apply, variables, x).shape == (1, 4, 4, 2)
  grads = jax.jit(jax.grad(lambda p: jnp.sum(model.apply({"params": p}, x))))(variables["params"])
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_features_without_classifier():
  model = models.create("unet_same", depth=1, width=4, num_classes=None)
  x = jnp.zeros((1, 8, 8, 1))
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  assert jax.eval_shape(model.apply, variables, x).shape == (1, 8, 8, 4)


@pytest.mark.parametrize("name,side,nearest", [("unet", 570, 572), ("unet_same", 100, 96)])
def test_untileable_size_names_the_nearest_valid_one(name, side, nearest):
  model = models.create(name)
  x = jax.ShapeDtypeStruct((1, side, side, 1), jnp.float32)
  with pytest.raises(UsageError, match=f"to {nearest} "):
    jax.eval_shape(model.init, jax.random.key(0), x)
