"""NT-Xent against a NumPy reference written with explicit loops; dense versus blockwise."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.errors import UsageError
from cnnjax.losses import nt_xent_loss
from loss_helpers import finite_difference_grad


def reference_nt_xent(z1, z2, temperature):
  """(mean loss over the 2N anchors, top-1 accuracy), one anchor and one view at a time."""
  views = np.concatenate([z1, z2]).astype(np.float64)
  views = views / np.linalg.norm(views, axis=1, keepdims=True)
  count = len(views)
  half = count // 2
  losses, correct = [], 0
  for i in range(count):
    positive = (i + half) % count
    logits = {k: views[i] @ views[k] / temperature for k in range(count) if k != i}
    largest = max(logits.values())
    log_denominator = largest + np.log(sum(np.exp(v - largest) for v in logits.values()))
    losses.append(log_denominator - logits[positive])
    correct += logits[positive] >= largest
  return float(np.mean(losses)), correct / count


@functools.cache
def loss_and_grads(block_size):
  """Jitted (z1, z2, temperature) -> (loss, (d/dz1, d/dz2)), shared by tests of equal shapes."""
  return jax.jit(
    jax.value_and_grad(
      lambda a, b, temperature: nt_xent_loss(a, b, temperature, block_size=block_size),
      argnums=(0, 1),
    )
  )


def views(seed, n, dim, noise=0.5):
  rng = np.random.default_rng(seed)
  z1 = rng.normal(size=(n, dim)).astype(np.float32)
  return z1, (z1 + noise * rng.normal(size=(n, dim))).astype(np.float32)


@pytest.mark.parametrize("block_size", [None, 3, 40])
@pytest.mark.parametrize("temperature", [0.5, 0.05])
def test_value_and_accuracy_match_reference(block_size, temperature):
  z1, z2 = views(0, 8, 5, noise=1.0)
  loss, metrics = nt_xent_loss(z1, z2, temperature, block_size=block_size, return_metrics=True)
  want_loss, want_accuracy = reference_nt_xent(z1, z2, temperature)
  np.testing.assert_allclose(loss, want_loss, rtol=2e-5)
  np.testing.assert_allclose(metrics["accuracy"], want_accuracy)


@pytest.mark.parametrize("block_size", [None, 3])
def test_gradients_match_finite_differences_of_reference(block_size):
  z1, z2 = views(1, 4, 3)
  _, got = loss_and_grads(block_size)(z1, z2, 0.2)
  want1 = finite_difference_grad(lambda v: reference_nt_xent(v, z2, 0.2)[0], z1)
  want2 = finite_difference_grad(lambda v: reference_nt_xent(z1, v, 0.2)[0], z2)
  np.testing.assert_allclose(got[0], want1, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(got[1], want2, rtol=1e-4, atol=1e-6)


def test_blockwise_equals_dense_values_and_gradients():
  z1, z2 = views(2, 12, 16)
  dense_loss, dense_grads = loss_and_grads(None)(z1, z2, 0.1)
  # 24 views in blocks of 5: four full blocks and one padded.
  loss, grads = loss_and_grads(5)(z1, z2, 0.1)
  np.testing.assert_allclose(loss, dense_loss, rtol=1e-6)
  for got, want in zip(grads, dense_grads):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_reductions():
  z1, z2 = views(3, 8, 8)
  per_anchor = nt_xent_loss(z1, z2, 0.01, reduction="none")
  assert per_anchor.shape == (16,)
  np.testing.assert_allclose(jnp.mean(per_anchor), nt_xent_loss(z1, z2, 0.01), rtol=1e-6)
  np.testing.assert_allclose(
    jnp.sum(per_anchor), nt_xent_loss(z1, z2, 0.01, reduction="sum"), rtol=1e-6
  )


@pytest.mark.parametrize(
  "dtype, block_size", [(jnp.bfloat16, None), (jnp.bfloat16, 4), (jnp.float16, 4)]
)
def test_low_precision_inputs_stay_finite(dtype, block_size):
  z1, z2 = views(4, 8, 8, noise=3.0)
  z1, z2 = jnp.asarray(z1 * 300, dtype), jnp.asarray(z2 * 300, dtype)
  loss, grads = loss_and_grads(block_size)(z1, z2, 0.01)
  assert loss.dtype == jnp.float32 and np.isfinite(float(loss))
  np.testing.assert_allclose(
    loss, nt_xent_loss(z1.astype(jnp.float32), z2.astype(jnp.float32), 0.01), rtol=1e-5, atol=1e-5
  )
  assert all(g.dtype == dtype and np.isfinite(np.asarray(g, np.float32)).all() for g in grads)


def test_identical_and_zero_views_are_finite():
  z = np.ones((8, 8), np.float32)
  z[4:] = 0.0
  loss, grads = loss_and_grads(4)(z, z, 0.01)
  assert np.isfinite(float(loss))
  assert all(np.isfinite(np.asarray(g)).all() for g in grads)


def test_single_example_has_only_its_positive():
  z1, z2 = views(5, 1, 4)
  np.testing.assert_allclose(nt_xent_loss(z1, z2, block_size=1), 0.0, atol=1e-7)
  np.testing.assert_allclose(nt_xent_loss(z1, z2), 0.0, atol=1e-7)


@pytest.mark.parametrize(
  "kwargs, message",
  [
    (dict(z2=np.zeros((6, 4), np.float32)), "same shape"),
    (dict(z1=np.zeros((8,), np.float32), z2=np.zeros((8,), np.float32)), r"\[batch, dim\]"),
    (dict(z1=np.zeros((8, 4), np.int32), z2=np.zeros((8, 4), np.int32)), "floating"),
    (dict(temperature=0.0), "temperature"),
    (dict(temperature=-1.0), "temperature"),
    (dict(temperature=float("nan")), "temperature=nan is not a finite"),
    (dict(temperature=float("inf")), "temperature=inf is not a finite"),
    (dict(temperature=1e-45), "temperature=1e-45 is too small"),
    (dict(temperature=1e-39), "too small"),
    (
      dict(z1=np.zeros((0, 4), np.float32), z2=np.zeros((0, 4), np.float32)),
      r"the batch is empty \(0 examples\)",
    ),
    (
      dict(z1=np.zeros((0, 4), np.float32), z2=np.zeros((0, 4), np.float32), block_size=2),
      r"the batch is empty \(0 examples\)",
    ),
    (dict(block_size=0), "block_size"),
    (dict(reduction="avg"), "unknown"),
  ],
)
def test_bad_arguments_raise_at_trace_time(kwargs, message):
  arrays = dict(z1=np.zeros((8, 4), np.float32), z2=np.zeros((8, 4), np.float32))
  options = {k: v for k, v in kwargs.items() if k not in arrays}
  arrays.update({k: v for k, v in kwargs.items() if k in arrays})
  with pytest.raises(UsageError, match=message):
    jax.eval_shape(lambda a: nt_xent_loss(**a, **options), arrays)


@pytest.mark.parametrize("block_size", [None, 3])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_view_gives_nan_loss(block_size, bad):
  z1, z2 = views(6, 6, 4)
  z1[2, 0] = bad
  assert np.isnan(float(nt_xent_loss(z1, z2, block_size=block_size)))
  per_anchor = np.asarray(nt_xent_loss(z1, z2, block_size=block_size, reduction="none"))
  assert np.isnan(per_anchor).all()


@pytest.mark.parametrize("block_size", [None, 3])
def test_smallest_allowed_temperature_gives_finite_loss(block_size):
  # 1 / 1.2e-38 = 8.5e37: logits, their differences and the mean all fit in float32.
  z1, z2 = views(7, 4, 3)
  loss = nt_xent_loss(z1, z2, float(np.finfo(np.float32).tiny), block_size=block_size)
  assert np.isfinite(float(loss)) and float(loss) > 1e36
