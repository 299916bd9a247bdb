"""The per-device step gives the same numbers under shard_map, pmap and one device."""

import jax
import numpy as np
import pytest

from cnnjax.errors import UsageError
from cnnjax.train import parallel
import train_helpers as helpers

pytestmark = pytest.mark.slow

CASES = {
  "classification": helpers.tiny_config("classification"),
  "simclr": helpers.tiny_config("simclr", **{"simclr.projection_dim": 8, "optimizer.name": "lars"}),
  "metric_learning": helpers.tiny_config(
    "metric_learning",
    **{
      "metric.embedding_dim": 8,
      "metric.examples_per_class": 2,
      "optimizer.name": "adamw",
      "schedule.learning_rate": 1e-2,
    },
  ),
}


# pmap and shard_map run the same step; the costlier SimCLR and triplet steps (whose
# cross-device parts are the losses' all_gathers) compare shard_map with one device.
RUNNERS = {
  "classification": ("shard_map", "pmap"),
  "simclr": ("shard_map",),
  "metric_learning": ("shard_map",),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_eight_devices_agree_with_one(name):
  config = CASES[name]
  steps = helpers.batches(3, config.batch_size)
  setup = helpers.initial_state(config)
  assert len(jax.devices()) == 8
  one = helpers.train(setup, parallel.Runner("shard_map", jax.devices()[:1]), steps)
  for kind in RUNNERS[name]:
    other = helpers.train(setup, parallel.Runner(kind), steps)
    np.testing.assert_allclose(one[2], other[2], rtol=1e-5, atol=1e-6)
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5), one[0], other[0]
    )
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5), one[1], other[1]
    )
  # The steps really trained: the loss changed from step to step.
  assert one[2][0] != one[2][-1]


def test_batch_must_divide_over_devices():
  with pytest.raises(UsageError, match="not divisible by the 8 devices"):
    parallel.Runner("shard_map").check_batch_size(12)
  with pytest.raises(UsageError, match="unknown parallel"):
    parallel.Runner("xmap")
