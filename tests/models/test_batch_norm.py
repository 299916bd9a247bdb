"""cnnjax's BatchNorm is flax.linen.BatchNorm but for torch's running-variance update.

Against flax's module on the same variables: identical outputs (training and evaluation),
running mean and variable tree; the running variance against NumPy's torch update,
momentum * var + (1 - momentum) * batch_var * n / (n - 1), with n counted over every
device of `axis_name` (vmap, shard_map and pmap's axis_index_groups over 8 host devices).
"""

import functools

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from cnnjax.errors import UsageError
from cnnjax.models import layers

NUM_DEVICES = 8
AXIS = "batch"
MOMENTUM = 0.9  # Flax's; torch's 0.1 weighs the batch statistic.
# NHWC feature maps and the [N, C] input of a BatchNorm1d-like layer.
SHAPES = [(8, 2, 3, 6), (16, 6)]


def _inputs(shape, seed=0) -> np.ndarray:
  """float32 inputs with a non-zero mean and a different scale per channel."""
  rng = np.random.default_rng(seed)
  scale = rng.uniform(0.5, 2.0, size=shape[-1])
  return (rng.normal(size=shape) * scale + 0.5).astype(np.float32)


def _variables(channels: int, seed=1) -> dict:
  """Random scale, bias and running statistics, so that none of them is the identity."""
  rng = np.random.default_rng(seed)

  def vector(low, high):
    return jnp.asarray(rng.uniform(low, high, size=channels), jnp.float32)

  return {
    "params": {"scale": vector(0.5, 1.5), "bias": vector(-0.2, 0.2)},
    "batch_stats": {"mean": vector(-0.2, 0.2), "var": vector(0.5, 1.5)},
  }


def _torch_update(batch_stats, x: np.ndarray) -> dict[str, np.ndarray]:
  """torch's running statistics after one training forward on x: [..., C], every device's
  examples together, so that n is x's size per channel."""
  x = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
  n = x.shape[0]
  old = {k: np.asarray(v, np.float64) for k, v in batch_stats.items()}
  return {
    "mean": MOMENTUM * old["mean"] + (1 - MOMENTUM) * x.mean(0),
    "var": MOMENTUM * old["var"] + (1 - MOMENTUM) * x.var(0) * n / (n - 1),
  }


def _train(module, variables, x):
  return module.apply(variables, x, use_running_average=False, mutable=["batch_stats"])


@pytest.mark.parametrize("shape", SHAPES)
def test_training_matches_flax_but_for_the_unbiased_running_variance(shape):
  x = _inputs(shape)
  variables = _variables(shape[-1])
  ours = layers.BatchNorm(momentum=MOMENTUM)
  flax_bn = nn.BatchNorm(momentum=MOMENTUM)
  got, got_state = jax.jit(functools.partial(_train, ours))(variables, x)
  want, want_state = jax.jit(functools.partial(_train, flax_bn))(variables, x)
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(got_state["batch_stats"]["mean"], want_state["batch_stats"]["mean"])
  reference = _torch_update(variables["batch_stats"], x)
  np.testing.assert_allclose(got_state["batch_stats"]["mean"], reference["mean"], atol=1e-6)
  np.testing.assert_allclose(got_state["batch_stats"]["var"], reference["var"], rtol=1e-6)
  # Flax's biased update is lower by (1 - momentum) * batch_var / (n - 1): 0.2% of it here.
  assert np.abs(want_state["batch_stats"]["var"] - reference["var"]).max() > 1e-3


@pytest.mark.parametrize("shape", SHAPES)
def test_evaluation_matches_flax_and_keeps_the_statistics(shape):
  x = _inputs(shape)
  variables = _variables(shape[-1])

  def evaluate(module):
    return module.apply(variables, x, use_running_average=True, mutable=["batch_stats"])

  got, got_state = evaluate(layers.BatchNorm(momentum=MOMENTUM))
  want, _ = evaluate(nn.BatchNorm(momentum=MOMENTUM))
  np.testing.assert_array_equal(got, want)
  for name, value in got_state["batch_stats"].items():
    np.testing.assert_array_equal(value, variables["batch_stats"][name])


def test_statistics_created_by_an_apply_start_from_flax_initial_values():
  # Without batch_stats a mutable apply creates them (mean 0, var 1) before the update.
  x = _inputs(SHAPES[1])
  params = {"params": _variables(x.shape[-1])["params"]}
  _, state = _train(layers.BatchNorm(momentum=MOMENTUM), params, x)
  initial = {"mean": np.zeros(x.shape[-1]), "var": np.ones(x.shape[-1])}
  reference = _torch_update(initial, x)
  np.testing.assert_allclose(state["batch_stats"]["var"], reference["var"], rtol=1e-6)


