"""Transfer learning: frozen parameters stay put in linear-probe mode, the head is new."""

import os
import sys

import jax
import numpy as np
import optax
import pytest

from cnnjax import models
from cnnjax.train import checkpoint
from cnnjax.train import loop
from cnnjax.train import optim
from cnnjax.train import state as state_lib
from cnnjax.train import transfer

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "configs"))
import lenet_digits  # noqa: E402

pytestmark = pytest.mark.slow


def _source_workdir(path: str) -> dict:
  """A cnnjax workdir holding a LeNet-5 with 7 classes; returns its variables."""
  model = models.create("lenet5", num_classes=7)
  variables = jax.device_get(model.init(jax.random.key(42), np.zeros((1, 32, 32, 1)),
                                        train=False))
  variables = {"params": variables["params"], "batch_stats": {}}
  state = state_lib.create_state(variables, optax.sgd(0.1), optax.contrib.reduce_on_plateau())
  checkpointer = checkpoint.Checkpointer(path, async_save=False)
  checkpointer.save(1, state, {"iterator": {}})
  checkpointer.close()
  return variables


def test_linear_probe_freezes_backbone_and_reinitialises_head(tmp_path):
  source = _source_workdir(str(tmp_path / "source"))
  config = lenet_digits.get_config()
  config.num_epochs = 0.0
  config.num_steps = 4
  config.batch_size = 32
  config.eval_every = 0
  config.transfer.init_from = str(tmp_path / "source")
  config.transfer.mode = "linear_probe"
  config.schedule.learning_rate = 0.05
  workdir = str(tmp_path / "probe")
  summary = loop.run(config, workdir)
  assert summary["step"] == 4 and 0.0 <= summary["accuracy"] <= 1.0

  trained = transfer.load_source_workdir(workdir)["params"]
  assert trained["output"]["kernel"].shape == (84, 10)
  assert trained["output"]["bias"].shape == (10,)
  for name in ("c1", "c3", "c5", "f6"):
    for leaf in ("kernel", "bias"):
      np.testing.assert_array_equal(trained[name][leaf], source["params"][name][leaf])
  # The head was trained from a fresh initialisation.
  assert np.abs(trained["output"]["bias"]).sum() > 0


def test_finetune_last_stages_freezes_the_rest():
  config = lenet_digits.get_config()
  config.transfer.init_from = "unused"
  config.transfer.mode = "finetune_last_stages"
  config.transfer.trainable = ("f6",)
  params = models.create("lenet5").init(jax.random.key(0), np.zeros((1, 32, 32, 1)))["params"]
  patterns = transfer.frozen_patterns(config, params, ["output/kernel", "output/bias"])
  labels = optim.freeze_labels(params, patterns)
  assert {name: labels[name]["kernel"] for name in labels} == {
      "c1": "frozen", "c3": "frozen", "c5": "frozen", "f6": "trained", "output": "trained"}


def test_merge_keeps_matching_leaves_and_reports_the_head():
  fresh = {"params": {"a": np.zeros((2, 3)), "head": np.zeros((3, 10))}, "batch_stats": {}}
  source = {"params": {"a": np.ones((2, 3)), "head": np.ones((3, 7))}, "batch_stats": {}}
  merged, head = transfer.merge(fresh, source)
  np.testing.assert_array_equal(merged["params"]["a"], np.ones((2, 3)))
  np.testing.assert_array_equal(merged["params"]["head"], np.zeros((3, 10)))
  assert head == ["head"]


def test_torchvision_weights_initialise_all_but_the_head(tmp_path):
  torch = pytest.importorskip("torch")
  torchvision = pytest.importorskip("torchvision")
  weights = str(tmp_path / "resnet18.pth")
  torch.save(torchvision.models.resnet18(num_classes=5).state_dict(), weights)
  config = lenet_digits.get_config()
  config.transfer.torchvision = "resnet18"
  config.transfer.torchvision_weights = weights
  source = transfer.load_source(config)
  shapes = jax.eval_shape(lambda: models.create("resnet18", num_classes=10).init(
      jax.random.key(0), np.zeros((1, 32, 32, 3)), train=False))
  fresh = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  merged, head = transfer.merge({"params": fresh["params"], "batch_stats": fresh["batch_stats"]},
                                source)
  assert sorted(head) == ["fc/bias", "fc/kernel"]
  assert merged["params"]["fc"]["kernel"].shape == (512, 10)
  np.testing.assert_array_equal(merged["params"]["conv1"]["kernel"],
                                source["params"]["conv1"]["kernel"])
  np.testing.assert_array_equal(merged["batch_stats"]["bn1"]["mean"],
                                source["batch_stats"]["bn1"]["mean"])
