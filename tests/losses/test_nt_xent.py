"""NT-Xent against a NumPy reference written with explicit loops, and its three methods
(constant-shift blockwise, online blockwise, dense) against each other."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.errors import UsageError
from cnnjax.losses import contrastive
from cnnjax.losses import nt_xent_loss
from loss_helpers import finite_difference_grad

BOUND = contrastive.SHIFT_MIN_TEMPERATURE
# (method, block_size): the methods the tests run, 'auto' taking the constant-shift path
# at temperatures >= BOUND and the online one below.
METHODS = [("dense", None), ("online", None), ("online", 3), ("auto", None), ("auto", 3)]


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
def loss_and_grads(block_size, method="auto", reduction="mean"):
  """Jitted (z1, z2, temperature) -> ((loss, metrics), (d/dz1, d/dz2)), shared by tests of
  equal shapes. The temperature is static, a Python float as 'auto' needs to see it; with
  'none' the gradients are those of the per-anchor losses' sum."""

  def objective(a, b, temperature):
    value, metrics = nt_xent_loss(
      a,
      b,
      temperature,
      block_size=block_size,
      reduction=reduction,
      return_metrics=True,
      method=method,
    )
    return jnp.sum(value), (value, metrics)

  @functools.partial(jax.jit, static_argnums=2)
  def run(a, b, temperature):
    (_, outputs), grads = jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)(
      a, b, temperature
    )
    return outputs, grads

  return run


def uses(fn, name: str) -> bool:
  """Whether fn's jaxpr calls the custom VJP `name`."""
  return f"name={name}" in str(jax.make_jaxpr(fn)())


def views(seed, n, dim, noise=0.5):
  rng = np.random.default_rng(seed)
  z1 = rng.normal(size=(n, dim)).astype(np.float32)
  return z1, (z1 + noise * rng.normal(size=(n, dim))).astype(np.float32)


@pytest.mark.parametrize("method, block_size", METHODS + [("auto", 40)])
@pytest.mark.parametrize("temperature", [0.5, 0.05, 0.01])
def test_value_and_accuracy_match_reference(method, block_size, temperature):
  z1, z2 = views(0, 8, 5, noise=1.0)
  (loss, metrics), _ = loss_and_grads(block_size, method)(z1, z2, temperature)
  want_loss, want_accuracy = reference_nt_xent(z1, z2, temperature)
  np.testing.assert_allclose(loss, want_loss, rtol=2e-5)
  np.testing.assert_allclose(metrics["accuracy"], want_accuracy)


@pytest.mark.parametrize("method, block_size", METHODS)
def test_gradients_match_finite_differences_of_reference(method, block_size):
  z1, z2 = views(1, 4, 3)
  _, got = loss_and_grads(block_size, method)(z1, z2, 0.2)
  want1 = finite_difference_grad(lambda v: reference_nt_xent(v, z2, 0.2)[0], z1)
  want2 = finite_difference_grad(lambda v: reference_nt_xent(z1, v, 0.2)[0], z2)
  np.testing.assert_allclose(got[0], want1, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(got[1], want2, rtol=1e-4, atol=1e-6)


def tied_views():
  """12 examples of 16 dims with exact duplicates: examples 3 and 7 are copies of 1 (both
  views), so anchors tie between positive and negatives; 5's views are equal."""
  z1, z2 = views(2, 12, 16, noise=1.0)
  z1[[3, 7]], z2[[3, 7]] = z1[1], z2[1]
  z2[5] = z1[5]
  return z1, z2


def assert_same_as_dense(z1, z2, temperature, block_size, method="auto", reduction="mean"):
  """Values (1e-6 relative), metrics (accuracy exactly) and gradients (1e-5 of the largest)
  of `method` equal the dense form's."""
  (want, want_metrics), want_grads = loss_and_grads(None, "dense", reduction)(z1, z2, temperature)
  (got, metrics), grads = loss_and_grads(block_size, method, reduction)(z1, z2, temperature)
  # One anchor's loss is a difference of logits of size 1 / t, uncertain in float32 by a
  # few ulps of 1 / t in any method (both are as far from a float64 reference); the
  # means and sums are not, to 1e-6.
  atol = 2**-21 / temperature if reduction == "none" else 0.0
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=atol)
  assert float(metrics["accuracy"]) == float(want_metrics["accuracy"])
  np.testing.assert_allclose(metrics["positive_similarity"], want_metrics["positive_similarity"])
  for got_grad, want_grad in zip(grads, want_grads):
    assert got_grad.dtype == want_grad.dtype
    got_grad, want_grad = np.asarray(got_grad, np.float32), np.asarray(want_grad, np.float32)
    np.testing.assert_allclose(got_grad, want_grad, rtol=1e-5, atol=1e-5 * np.abs(want_grad).max())


