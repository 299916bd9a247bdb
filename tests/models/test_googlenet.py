"""GoogLeNet: torchvision and paper counts, auxiliary heads, minimum size, training.

The whole network's backward pass takes half a minute of CPU to compile, so training is
checked on one Inception block and one auxiliary head wired as the model wires them;
the full network runs forward in tests/convert/test_torchvision_classic.py.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnnjax import models
from cnnjax.errors import UsageError
from cnnjax.models import googlenet, layers
import model_helpers

IMAGES = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)


@pytest.mark.parametrize(
  "name,aux_logits,count",
  [
    ("googlenet", False, 6_624_904),
    ("googlenet", True, 13_004_888),
    ("googlenet_paper", False, 6_998_552),
    ("googlenet_paper", True, 13_378_280),
  ],
)
def test_parameter_counts_include_aux_heads_built_at_eval_init(name, aux_logits, count):
  model = models.create(name, aux_logits=aux_logits)
  variables = jax.eval_shape(model.init, jax.random.key(0), IMAGES)  # train=False
  assert model_helpers.param_count(variables) == count
  assert ("aux1" in variables["params"]) == aux_logits


def test_aux_logits_only_in_training():
  model = models.create("googlenet", aux_logits=True, num_classes=7)
  variables = jax.eval_shape(model.init, jax.random.key(0), IMAGES)
  train_apply = functools.partial(
    model.apply, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(1)}
  )
  (logits, aux1, aux2), _ = jax.eval_shape(train_apply, variables, IMAGES)
  assert logits.shape == aux1.shape == aux2.shape == (2, 7)
  assert jax.eval_shape(model.apply, variables, IMAGES).shape == (2, 7)


def test_paper_form_has_true_5x5_convs_with_biases_and_no_batch_norm():
  model = models.create("googlenet_paper")
  variables = jax.eval_shape(model.init, jax.random.key(0), IMAGES)
  assert "batch_stats" not in variables
  branch3 = variables["params"]["inception3a"]["branch3_1"]["conv"]
  assert branch3["kernel"].shape == (5, 5, 16, 32) and branch3["bias"].shape == (32,)
  torchvision_form = jax.eval_shape(models.create("googlenet").init, jax.random.key(0), IMAGES)
  assert torchvision_form["params"]["inception3a"]["branch3_1"]["conv"]["kernel"].shape == (
    3,
    3,
    16,
    32,
  )


@pytest.mark.parametrize(
  "name, pool, shape",
  [
    ("googlenet", "AdaptiveAvgPool_0", (2, 4, 4, 512)),
    ("googlenet_paper", "AvgPool_0", (2, 4, 4, 512)),  # 5x5/3 on 14x14.
  ],
)
def test_aux_heads_pool_as_torchvision_or_the_paper(name, pool, shape):
  model = models.create(name, aux_logits=True)
  _, state = jax.eval_shape(
    functools.partial(model.init_with_output, capture_intermediates=True), jax.random.key(0), IMAGES
  )
  aux1 = state["intermediates"]["aux1"]
  assert [layer for layer in aux1 if "Pool" in layer] == [pool]
  assert aux1[pool]["__call__"][0].shape == shape


def test_paper_aux_pool_needs_47_pixels_only_where_the_heads_run():
  model = models.create("googlenet_paper", aux_logits=True, num_classes=3)
  smallest = jax.ShapeDtypeStruct((1, 47, 47, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), smallest)
  # 47 -> 24 -> 12 -> 6 -> 3 at inception4a; the 5x5/3 ceil-mode pool makes that 1x1.
  assert variables["params"]["aux1"]["fc1"]["kernel"].shape == (128, 1024)
  with pytest.raises(UsageError, match="47x47"):
    jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 46, 60, 3), jnp.float32))
  # Evaluation runs no aux head, so any size GoogLeNet takes works.
  assert jax.eval_shape(
    model.apply, variables, jax.ShapeDtypeStruct((1, 15, 15, 3), jnp.float32)
  ).shape == (1, 3)
  with pytest.raises(UsageError, match="aux_pool"):
    jax.eval_shape(models.create("googlenet", aux_pool="max").init, jax.random.key(0), smallest)


def test_minimum_input_size():
  model = models.create("googlenet", aux_logits=True)
  smallest = jax.ShapeDtypeStruct((1, 15, 15, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), smallest)
  assert jax.eval_shape(model.apply, variables, smallest).shape == (1, 1000)
  with pytest.raises(UsageError, match="15x15"):
    jax.eval_shape(model.apply, variables, jax.ShapeDtypeStruct((1, 14, 40, 3), jnp.float32))
  with pytest.raises(UsageError, match="15x15"):
    jax.eval_shape(model.apply, variables, jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32))


def test_features_without_classifier():
  model = models.create("googlenet", num_classes=None)
  variables = jax.eval_shape(model.init, jax.random.key(0), IMAGES)
  assert jax.eval_shape(model.apply, variables, IMAGES).shape == (2, 1024)
  with pytest.raises(UsageError, match="aux_logits"):
    jax.eval_shape(
      models.create("googlenet", num_classes=None, aux_logits=True).init, jax.random.key(0), IMAGES
    )


class _BlockWithAuxHead(nn.Module):
  """inception3a followed by an auxiliary head, with torchvision's conv and BatchNorm."""

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> tuple[jnp.ndarray, jnp.ndarray]:
    conv = functools.partial(nn.Conv, use_bias=False)
    basic_conv = functools.partial(
      googlenet.BasicConv, conv=conv, norm=layers.batch_norm(train, epsilon=1e-3)
    )
    features = googlenet.Inception(googlenet.INCEPTION_WIDTHS["3a"], basic_conv, 3)(x)
    return features, googlenet.InceptionAux(5, basic_conv, nn.Dense)(features, train)


