"""ResNet: exact parameter counts and MACs (torchvision, He et al.), a tiny train step, options."""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnnjax import models
from cnnjax.errors import UsageError
from cnnjax.models import resnet
import model_helpers


def _images(n, size):
  """Inputs from numpy: they compile faster than jax.random's."""
  return np.random.default_rng(0).normal(size=(n, size, size, 3)).astype(np.float32)


@pytest.mark.parametrize(
  "name, size, count, gmacs",
  [
    ("resnet18", 224, 11_689_512, 1.814),
    ("resnet34", 224, 21_797_672, 3.664),
    ("resnet50", 224, 25_557_032, 4.089),
    ("resnet101", 224, 44_549_160, 7.801),
    ("resnet152", 224, 60_192_808, 11.514),
    ("resnet20", 32, 269_722, None),
    ("resnet32", 32, 464_154, None),
    ("resnet44", 32, 658_586, None),
    ("resnet56", 32, 853_018, None),
    ("resnet110", 32, 1_727_962, None),
  ],
)
def test_parameter_counts_and_macs(name, size, count, gmacs):
  got_count, got_gmacs = model_helpers.count_and_gmacs(models.create(name), size)
  assert got_count == count
  if gmacs is not None:
    assert got_gmacs == pytest.approx(gmacs, abs=5e-4)


def test_stride_in_1x1_is_resnet_v1():
  count, gmacs = model_helpers.count_and_gmacs(models.create("resnet50", stride_in_1x1=True), 224)
  assert count == 25_557_032
  assert gmacs == pytest.approx(3.858, abs=5e-4)


@pytest.mark.parametrize("stride_in_1x1, conv1_side", [(False, 8), (True, 4)])
def test_stride_in_1x1_moves_the_stride_to_the_first_1x1(stride_in_1x1, conv1_side):
  model = models.create("resnet50", width=4, stage_sizes=(1, 1), stride_in_1x1=stride_in_1x1)
  _, state = jax.eval_shape(
    lambda x: model.init_with_output(
      jax.random.key(0),
      x,
      capture_intermediates=True,
      mutable=["params", "batch_stats", "intermediates"],
    ),
    jnp.zeros((1, 32, 32, 3)),
  )
  block = state["intermediates"]["layer2_0"]  # Input 8x8 (stem /4), output 4x4.
  assert block["conv1"]["__call__"][0].shape[1:3] == (conv1_side, conv1_side)
  assert block["conv2"]["__call__"][0].shape[1:3] == (4, 4)


def test_cifar_resnet_has_no_shortcut_parameters():
  params = jax.eval_shape(
    models.create("resnet20").init, jax.random.key(0), jnp.zeros((1, 32, 32, 3))
  )["params"]
  assert not any("downsample" in path for path in flax.traverse_util.flatten_dict(params))


def test_zero_pad_shortcut_subsamples_and_appends_zero_channels():
  x = np.random.default_rng(0).normal(size=(2, 5, 5, 3)).astype(np.float32)
  shortcut = resnet.Shortcut(features=7, stride=2, kind="zero_pad", conv=nn.Conv, norm=nn.BatchNorm)
  y, variables = shortcut.init_with_output(jax.random.key(1), x)
  assert variables == {}
  np.testing.assert_array_equal(y[..., :3], x[:, ::2, ::2, :])
  np.testing.assert_array_equal(y[..., 3:], 0.0)


@pytest.mark.parametrize(
  "name, kwargs, feature_dim",
  [
    ("resnet18", {"width": 8}, 64),
    ("resnet20", {"stage_sizes": (1, 1, 1)}, 64),  # One block a stage: CIFAR stem and option A.
    # Bottlenecks: a projection at stage 1, an identity block, a strided block; v1.5 and v1.
    ("resnet50", {"width": 4, "stage_sizes": (2, 1)}, 32),
    ("resnet50", {"width": 4, "stage_sizes": (2, 1), "stride_in_1x1": True}, 32),
  ],
)
def test_train_step_updates_everything(name, kwargs, feature_dim):
  model = models.create(name, num_classes=10, **kwargs)
  x = _images(4, 32)
  labels = jnp.arange(4)

  def init_and_grads(init_key):
    variables = model.init(init_key, x)

    def loss_fn(params):
      logits, state = model.apply(
        {"params": params, "batch_stats": variables["batch_stats"]},
        x,
        train=True,
        mutable=["batch_stats"],
      )
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), state

    return variables, jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])

  variables, ((loss, state), grads) = jax.device_get(
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
  features, _ = jax.eval_shape(
    models.create(name, num_classes=None, **kwargs).init_with_output, jax.random.key(0), x
  )
  assert features.shape == (4, feature_dim)


def test_bottleneck_features_without_classifier():
  model = models.create("resnet50", num_classes=None)
  x = jnp.zeros((2, 64, 64, 3))
  features, _ = jax.eval_shape(model.init_with_output, jax.random.key(0), x)
  assert features.shape == (2, 2048)


def test_zero_init_residual_zeroes_every_residual_branch_at_init():
  model = models.create("resnet18", width=8, stage_sizes=(2, 1), zero_init_residual=True)
  x = _images(2, 16)
  # init's own forward pass runs in train mode; capture the eval-mode one of its variables.
  _, state = model_helpers.run_unoptimised(
    lambda key: model.apply(
      model.init(key, x), x, capture_intermediates=True, mutable=["intermediates"]
    ),
    model_helpers.INIT_KEY,
  )
  outputs = jax.device_get(state["intermediates"])
  for block in ("layer1_0", "layer1_1", "layer2_0"):
    np.testing.assert_array_equal(outputs[block]["bn2"]["__call__"][0], 0.0)
  # layer1_0 keeps the shape, so its output is relu(input) = its (non-negative) input.
  np.testing.assert_array_equal(
    outputs["layer1_0"]["__call__"][0], outputs["maxpool"]["__call__"][0]
  )


@pytest.mark.parametrize("name", ["resnet18", "resnet20"])
def test_any_input_size_works_because_every_downsampling_is_padded(name):
  model = models.create(name, width=4, num_classes=3)
  logits, _ = jax.eval_shape(model.init_with_output, jax.random.key(0), jnp.zeros((2, 1, 1, 3)))
  assert logits.shape == (2, 3)


def test_unknown_stem_is_a_usage_error():
  model = models.create("resnet18", stem="tiny")
  with pytest.raises(UsageError, match="stem"):
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


def test_group_norm_normalises_each_example_alone():
  model = models.create(
    "resnet20", width=8, stage_sizes=(1, 1), num_classes=3, norm="group", norm_groups=4
  )
  x = _images(4, 16)
  variables = model.init(jax.random.key(0), x)
  assert set(variables) == {"params"}  # No batch statistics.
  assert set(variables["params"]["bn1"]) == {"scale", "bias"}  # torchvision's layer names.
  logits = model.apply(variables, x, train=True)
  # Changing the other examples of the batch leaves an example's output as it was.
  other = x.copy()
  other[1:] = _images(3, 16)[::-1] * 3.0
  np.testing.assert_allclose(model.apply(variables, other, train=True)[0], logits[0], rtol=1e-6)
  np.testing.assert_allclose(model.apply(variables, x[:1], train=True)[0], logits[0], rtol=1e-6)


@pytest.mark.parametrize(
  "kwargs, says",
  [({"norm": "layer"}, "norm must be one of"), ({"norm": "group", "norm_groups": 3}, "divide")],
)
def test_bad_norm_choices_are_usage_errors(kwargs, says):
  model = models.create("resnet20", width=8, **kwargs)
  with pytest.raises(UsageError, match=says):
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
