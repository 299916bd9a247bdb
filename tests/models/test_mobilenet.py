"""MobileNet v1/v2: exact parameter counts and MACs, channel rounding, a tiny train step."""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnnjax import models
from cnnjax.errors import UsageError
from cnnjax.models import mobilenet
import model_helpers


@pytest.mark.parametrize(
  "name, count, gmacs",
  [
    ("mobilenet_v1", 4_231_976, 0.569),  # Howard et al. 2017, table 8: 4.2M, 569M mult-adds.
    ("mobilenet_v2", 3_504_872, 0.301),
  ],
)
def test_parameter_counts_and_macs(name, count, gmacs):
  got_count, got_gmacs = model_helpers.count_and_gmacs(models.create(name), 224)
  assert got_count == count
  assert got_gmacs == pytest.approx(gmacs, abs=5e-4)


@pytest.mark.parametrize(
  "value, rounded",
  [(32.0, 32), (11.2, 16), (18.0, 24), (44.8, 48), (12.0, 16), (4.0, 8), (1792.0, 1792)],
)
def test_make_divisible_rounds_to_8_never_more_than_10_percent_down(value, rounded):
  assert mobilenet.make_divisible(value) == rounded


@pytest.mark.parametrize(
  "name, kwargs, feature_dim",
  [
    # Shortened bodies keep the compile short; each still has strided and repeated blocks.
    ("mobilenet_v1", {"alpha": 0.25, "blocks": ((64, 1), (128, 2), (128, 1))}, 32),
    (
      "mobilenet_v2",
      {"alpha": 0.25, "last_channel": 64, "blocks": ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 1, 1))},
      64,
    ),
  ],
)
def test_train_step_updates_everything(name, kwargs, feature_dim):
  model = models.create(name, num_classes=10, **kwargs)
  x = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype(np.float32)
  labels = jnp.arange(4)

  def init_and_grads(init_key, dropout_key):
    variables = model.init(init_key, x)

    def loss_fn(params):
      logits, state = model.apply(
        {"params": params, "batch_stats": variables["batch_stats"]},
        x,
        train=True,
        mutable=["batch_stats"],
        rngs={"dropout": dropout_key},
      )
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), state

    return variables, jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])

  variables, ((loss, state), grads) = jax.device_get(
    model_helpers.run_unoptimised(init_and_grads, model_helpers.INIT_KEY, model_helpers.key(2))
  )
  assert np.isfinite(loss)
  assert all(np.all(np.isfinite(g)) and np.any(g != 0) for g in jax.tree.leaves(grads))
  assert all(
    np.any(new != old)
    for new, old in zip(
      jax.tree.leaves(state["batch_stats"]), jax.tree.leaves(variables["batch_stats"])
    )
  )
  features, _ = jax.eval_shape(
    models.create(name, num_classes=None, **kwargs).init_with_output, jax.random.key(0), x
  )
  assert features.shape == (4, feature_dim)


def test_v2_dropout_needs_a_key_only_in_training():
  model = models.create("mobilenet_v2")
  x = jnp.zeros((2, 32, 32, 3))
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  logits = jax.eval_shape(model.apply, variables, x)
  assert logits.shape == (2, 1000)
  with pytest.raises(flax.errors.InvalidRngError):
    jax.eval_shape(
      functools.partial(model.apply, train=True, mutable=["batch_stats"]), variables, x
    )


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2"])
def test_any_input_size_works_because_every_strided_conv_is_padded(name):
  model = models.create(name, alpha=0.25, num_classes=3)
  logits, _ = jax.eval_shape(model.init_with_output, jax.random.key(0), jnp.zeros((2, 1, 1, 3)))
  assert logits.shape == (2, 3)


def test_nonpositive_alpha_is_a_usage_error():
  with pytest.raises(UsageError, match="alpha"):
    jax.eval_shape(
      models.create("mobilenet_v1", alpha=0.0).init, jax.random.key(0), jnp.zeros((1, 32, 32, 3))
    )