def test_inception_block_and_aux_head_train():
  module = _BlockWithAuxHead()
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 6, 6, 8)), jnp.float32)
  variables = jax.jit(module.init, static_argnames="train")(
    jax.random.key(1, impl="rbg"), x, train=False
  )

  def loss(params, rng):
    (features, aux), updates = module.apply(
      {**variables, "params": params}, x, train=True, rngs={"dropout": rng}, mutable=["batch_stats"]
    )
    aux_loss = optax.softmax_cross_entropy_with_integer_labels(aux, jnp.array([1, 4])).mean()
    return aux_loss + jnp.mean(features**2), (features.shape, updates)

  grad_fn = jax.jit(jax.value_and_grad(loss, has_aux=True))
  (loss_a, (shape, updates)), grads = grad_fn(variables["params"], jax.random.key(2, impl="rbg"))
  (loss_b, _), _ = grad_fn(variables["params"], jax.random.key(3, impl="rbg"))
  assert shape == (2, 6, 6, 64 + 128 + 32 + 32)
  assert loss_a != loss_b  # The aux head's dropout 0.7 is active.
  for grad in jax.tree.leaves(grads):
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0
  old = variables["batch_stats"]["Inception_0"]["branch1"]["bn"]["mean"]
  assert not np.allclose(old, updates["batch_stats"]["Inception_0"]["branch1"]["bn"]["mean"])


def test_whole_network_with_aux_heads_trains():
  """The full GoogLeNet: a train-mode backward pass through the main and both aux heads."""
  model = models.create("googlenet", num_classes=3, aux_logits=True)
  x = model_helpers.normal((2, 32, 32, 3))
  labels = jnp.array([0, 2])
  variables = jax.jit(model.init, static_argnames="train")(model_helpers.key(0), x, train=False)

  def loss(params):
    (logits, aux1, aux2), _ = model.apply(
      {**variables, "params": params},
      x,
      train=True,
      rngs={"dropout": model_helpers.key(1)},
      mutable=["batch_stats"],
    )

    def ce(z):
      return optax.softmax_cross_entropy_with_integer_labels(z, labels).mean()

    return ce(logits) + 0.3 * (ce(aux1) + ce(aux2))

  grads = jax.jit(jax.grad(loss))(variables["params"])
  for head in ("fc", "aux1", "aux2", "conv1"):
    leaves = jax.tree.leaves(grads[head])
    assert all(np.isfinite(g).all() for g in leaves)
    assert sum(np.abs(g).sum() for g in leaves) > 0, head


def test_paper_form_with_aux_heads_trains():
  """googlenet_paper at its smallest input with aux heads: biases, no BN, 5x5/3 aux pools."""
  model = models.create("googlenet_paper", num_classes=3, aux_logits=True)
  x = model_helpers.normal((2, 47, 47, 3))
  labels = jnp.array([0, 2])
  variables = jax.jit(model.init, static_argnames="train")(model_helpers.key(0), x, train=False)

  def loss(params, rng):
    logits, aux1, aux2 = model.apply({"params": params}, x, train=True, rngs={"dropout": rng})

    def ce(z):
      return optax.softmax_cross_entropy_with_integer_labels(z, labels).mean()

    return ce(logits) + 0.3 * (ce(aux1) + ce(aux2))

  grads = model_helpers.run_unoptimised(jax.grad(loss), variables["params"], model_helpers.key(1))
  for head in ("fc", "aux1", "aux2", "conv1", "inception5b"):
    leaves = jax.tree.leaves(grads[head])
    assert all(np.isfinite(g).all() for g in leaves)
    assert sum(np.abs(g).sum() for g in leaves) > 0, head
  assert grads["inception3a"]["branch3_1"]["conv"]["kernel"].shape == (5, 5, 16, 32)
