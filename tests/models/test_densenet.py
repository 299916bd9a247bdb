"""DenseNet: exact parameter counts and MACs (torchvision), a tiny train step, remat, min size."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnnjax import models
from cnnjax.errors import UsageError
import model_helpers

TINY = dict(block_config=(2, 2), growth_rate=4, num_init_features=8, bn_size=2, num_classes=10)


@pytest.mark.parametrize(
  "name, count, gmacs",
  [
    ("densenet121", 7_978_856, 2.834),
    ("densenet161", 28_681_000, None),
    ("densenet169", 14_149_480, 3.360),
    ("densenet201", 20_013_928, 4.291),
  ],
)
def test_parameter_counts_and_macs(name, count, gmacs):
  got_count, got_gmacs = model_helpers.count_and_gmacs(models.create(name), 224)
  assert got_count == count
  if gmacs is not None:
    assert got_gmacs == pytest.approx(gmacs, abs=5e-4)


def test_train_step_and_memory_efficient_agree():
  x = np.random.default_rng(0).normal(size=(4, 16, 16, 3)).astype(np.float32)
  labels = jnp.arange(4)

  def init_and_grads(init_key):
    variables = models.create("densenet121", **TINY).init(init_key, x)
    results = [variables]
    for memory_efficient in (False, True):
      model = models.create("densenet121", memory_efficient=memory_efficient, **TINY)

      def loss_fn(params):
        logits, state = model.apply(
          {"params": params, "batch_stats": variables["batch_stats"]},
          x,
          train=True,
          mutable=["batch_stats"],
        )
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), state

      results.append(jax.value_and_grad(loss_fn, has_aux=True)(variables["params"]))
    return results

  variables, ((loss, state), grads), ((remat_loss, _), remat_grads) = jax.device_get(
    model_helpers.run_unoptimised(init_and_grads, model_helpers.INIT_KEY)
  )
  assert np.isfinite(loss)
  assert all(np.all(np.isfinite(g)) and np.any(g != 0) for g in jax.tree.leaves(grads))
  assert all(
    np.any(new != old)
    for new, old in zip(
      jax.tree.leaves(state["batch_stats"]), jax.tree.leaves(variables["batch_stats"])
    )
  )
  np.testing.assert_allclose(remat_loss, loss, rtol=1e-6)
  for remat_grad, grad in zip(jax.tree.leaves(remat_grads), jax.tree.leaves(grads)):
    np.testing.assert_allclose(remat_grad, grad, rtol=1e-5, atol=1e-6)


def test_features_without_classifier():
  model = models.create("densenet121", num_classes=None)
  x = jnp.zeros((2, 64, 64, 3))
  features, _ = jax.eval_shape(model.init_with_output, jax.random.key(0), x)
  assert features.shape == (2, 1024)


def test_smallest_input_is_29_pixels():
  # Four blocks (three 2x2 pools after a /4 stem) set the minimum, not the block lengths.
  model = models.create("densenet121", **{**TINY, "block_config": (1, 1, 1, 1)})
  logits = jax.eval_shape(model.init_with_output, jax.random.key(0), jnp.zeros((1, 29, 29, 3)))[0]
  assert logits.shape == (1, 10)
  with pytest.raises(UsageError, match="at least 29x29"):
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 28, 40, 3)))
