"""Gradient accumulation and gradient caching give the whole batch's update.

On BatchNorm-free backbones (LeNet-5; a ResNet with GroupNorm), the micro-batched SimCLR
and triplet steps (gradient caching) and the accumulated classification step end with the
parameters of the whole-batch step, on one device and on eight, under shard_map and pmap;
the bad settings are one-line errors.
"""

import jax
import numpy as np
import pytest

import train_helpers as helpers
from cnnjax.errors import UsageError
from cnnjax.train import config as config_lib
from cnnjax.train import parallel

pytestmark = pytest.mark.slow

LENET = {"model": "lenet5", "model_kwargs": {}, "global_bn": False, "input.size": 32}
CASES = {
  "simclr": helpers.tiny_config(
    "simclr", **LENET, **{"simclr.projection_dim": 8, "optimizer.name": "lars"}
  ),
  "metric_learning": helpers.tiny_config(
    "metric_learning",
    **LENET,
    **{
      # SGD: Adam's normalisation would magnify float32 rounding of near-zero gradients.
      "metric.embedding_dim": 8,
      "metric.examples_per_class": 2,
      "metric.margin": 0.5,
    },
  ),
  "classification": helpers.tiny_config("classification", **LENET),
  "simclr_group_norm": helpers.tiny_config(
    "simclr",
    **{
      "model_kwargs": {"width": 4, "stage_sizes": (1, 1), "norm": "group", "norm_groups": 2},
      "global_bn": False,
      "simclr.projection_dim": 8,
      "optimizer.name": "lars",
    },
  ),
}


def _close(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-5), a, b)


@pytest.mark.parametrize(
  "name, devices, option, size, kind",
  [
    ("simclr", 1, "micro_batch_size", 4, "shard_map"),
    ("simclr", 8, "micro_batch_size", 1, "shard_map"),
    ("simclr", 8, "micro_batch_size", 1, "pmap"),
    ("simclr_group_norm", 2, "micro_batch_size", 2, "shard_map"),
    ("metric_learning", 1, "micro_batch_size", 4, "shard_map"),
    ("metric_learning", 8, "micro_batch_size", 1, "shard_map"),
    ("metric_learning", 8, "micro_batch_size", 1, "pmap"),
    ("classification", 1, "accumulate_steps", 4, "shard_map"),
    ("classification", 8, "accumulate_steps", 2, "shard_map"),
    ("classification", 8, "accumulate_steps", 2, "pmap"),
  ],
)
def test_split_batches_give_the_whole_batch_update(name, devices, option, size, kind):
  config = CASES[name]
  steps = helpers.batches(3, config.batch_size)
  setup = helpers.initial_state(config)
  runner = parallel.Runner(kind, jax.devices()[:devices])
  whole = helpers.train(setup, runner, steps)
  split = helpers.train(setup, runner, steps, **{option: size})
  np.testing.assert_allclose(whole[2], split[2], rtol=1e-5, atol=1e-6)
  _close(whole[0], split[0])
  assert whole[2][0] != whole[2][-1]  # The steps trained.


def test_gradient_caching_with_batch_norm_runs_and_keeps_statistics_finite():
  config = helpers.tiny_config("simclr", **{"simclr.projection_dim": 8})  # Global BN.
  steps = helpers.batches(3, config.batch_size)
  params, batch_stats, losses = helpers.train(
    helpers.initial_state(config), parallel.Runner("shard_map"), steps, micro_batch_size=1
  )
  assert all(np.isfinite(losses))
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves((params, batch_stats)))


@pytest.mark.parametrize(
  "task, changes, message",
  [
    ("classification", {"micro_batch_size": 4}, "has no gradient caching"),
    ("simclr", {"micro_batch_size": 4, "accumulate_steps": 2}, "set one of them"),
    ("classification", {"accumulate_steps": 0}, "accumulate_steps must be 1 or more"),
    ("classification", {"ema_decay": 1.0}, r"ema_decay must lie in \[0, 1\)"),
    ("classification", {"ema_decay": -0.1}, r"ema_decay must lie in \[0, 1\)"),
  ],
)
def test_bad_batch_splits_and_decays_are_refused(task, changes, message):
  config = config_lib.defaults(task)
  config.update_from_flattened_dict(changes)
  with pytest.raises(UsageError, match=message):
    config_lib.validate(config)
