"""Conventions every model shares: `dtype` sets the compute dtype, `axis_name` global BN."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax import models
import model_helpers

# Tiny but representative: plain convs and dense layers, residual BN blocks, depthwise
# inverted residuals, dense concatenation with average-pooled transitions, the mlpconv
# blocks with their max and average pools, and a same-padded U-Net.
TINY_MODELS = [
  ("lenet5", {}, (2, 32, 32, 1)),
  ("resnet20", {"stage_sizes": (1, 1, 1)}, (2, 16, 16, 3)),
  (
    "mobilenet_v2",
    {"alpha": 0.25, "last_channel": 64, "blocks": ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 1, 1))},
    (2, 16, 16, 3),
  ),
  (
    "densenet121",
    {"block_config": (2, 2), "growth_rate": 4, "num_init_features": 8, "bn_size": 2},
    (2, 16, 16, 3),
  ),
  ("nin", {"widths": ((8, 6, 4), (8, 8, 8), (8, 8))}, (2, 16, 16, 3)),
  ("unet_same", {"depth": 1, "width": 4}, (2, 8, 8, 3)),
]


@pytest.mark.parametrize("name, kwargs, shape", TINY_MODELS)
def test_bfloat16_compute_keeps_float32_variables(name, kwargs, shape):
  model = models.create(name, dtype=jnp.bfloat16, **kwargs)
  x = model_helpers.normal(shape)
  variables = jax.jit(model.init)(model_helpers.key(1), x)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))

  got = jax.jit(model.apply)(variables, x)
  want = jax.jit(models.create(name, **kwargs).apply)(variables, x)
  assert got.dtype == jnp.bfloat16 and want.dtype == jnp.float32
  # bfloat16 keeps 8 significant bits: the same function to 2% of its scale (under 1% seen).
  scale = np.abs(want).max()
  np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=0, atol=0.02 * scale)

  if "batch_stats" in variables:
    train_apply = functools.partial(
      model.apply, train=True, mutable=["batch_stats"], rngs={"dropout": model_helpers.key(2)}
    )
    out, updates = jax.eval_shape(train_apply, variables, x)
    assert out.dtype == jnp.bfloat16
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(updates))


def test_axis_name_batch_norm_over_split_batch_equals_the_full_batch():
  kwargs = dict(stage_sizes=(1, 1, 1), num_classes=5)
  x = model_helpers.normal((8, 8, 8, 3))
  shards = x.reshape(2, 4, 8, 8, 3)
  variables = jax.jit(models.create("resnet20", **kwargs).init)(model_helpers.key(1), x)

  def train_apply(axis_name, images):
    model = models.create("resnet20", axis_name=axis_name, **kwargs)
    return model.apply(variables, images, train=True, mutable=["batch_stats"])

  full, full_state = jax.jit(functools.partial(train_apply, None))(x)
  split = jax.vmap(functools.partial(train_apply, "batch"), axis_name="batch")
  got, got_state = jax.jit(split)(shards)
  np.testing.assert_allclose(got.reshape(full.shape), full, rtol=1e-4, atol=1e-5)
  # Every shard ends with the full batch's running statistics.
  for shard_stats, full_stats in zip(jax.tree.leaves(got_state), jax.tree.leaves(full_state)):
    for shard in range(2):
      np.testing.assert_allclose(shard_stats[shard], full_stats, rtol=1e-4, atol=1e-6)

  # Without axis_name each shard normalises with its own statistics: not the same numbers.
  local = jax.vmap(functools.partial(train_apply, None), axis_name="batch")
  alone, _ = jax.jit(local)(shards)
  assert np.abs(alone.reshape(full.shape) - full).max() > 1e-2
