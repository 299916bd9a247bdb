"""Learning-rate schedules, reduce-on-plateau in both modes, and the weight-decay mask."""

import jax
import numpy as np
import pytest

import train_helpers as helpers
from cnnjax import param_paths
from cnnjax import models
from cnnjax.train import config as config_lib
from cnnjax.train import optim


def _schedule_config(name: str, **schedule):
  config = config_lib.defaults()
  config.schedule.name = name
  config.schedule.learning_rate = 0.1
  for key, value in schedule.items():
    config.schedule[key] = value
  return config


def _rates(config, num_steps: int, steps: list[int]) -> list[float]:
  schedule = optim.create_schedule(config.schedule, num_steps, config.batch_size)
  return [float(schedule(step)) for step in steps]


def test_warmup_then_cosine():
  config = _schedule_config("cosine", warmup_steps=10, end_value=0.001)
  rates = _rates(config, 110, [0, 5, 10, 60, 110])
  np.testing.assert_allclose(rates, [0.0, 0.05, 0.1, (0.1 + 0.001) / 2, 0.001], rtol=1e-5)


def test_step_decay_boundaries_are_absolute_steps():
  config = _schedule_config("step", boundaries=(100, 150), decay_factor=0.1)
  np.testing.assert_allclose(
    _rates(config, 200, [0, 99, 100, 149, 150]), [0.1, 0.1, 0.01, 0.01, 0.001], rtol=1e-5
  )
  config.schedule.warmup_steps = 10
  np.testing.assert_allclose(
    _rates(config, 200, [0, 5, 10, 99, 100, 109, 149, 150]),
    [0.0, 0.05, 0.1, 0.1, 0.01, 0.01, 0.01, 0.001],
    rtol=1e-5,
  )


def test_learning_rate_scales_with_batch():
  config = _schedule_config("constant", scale_with_batch="linear")
  config.batch_size = 512
  assert _rates(config, 10, [3]) == pytest.approx([0.2])


def _plateau_scales(mode: str, values: list[float], patience: int = 2, **schedule) -> list[float]:
  """The plateau scale after each evaluation reporting `values` in turn."""
  config = _schedule_config("plateau", patience=patience, **schedule)
  config.best_mode = mode
  state = jax.device_get(
    optim.plateau_transform(config.schedule).init({"w": np.zeros(3, np.float32)})
  )
  scales = []
  for value in values:
    state = optim.plateau_update(state, value, config.schedule, config.best_mode)
    scales.append(float(state.scale))
  return scales


@pytest.mark.parametrize("mode", ["max", "min"])
@pytest.mark.parametrize("level", [0.9, -0.9, 0.0])
def test_plateau_decays_a_flat_metric_after_patience_evaluations(mode, level):
  np.testing.assert_allclose(
    _plateau_scales(mode, [level] * 6), [1.0, 1.0, 0.1, 0.1, 0.01, 0.01], rtol=1e-6
  )


@pytest.mark.parametrize(
  "mode, values",
  [
    ("max", [0.1, 0.3, 0.5, 0.7, 0.9]),
    ("max", [-0.9, -0.7, -0.5, -0.3, -0.1]),
    ("min", [0.9, 0.7, 0.5, 0.3, 0.1]),
    ("min", [-0.1, -0.3, -0.5, -0.7, -0.9]),
  ],
)
def test_plateau_keeps_the_rate_while_the_metric_improves(mode, values):
  assert _plateau_scales(mode, values) == [1.0] * 5


def test_plateau_needs_more_than_rtol_and_honours_cooldown_and_min_scale():
  # Gains below rtol (relative to the best) do not count as improvements.
  assert _plateau_scales("max", [0.5, 0.50001, 0.50002], rtol=1e-3) == pytest.approx(
    [1.0, 1.0, 0.1]
  )
  assert _plateau_scales("max", [0.5, 0.6, 0.7], rtol=1e-3) == [1.0] * 3
  # Worse values in the wrong direction never improve: min mode with a rising metric.
  assert _plateau_scales("min", [0.1, 0.2, 0.3]) == pytest.approx([1.0, 1.0, 0.1])
  scales = _plateau_scales("max", [0.5] * 8, patience=1, cooldown=2, min_scale=0.005)
  np.testing.assert_allclose(scales, [1.0, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.005], rtol=1e-6)


def _resnet_params():
  model = models.create("resnet20", num_classes=4, width=4, stage_sizes=(1, 1))
  return jax.device_get(model.init(jax.random.key(0), np.zeros((1, 8, 8, 3)), train=False))[
    "params"
  ]


def test_weight_decay_mask_excludes_batchnorm_and_bias():
  params = _resnet_params()
  names = jax.tree.leaves(param_paths.path_names(params))
  mask = jax.tree.leaves(optim.decay_mask(params))
  assert any(name.endswith("/scale") for name in names)
  assert any(name.endswith("/bias") for name in names)
  assert mask == [name.endswith("kernel") for name in names]
  assert all(jax.tree.leaves(optim.decay_mask(params, decay_bn_and_bias=True)))


@pytest.mark.parametrize("name", ["sgd", "adamw", "lars"])
@pytest.mark.parametrize("decay_bn_and_bias", [False, True])
def test_optimizers_decay_only_the_masked_parameters(name, decay_bn_and_bias):
  config = helpers.tiny_config(
    **{
      "optimizer.name": name,
      "optimizer.weight_decay": 0.1,
      "optimizer.decay_bn_and_bias": decay_bn_and_bias,
    }
  )
  # Non-zero everywhere, so that decay shows (BatchNorm offsets and biases start at zero).
  params = jax.tree.map(np.ones_like, _resnet_params())
  tx = optim.create_optimizer(
    config.optimizer, params, optim.create_schedule(config.schedule, 10, config.batch_size)
  )
  zero_grads = jax.tree.map(np.zeros_like, params)
  updates, _ = tx.update(zero_grads, tx.init(params), params)
  for name_, update in zip(
    jax.tree.leaves(param_paths.path_names(params)), jax.tree.leaves(updates)
  ):
    decayed = decay_bn_and_bias or name_.endswith("kernel")
    assert bool(np.any(np.asarray(update) != 0)) == decayed, name_
