"""bfloat16 compute: what stays float32 under a bf16 model (the loss, BatchNorm statistics,
the global pool's sum), and LeNet-5 on digits trained in bf16 to float32's accuracy."""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax import losses
from cnnjax.models import layers
from cnnjax.train import loop

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "configs"))
import lenet_digits  # noqa: E402


def test_cross_entropy_of_bf16_logits_is_float32():
  logits = jnp.asarray(np.random.default_rng(0).normal(size=(8, 10)), jnp.bfloat16)
  labels = jnp.arange(8) % 10
  loss = losses.cross_entropy(logits, labels, label_smoothing=0.1)
  assert loss.dtype == jnp.float32
  assert loss == losses.cross_entropy(logits.astype(jnp.float32), labels, label_smoothing=0.1)
  # The cotangent reaching the logits is float32 math rounded once to bf16 at the end.
  grad = jax.grad(lambda z: losses.cross_entropy(z, labels))(logits)
  grad32 = jax.grad(lambda z: losses.cross_entropy(z, labels))(logits.astype(jnp.float32))
  assert grad.dtype == jnp.bfloat16
  np.testing.assert_array_equal(grad, grad32.astype(jnp.bfloat16))


def test_batch_norm_statistics_are_float32_under_bf16():
  # A mean of 256 with unit spread: bf16 (8-bit mantissa) holds it only to steps of 2, so
  # statistics reduced in bf16 would lose the variance; in float32 they are exact enough.
  rng = np.random.default_rng(0)
  x = jnp.asarray(256.0 + rng.normal(size=(16, 4, 4, 3)) * 8.0, jnp.bfloat16)
  bn = layers.batch_norm(train=True, dtype=jnp.bfloat16)()
  variables = bn.init(jax.random.key(0), x)
  y, updated = bn.apply(variables, x, mutable=["batch_stats"])
  stats = updated["batch_stats"]
  assert y.dtype == jnp.bfloat16
  assert stats["mean"].dtype == stats["var"].dtype == jnp.float32
  x64 = np.asarray(x, np.float64)
  n = x64.size // 3
  batch_mean = x64.mean((0, 1, 2))
  batch_var = x64.var((0, 1, 2))
  np.testing.assert_allclose(stats["mean"], 0.1 * batch_mean, rtol=1e-6)
  # Flax's fast variance, E[x^2] - E[x]^2, cancels float32 digits at this mean (float32
  # inputs too); a bf16 one would lose them all.
  np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * batch_var * n / (n - 1), rtol=1e-3)
  expected = (x64 - batch_mean) / np.sqrt(batch_var + 1e-5)
  # One bf16 rounding of the float32 result: relative 2**-8 at most.
  np.testing.assert_allclose(np.asarray(y, np.float64), expected, rtol=2**-8, atol=2**-8)


def test_global_avg_pool_of_bf16_sums_in_float32():
  # 4096 values in [1, 2): a bf16 sum would carry 8 bits, so its mean would be off by
  # several bf16 steps; summed in float32 it is the exact mean rounded once.
  values = np.random.default_rng(0).uniform(1.0, 2.0, size=(2, 64, 64, 8))
  x = jnp.asarray(values, jnp.bfloat16)
  pooled = layers.GlobalAvgPool().apply({}, x)
  assert pooled.dtype == jnp.bfloat16
  exact = np.asarray(x, np.float64).mean((1, 2))
  np.testing.assert_array_equal(pooled, jnp.asarray(exact, jnp.float32).astype(jnp.bfloat16))


def _lenet_digits(dtype: str):
  config = lenet_digits.get_config()
  config.num_epochs = 10.0
  config.async_checkpoints = False
  config.progress = "lines"
  config.dtype = dtype
  return config


@pytest.mark.slow
def test_lenet_digits_in_bf16_reaches_float32_accuracy(tmp_path):
  float32 = loop.run(_lenet_digits("float32"), str(tmp_path / "float32"))["test/accuracy"]
  bfloat16 = loop.run(_lenet_digits("bfloat16"), str(tmp_path / "bfloat16"))["test/accuracy"]
  print(f"test accuracy: float32 {float32:.4f}, bfloat16 {bfloat16:.4f}")
  assert float32 > 0.95
  assert abs(bfloat16 - float32) <= 0.005