def test_variable_tree_is_flax_batch_norm_tree():
  # Auto-generated names and paths must be flax's, or checkpoints and the torchvision
  # converter's BatchNorm paths would break.
  class Net(nn.Module):
    norm: layers.ModuleDef

    @nn.compact
    def __call__(self, x):
      return self.norm(name="bn")(self.norm()(x))

  x = _inputs(SHAPES[0])

  def tree(norm):
    variables = Net(norm).init(jax.random.key(0), x)
    return {k: (v.shape, v.dtype) for k, v in flax.traverse_util.flatten_dict(variables).items()}

  got = tree(layers.batch_norm(train=True))
  assert got == tree(functools.partial(nn.BatchNorm, use_running_average=False))
  assert ("batch_stats", "BatchNorm_0", "var") in got and ("params", "bn", "scale") in got


def test_capture_intermediates_sees_one_call():
  _, state = layers.BatchNorm(use_running_average=False).init_with_output(
    jax.random.key(0), _inputs(SHAPES[1]), capture_intermediates=True
  )
  assert len(state["intermediates"]["__call__"]) == 1


def _vmap_train(module, variables, shards):
  return jax.vmap(functools.partial(_train, module, variables), axis_name=AXIS)(shards)


def _shard_map_train(module, variables, shards):
  mesh = Mesh(np.array(jax.devices()[:NUM_DEVICES]), (AXIS,))
  step = jax.shard_map(
    lambda v, x: _train(module, v, x[0]),
    mesh=mesh,
    in_specs=(P(), P(AXIS)),
    out_specs=(P(AXIS), P()),
  )
  y, state = step(variables, shards)
  return y.reshape(shards.shape), state


@pytest.mark.parametrize("run", [_vmap_train, _shard_map_train], ids=["vmap", "shard_map"])
@pytest.mark.parametrize("shape", SHAPES)
def test_axis_name_counts_every_device(run, shape):
  assert jax.device_count() >= NUM_DEVICES
  x = _inputs(shape)
  shards = x.reshape(NUM_DEVICES, shape[0] // NUM_DEVICES, *shape[1:])
  variables = _variables(shape[-1])
  got, got_state = jax.jit(
    functools.partial(run, layers.BatchNorm(momentum=MOMENTUM, axis_name=AXIS))
  )(variables, shards)
  whole, whole_state = _train(layers.BatchNorm(momentum=MOMENTUM), variables, x)
  np.testing.assert_allclose(got.reshape(x.shape), whole, rtol=1e-5, atol=1e-5)
  reference = _torch_update(variables["batch_stats"], x)
  for name, value in got_state["batch_stats"].items():
    value = np.asarray(value).reshape(-1, shape[-1])  # vmap: one row per device.
    for row in value:
      np.testing.assert_allclose(row, whole_state["batch_stats"][name], rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(row, reference[name], rtol=1e-5, atol=1e-6)


def test_axis_index_groups_count_the_devices_of_one_group():
  shape = SHAPES[0]
  x = _inputs((NUM_DEVICES, *shape))
  variables = _variables(shape[-1])
  groups = [[0, 1, 2, 3], [4, 5, 6, 7]]
  module = layers.BatchNorm(momentum=MOMENTUM, axis_name=AXIS, axis_index_groups=groups)
  replicated = jax.tree.map(lambda v: jnp.broadcast_to(v, (NUM_DEVICES, *v.shape)), variables)
  _, state = jax.pmap(
    functools.partial(_train, module), axis_name=AXIS, devices=jax.devices()[:NUM_DEVICES]
  )(replicated, x)
  for group in groups:
    reference = _torch_update(variables["batch_stats"], x[group])
    for device in group:
      np.testing.assert_allclose(
        state["batch_stats"]["var"][device], reference["var"], rtol=1e-5, atol=1e-6
      )


def test_bfloat16_input_keeps_float32_statistics():
  x = jnp.asarray(_inputs(SHAPES[0]), jnp.bfloat16)
  variables = _variables(x.shape[-1])
  module = layers.batch_norm(True, dtype=jnp.bfloat16)()
  y, state = module.apply(variables, x, mutable=["batch_stats"])
  assert y.dtype == jnp.bfloat16
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(state))
  # Flax computes the statistics of the bfloat16 values in float32.
  reference = _torch_update(variables["batch_stats"], np.asarray(x, np.float32))
  np.testing.assert_allclose(state["batch_stats"]["var"], reference["var"], rtol=1e-6)


def test_one_value_per_channel_in_training_raises_as_torch():
  x = _inputs((1, 6))
  module = layers.BatchNorm(momentum=MOMENTUM)
  variables = module.init(jax.random.key(0), x, use_running_average=False)  # Init is fine.
  module.apply(variables, x, use_running_average=True)  # So is evaluation.
  with pytest.raises(UsageError, match="more than 1 value per channel in training"):
    _train(module, variables, x)
  # Over two devices the statistics average 2 values.
  _, state = _vmap_train(
    layers.BatchNorm(momentum=MOMENTUM, axis_name=AXIS), variables, _inputs((2, 1, 6))
  )
  assert np.all(np.isfinite(state["batch_stats"]["var"]))
