"""Transfer learning: frozen parameters stay put in linear-probe mode, the head is new, and
a linear probe trains on the features evaluation sees."""

import os
import sys

import jax
import numpy as np
import optax
import pytest

from cnnjax import models
from cnnjax import param_paths
from cnnjax.axis import AXIS
from cnnjax.errors import UsageError
from cnnjax.train import checkpoint
from cnnjax.train import freezing as freezing_lib
from cnnjax.train import loop
from cnnjax.train import optim
from cnnjax.train import parallel
from cnnjax.train import state as state_lib
from cnnjax.train import transfer

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "configs"))
import lenet_digits  # noqa: E402
import train_helpers  # noqa: E402

pytestmark = pytest.mark.slow


def _source_workdir(path: str) -> dict:
  """A cnnjax workdir holding a LeNet-5 with 7 classes; returns its variables."""
  model = models.create("lenet5", num_classes=7)
  variables = jax.device_get(model.init(jax.random.key(42), np.zeros((1, 32, 32, 1)), train=False))
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
  config.transfer.init_from = str(tmp_path / "source")
  config.transfer.mode = "linear_probe"
  config.schedule.learning_rate = 0.05
  workdir = str(tmp_path / "probe")
  summary = loop.run(config, workdir)
  assert summary["step"] == 4 and 0.0 <= summary["test/accuracy"] <= 1.0

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
  freezing = transfer.freezing(config.transfer, params, ["output/kernel", "output/bias"])
  labels = freezing.labels
  assert {name: labels[name]["kernel"] for name in labels} == {
    "c1": "frozen",
    "c3": "frozen",
    "c5": "frozen",
    "f6": "trained",
    "output": "trained",
  }
  assert not freezing.batch_stats


@pytest.mark.parametrize(
  "mode, frozen, batch_stats",
  [("linear_probe", ["c1", "c3", "c5", "f6"], True), ("finetune_all", [], False)],
)
def test_freezing_is_decided_once_from_the_mode(mode, frozen, batch_stats):
  config = lenet_digits.get_config()
  config.transfer.init_from = "unused"
  config.transfer.mode = mode
  params = models.create("lenet5").init(jax.random.key(0), np.zeros((1, 32, 32, 1)))["params"]
  freezing = transfer.freezing(config.transfer, params, ["output/kernel", "output/bias"])
  assert sorted(name for name in params if freezing.labels[name]["kernel"] == "frozen") == frozen
  assert freezing.batch_stats == batch_stats


def test_freezing_every_parameter_is_refused():
  config = lenet_digits.get_config()
  config.transfer.freeze = (".",)
  params = models.create("lenet5").init(jax.random.key(0), np.zeros((1, 32, 32, 1)))["params"]
  with pytest.raises(UsageError, match="matches every parameter"):
    transfer.freezing(config.transfer, params, [])


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
  source = transfer.load_source(config.transfer)
  shapes = jax.eval_shape(
    lambda: models.create("resnet18", num_classes=10).init(
      jax.random.key(0), np.zeros((1, 32, 32, 3)), train=False
    )
  )
  fresh = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  merged, head = transfer.merge(
    {"params": fresh["params"], "batch_stats": fresh["batch_stats"]}, source
  )
  assert sorted(head) == ["fc/bias", "fc/kernel"]
  assert merged["params"]["fc"]["kernel"].shape == (512, 10)
  np.testing.assert_array_equal(
    merged["params"]["conv1"]["kernel"], source["params"]["conv1"]["kernel"]
  )
  np.testing.assert_array_equal(
    merged["batch_stats"]["bn1"]["mean"], source["batch_stats"]["bn1"]["mean"]
  )


HEAD = ["fc/kernel", "fc/bias"]


def _probe_setup(mode: str = "linear_probe"):
  """A tiny ResNet-20 (BatchNorm) task in `mode`, its variables and its `Freezing`."""
  config = train_helpers.tiny_config(
    **{"transfer.init_from": "unused", "transfer.mode": mode, "global_bn": False}
  )
  task = train_helpers.make_task(config)
  variables = jax.device_get(jax.jit(task.init_variables)(jax.random.key(0)))
  # Running statistics unlike any batch's, so batch and running statistics cannot agree.
  variables["batch_stats"] = jax.tree.map(lambda x: x + 0.5, variables["batch_stats"])
  return config, task, variables, transfer.freezing(config.transfer, variables["params"], HEAD)


