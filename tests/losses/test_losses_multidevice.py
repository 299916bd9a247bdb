"""Losses across 8 forced CPU devices equal the single-device loss on the global batch.

Each test runs the data-parallel pattern a train step uses: per device, value_and_grad of
the loss of a tiny linear projection, then `pmean` of the parameter gradients. The loss on
every device must equal the single-device loss, the pmean-ed parameter gradient must
equal the single-device gradient, and the gradient with respect to each device's input
shard must be `num_devices` times the single-device one under pmap semantics and equal to
it under shard_map's check_vma=True (the documented convention).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from cnnjax.losses import nt_xent_loss
from cnnjax.losses import triplet_all_loss
from cnnjax.losses import triplet_hard_loss
from cnnjax.losses import triplet_semihard_loss

NUM_DEVICES = 8
AXIS = "batch"


def triplet_case(loss_fn):
  rng = np.random.default_rng(0)
  inputs = (
    rng.normal(size=(32, 6)).astype(np.float32),
    rng.integers(0, 5, size=32).astype(np.int32),
  )

  def objective(weights, inputs, axis_name):
    x, labels = inputs
    return loss_fn(x @ weights, labels, margin=0.5, axis_name=axis_name, return_metrics=True)

  return objective, inputs


def nt_xent_case(block_size, method, rows=16):
  rng = np.random.default_rng(1)
  x1 = rng.normal(size=(rows, 6)).astype(np.float32)
  inputs = (x1, (x1 + 0.5 * rng.normal(size=x1.shape)).astype(np.float32))

  def objective(weights, inputs, axis_name):
    x1, x2 = inputs
    return nt_xent_loss(
      x1 @ weights,
      x2 @ weights,
      0.2,
      axis_name=axis_name,
      block_size=block_size,
      return_metrics=True,
      method=method,
    )

  return objective, inputs


CASES = {
  "semihard": lambda: triplet_case(triplet_semihard_loss),
  "hard": lambda: triplet_case(triplet_hard_loss),
  "all": lambda: triplet_case(triplet_all_loss),
  "nt_xent_dense": lambda: nt_xent_case(None, "dense"),
  "nt_xent_online": lambda: nt_xent_case(3, "online"),
  # Constant shift: one block of 2 examples per device, then 2 blocks of 1.
  "nt_xent_shifted": lambda: nt_xent_case(None, "auto"),
  "nt_xent_shifted_blocks": lambda: nt_xent_case(3, "auto"),
  # 5 examples per device in 2 blocks of 3: one padded example on every device.
  "nt_xent_shifted_padded": lambda: nt_xent_case(6, "auto", rows=40),
}


def per_device_step(objective, weights, inputs):
  """The train-step pattern: local value_and_grad, then pmean of the parameter gradients."""
  (loss, metrics), (weight_grad, input_grad) = jax.value_and_grad(
    lambda w, x: objective(w, (x, inputs[1]), AXIS), argnums=(0, 1), has_aux=True
  )(weights, inputs[0])
  weight_grad = jax.lax.pmean(weight_grad, AXIS)
  return jax.tree.map(lambda v: v[None], (loss, metrics, weight_grad)), input_grad


def run_shard_map(objective, weights, inputs, check_vma):
  mesh = Mesh(np.array(jax.devices()[:NUM_DEVICES]), (AXIS,))
  step = jax.shard_map(
    functools.partial(per_device_step, objective),
    mesh=mesh,
    in_specs=(P(), P(AXIS)),
    out_specs=P(AXIS),
    check_vma=check_vma,
  )
  return jax.jit(step)(weights, inputs)


def run_pmap(objective, weights, inputs):
  shards = jax.tree.map(lambda v: v.reshape(NUM_DEVICES, -1, *v.shape[1:]), inputs)
  replicated = jnp.broadcast_to(weights, (NUM_DEVICES, *weights.shape))
  stacked, input_grad = jax.pmap(functools.partial(per_device_step, objective), axis_name=AXIS)(
    replicated, shards
  )
  stacked = jax.tree.map(lambda v: v[:, 0], stacked)
  return stacked, input_grad.reshape(-1, *input_grad.shape[2:])


# (runner, factor of the gradient with respect to each device's input shard).
RUNNERS = {
  "pmap": (run_pmap, NUM_DEVICES),
  "shard_map_pmap_semantics": (functools.partial(run_shard_map, check_vma=False), NUM_DEVICES),
  "shard_map_check_vma": (functools.partial(run_shard_map, check_vma=True), 1),
}


SHIFTED = ("nt_xent_shifted", "nt_xent_shifted_blocks", "nt_xent_shifted_padded")
# Every loss in the trainer's mode; semi-hard and every form of NT-Xent under pmap, and
# semi-hard, batch-hard and the blockwise NT-Xent under shard_map with check_vma.
COMBINATIONS = (
  [(case, "shard_map_pmap_semantics") for case in CASES]
  + [(case, "pmap") for case in ("semihard", "nt_xent_dense", "nt_xent_online", *SHIFTED)]
  + [(case, "shard_map_check_vma") for case in ("semihard", "hard", "nt_xent_online", *SHIFTED)]
)


@pytest.mark.parametrize("case, mode", COMBINATIONS)
def test_multi_device_equals_single_device(case, mode):
  runner, input_grad_factor = RUNNERS[mode]
  assert jax.device_count() >= NUM_DEVICES
  objective, inputs = CASES[case]()
  weights = np.random.default_rng(2).normal(size=(6, 4)).astype(np.float32)
  (want_loss, want_metrics), (want_weight_grad, want_input_grad) = jax.value_and_grad(
    lambda w, x: objective(w, (x, inputs[1]), None), argnums=(0, 1), has_aux=True
  )(weights, inputs[0])

  (loss, metrics, weight_grad), input_grad = runner(objective, weights, inputs)
  assert loss.shape == (NUM_DEVICES,)
  np.testing.assert_allclose(loss, np.full(NUM_DEVICES, want_loss), rtol=1e-5)
  for name, value in metrics.items():
    np.testing.assert_allclose(
      value, np.full(NUM_DEVICES, want_metrics[name]), rtol=1e-5, err_msg=name
    )
  for device_grad in weight_grad:
    np.testing.assert_allclose(device_grad, want_weight_grad, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(input_grad / input_grad_factor, want_input_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("case", SHIFTED)
@pytest.mark.parametrize("mode", ["pmap", "shard_map_check_vma"])
def test_multi_device_constant_shift_equals_single_device_dense(case, mode):
  # The constant-shift form gathers each view's cotangent / row sum instead of sending
  # column gradients back: against the dense form on one device, to 1e-6 and 1e-5.
  runner, input_grad_factor = RUNNERS[mode]
  objective, inputs = CASES[case]()
  dense, _ = nt_xent_case(None, "dense", rows=inputs[0].shape[0])
  weights = np.random.default_rng(2).normal(size=(6, 4)).astype(np.float32)
  (want_loss, want_metrics), (want_weight_grad, want_input_grad) = jax.value_and_grad(
    lambda w, x: dense(w, (x, inputs[1]), None), argnums=(0, 1), has_aux=True
  )(weights, inputs[0])

  (loss, metrics, weight_grad), input_grad = runner(objective, weights, inputs)
  np.testing.assert_allclose(loss, np.full(NUM_DEVICES, want_loss), rtol=1e-6)
  np.testing.assert_array_equal(metrics["accuracy"], np.full(NUM_DEVICES, want_metrics["accuracy"]))
  scale = np.abs(want_weight_grad).max()
  for device_grad in weight_grad:
    np.testing.assert_allclose(device_grad, want_weight_grad, rtol=1e-5, atol=1e-5 * scale)
  np.testing.assert_allclose(
    input_grad / input_grad_factor,
    want_input_grad,
    rtol=1e-5,
    atol=1e-5 * np.abs(want_input_grad).max(),
  )