# Temperatures across the constant-shift bound: auto runs the online path below it.
TEMPERATURES = [2.0, 0.5, 0.1, 0.03, BOUND, np.nextafter(BOUND, 0.0), 0.01, 0.002]


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize(
  "block_size",
  [
    None,  # one block of all 24 views
    5,  # 6 blocks of 2 examples: 15 mirrored pairs
    8,  # 3 blocks of 4 examples: no padding
  ],
)
def test_auto_equals_dense_with_ties(temperature, block_size):
  assert_same_as_dense(*tied_views(), float(temperature), block_size)


@pytest.mark.parametrize(
  "n, block_size",
  [
    (13, 10),  # 3 blocks of 5 examples, the last with 3: 2 padded examples
    (37, 16),  # 5 blocks of 8: 3 padded
    (37, 2),  # 37 blocks of 1 example (37 is prime)
  ],
)
@pytest.mark.parametrize("temperature", [0.5, 0.05, 0.01])
def test_auto_equals_dense_when_blocks_do_not_divide_the_batch(n, block_size, temperature):
  z1, z2 = views(3, n, 8, noise=1.5)
  assert_same_as_dense(z1, z2, temperature, block_size)


@pytest.mark.parametrize("reduction", ["sum", "none"])
@pytest.mark.parametrize("block_size", [None, 10])
def test_auto_equals_dense_per_anchor_and_sum(reduction, block_size):
  z1, z2 = views(4, 13, 8, noise=1.0)
  assert_same_as_dense(z1, z2, 0.1, block_size, reduction=reduction)


@pytest.mark.parametrize("temperature", [0.5, 0.05])
@pytest.mark.parametrize("block_size", [None, 6])
def test_auto_equals_dense_for_bfloat16_inputs(temperature, block_size):
  z1, z2 = views(5, 11, 16, noise=1.0)
  z1, z2 = jnp.asarray(z1, jnp.bfloat16), jnp.asarray(z2, jnp.bfloat16)
  assert_same_as_dense(z1, z2, temperature, block_size)


@pytest.mark.parametrize("block_size", [None, 4])
def test_antipodal_views_at_the_bound(block_size):
  # View z1[0] has every other view at similarity -1: its row sum is 15 exp(-2 / t), the
  # smallest the constant shift meets, at t = BOUND still a normal float32 number.
  z1 = np.tile(np.float32([[-1.0, 0.0, 0.0]]), (8, 1))
  z2 = z1.copy()
  z1[0] = [1.0, 0.0, 0.0]
  z1[1:4, 1] = z2[1:4, 2] = [1e-3, 2e-3, 3e-3]  # no further ties between the others
  (per_anchor, _), _ = loss_and_grads(block_size, reduction="none")(z1, z2, BOUND)
  # The others' similarities to it differ from -1 by up to 5e-6, so log 15 to 1e-4.
  np.testing.assert_allclose(per_anchor[0], np.log(15.0), rtol=1e-4)
  assert_same_as_dense(z1, z2, BOUND, block_size, reduction="none")


def test_auto_takes_the_constant_shift_path_only_where_it_is_exact():
  z = np.ones((4, 3), np.float32)
  for temperature, shifted in [(0.5, True), (BOUND, True), (np.nextafter(BOUND, 0.0), False)]:
    assert uses(lambda: nt_xent_loss(z, z, float(temperature)), "_shifted_logsumexp") == shifted
    assert uses(lambda: nt_xent_loss(z, z, float(temperature)), "_blockwise_logsumexp") != shifted
  # A temperature that is traced could be anything: online.
  traced = jax.jit(lambda t: nt_xent_loss(z, z, t))
  assert uses(lambda: traced(jnp.float32(0.5)), "_blockwise_logsumexp")
  assert not uses(lambda: nt_xent_loss(z, z, 0.5, method="online"), "_shifted_logsumexp")
  dense = lambda: nt_xent_loss(z, z, 0.5, method="dense")  # noqa: E731
  assert not uses(dense, "_shifted_logsumexp") and not uses(dense, "_blockwise_logsumexp")


def test_constant_shift_memory_grows_with_the_block_not_the_square():
  # 2048 views: the dense loss + gradient holds [2048, 2048] float32 logits (16 MiB) at
  # least once; blocks of 128 views need [128, 128] blocks and O(N D) buffers.
  z1, z2 = views(6, 1024, 32)

  def temporaries(**options):
    fn = jax.jit(jax.grad(lambda a, b: nt_xent_loss(a, b, 0.5, **options), argnums=(0, 1)))
    return fn.lower(z1, z2).compile().memory_analysis().temp_size_in_bytes

  assert temporaries(method="dense") >= 2048 * 2048 * 4
  assert temporaries(block_size=128) < 2048 * 2048 * 4 / 8