def _per_device(fn):
  """`fn` run under a named device axis of size 1, as the trainer's steps are."""
  return jax.jit(jax.vmap(fn, in_axes=(None, 0), axis_name=AXIS))


def _images(seed: int = 0) -> np.ndarray:
  images = np.random.default_rng(seed).integers(
    0, 256, (1, 8, *train_helpers.IMAGE_SHAPE), dtype=np.uint8
  )
  return {"image": images, "label": np.zeros((1, 8), np.int32)}


@pytest.mark.parametrize("mode", ["linear_probe", "finetune_all"])
def test_linear_probe_trains_on_eval_features_and_keeps_batch_stats(mode):
  _, task, variables, freezing = _probe_setup(mode)
  rng = jax.random.key(1)

  def train_and_eval(variables, batch):
    images = task.preprocess(batch, rng, train=True)["image"]
    # The model's mode in training, as the train step sets it from the freezing.
    trained, batch_stats = task.apply(variables, images, train=not freezing.batch_stats, rng=rng)
    return trained, batch_stats, task.model.apply(variables, images, train=False)

  trained, batch_stats, evaluated = _per_device(train_and_eval)(variables, _images())
  same_stats = all(
    np.array_equal(a[0], b)
    for a, b in zip(jax.tree.leaves(batch_stats), jax.tree.leaves(variables["batch_stats"]))
  )
  if mode == "linear_probe":
    np.testing.assert_allclose(trained, evaluated, rtol=1e-6, atol=1e-6)
    assert same_stats
  else:  # Fine-tuning trains BatchNorm on batch statistics, as before.
    assert not np.allclose(trained, evaluated, atol=1e-3) and not same_stats


def test_linear_probe_step_runs_the_backbone_forward_only():
  config, task, variables, frozen = _probe_setup()
  schedule = optim.create_schedule(config.schedule, 2, config.batch_size)
  tx = optim.create_optimizer(config.optimizer, variables["params"], schedule, frozen)
  state = state_lib.create_state(variables, tx, optim.plateau_transform(config.schedule))
  batch = {k: v[0] for k, v in _images().items()}

  def convolutions(freezing):
    step = state_lib.make_train_step(task, tx, schedule, jax.random.key(2), freezing)
    jaxpr = jax.make_jaxpr(jax.vmap(step, in_axes=(None, 0), axis_name=AXIS))(
      state, jax.tree.map(lambda x: x[None], batch)
    )
    return str(jaxpr).count("conv_general_dilated")

  forward = str(
    jax.make_jaxpr(lambda v, x: task.model.apply(v, x, train=False))(
      variables, np.zeros((8, *train_helpers.IMAGE_SHAPE), np.float32)
    )
  ).count("conv_general_dilated")
  # stop_gradient on the frozen backbone leaves no convolution to differentiate.
  assert convolutions(frozen) == forward < convolutions(freezing_lib.NOTHING)

  runner = parallel.Runner("shard_map")
  step = runner.compile(
    state_lib.make_train_step(task, tx, schedule, jax.random.key(2), frozen),
    in_specs=(parallel.REPLICATED, parallel.SHARDED),
    out_specs=(parallel.REPLICATED, parallel.REPLICATED),
    donate_argnums=(0,),
  )
  replicated = runner.replicate(jax.device_get(state))
  for seed in range(2):
    replicated, _ = step(replicated, runner.shard_batch(train_helpers.batches(1, 16, seed=seed)[0]))
  final = runner.to_host(replicated, parallel.REPLICATED)
  for collection in ("params", "batch_stats"):
    names = jax.tree.leaves(param_paths.path_names(variables[collection]))
    for name, before, after in zip(
      names, jax.tree.leaves(variables[collection]), jax.tree.leaves(getattr(final, collection))
    ):
      if name in HEAD:
        assert not np.array_equal(before, after), name
      else:
        np.testing.assert_array_equal(before, after, err_msg=name)