def test_reductions():
  z1, z2 = views(3, 8, 8)
  for method in ("auto", "online"):
    per_anchor = nt_xent_loss(z1, z2, 0.05, reduction="none", method=method)
    assert per_anchor.shape == (16,)
    np.testing.assert_allclose(
      jnp.mean(per_anchor), nt_xent_loss(z1, z2, 0.05, method=method), rtol=1e-6
    )
    np.testing.assert_allclose(
      jnp.sum(per_anchor), nt_xent_loss(z1, z2, 0.05, reduction="sum", method=method), rtol=1e-6
    )


@pytest.mark.parametrize(
  "dtype, method, block_size",
  [
    (jnp.bfloat16, "dense", None),
    (jnp.bfloat16, "online", 4),
    (jnp.float16, "online", 4),
    (jnp.bfloat16, "auto", None),
    (jnp.float16, "auto", 4),
  ],
)
@pytest.mark.parametrize("temperature", [0.01, 0.05])
def test_low_precision_inputs_stay_finite(dtype, method, block_size, temperature):
  z1, z2 = views(4, 8, 8, noise=3.0)
  z1, z2 = jnp.asarray(z1 * 300, dtype), jnp.asarray(z2 * 300, dtype)
  (loss, _), grads = loss_and_grads(block_size, method)(z1, z2, temperature)
  assert loss.dtype == jnp.float32 and np.isfinite(float(loss))
  want = nt_xent_loss(z1.astype(jnp.float32), z2.astype(jnp.float32), temperature, method="dense")
  np.testing.assert_allclose(loss, want, rtol=1e-5, atol=1e-5)
  assert all(g.dtype == dtype and np.isfinite(np.asarray(g, np.float32)).all() for g in grads)


@pytest.mark.parametrize("method, block_size", [("online", 4), ("auto", 4), ("auto", None)])
@pytest.mark.parametrize("temperature", [0.01, 0.5])
def test_identical_and_zero_views_are_finite(method, block_size, temperature):
  z = np.ones((8, 8), np.float32)
  z[4:] = 0.0
  (loss, _), grads = loss_and_grads(block_size, method)(z, z, temperature)
  assert np.isfinite(float(loss))
  assert all(np.isfinite(np.asarray(g)).all() for g in grads)


@pytest.mark.parametrize("method", ["auto", "online", "dense"])
def test_single_example_has_only_its_positive(method):
  z1, z2 = views(5, 1, 4)
  if method != "dense":
    np.testing.assert_allclose(nt_xent_loss(z1, z2, block_size=1, method=method), 0.0, atol=1e-7)
  np.testing.assert_allclose(nt_xent_loss(z1, z2, method=method), 0.0, atol=1e-7)


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
    (dict(method="flash"), "method='flash' is unknown"),
    (dict(method="dense", block_size=4), "block_size=4 has no use with method='dense'"),
  ],
)
def test_bad_arguments_raise_at_trace_time(kwargs, message):
  arrays = dict(z1=np.zeros((8, 4), np.float32), z2=np.zeros((8, 4), np.float32))
  options = {k: v for k, v in kwargs.items() if k not in arrays}
  arrays.update({k: v for k, v in kwargs.items() if k in arrays})
  with pytest.raises(UsageError, match=message):
    jax.eval_shape(lambda a: nt_xent_loss(**a, **options), arrays)


@pytest.mark.parametrize("method, block_size", METHODS)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_view_gives_nan_loss(method, block_size, bad):
  z1, z2 = views(6, 6, 4)
  z1[2, 0] = bad
  options = dict(block_size=block_size, method=method)
  assert np.isnan(float(nt_xent_loss(z1, z2, **options)))
  per_anchor = np.asarray(nt_xent_loss(z1, z2, reduction="none", **options))
  assert np.isnan(per_anchor).all()


@pytest.mark.parametrize("method, block_size", METHODS)
def test_smallest_allowed_temperature_gives_finite_loss(method, block_size):
  # 1 / 1.2e-38 = 8.5e37: logits, their differences and the mean all fit in float32.
  z1, z2 = views(7, 4, 3)
  tiny = float(np.finfo(np.float32).tiny)
  loss = nt_xent_loss(z1, z2, tiny, block_size=block_size, method=method)
  assert np.isfinite(float(loss)) and float(loss) > 1e36
