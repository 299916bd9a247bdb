"""Segmentation and detection tasks through the trainer: shapes configs and real-dataset
configs for two steps under tfds.testing.mock_data."""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from cnnjax import train
from cnnjax.axis import AXIS
from cnnjax.data import adapters
from cnnjax.data.builders import shapes
from cnnjax.errors import UsageError
from cnnjax.train import tasks
from cnnjax.train.tasks import detection as det_task

CONFIGS = pathlib.Path(__file__).parents[2] / "experiments" / "configs"


def _config(name: str, arg: str | None = None):
  spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _two_steps(config, workdir):
  config.num_steps = 2
  config.log_every = 1
  config.checkpoint_every = 2
  config.async_checkpoints = False
  config.progress = "lines"
  return train.run(config, str(workdir))


@pytest.mark.slow
@pytest.mark.parametrize(
  "name,metric", [("unet_pets", "miou"), ("yolo_voc", "map50"), ("fast_rcnn_voc", "map50")]
)
def test_real_dataset_configs_run_two_steps_on_mock_data(name, metric, tmp_path):
  config = _config(name, "local")
  with tfds.testing.mock_data(num_examples=8):
    summary = _two_steps(config, tmp_path)
  assert summary["step"] == 2 and 0.0 <= summary[f"test/{metric}"] <= 1.0


def _shapes_batch(n: int = 2, size: int = 32):
  rng = np.random.default_rng(0)
  examples = [shapes.render(rng, size, 4) for _ in range(n)]
  batch = {k: np.stack([e[k] for e in examples]) for k in adapters.SEGMENTATION_AND_DETECTION}
  batch["label"] = np.asarray(batch["label"], np.int32)
  batch["valid"] = np.ones(n, bool)
  return jax.tree.map(lambda x: x[None], batch)  # a leading device axis of 1


@pytest.mark.parametrize("name", ["unet_shapes", "yolo_shapes", "fast_rcnn_shapes", "rcnn_shapes"])
def test_shapes_configs_trace_train_and_eval_steps(name):
  config = _config(name)
  data = tasks.DataInfo(
    3, (32, 32, 3), {"train": 2000, "test": 500}, adapters.SEGMENTATION_AND_DETECTION
  )
  task = tasks.create(config, data)
  variables = jax.eval_shape(task.init_variables, jax.random.key(0))
  rng = jax.random.key(1)

  def train_step(variables, batch):
    batch = task.preprocess(batch, rng, train=True)
    loss, (metrics, _) = task.loss_fn(
      variables["params"], variables["batch_stats"], batch, rng, train=True
    )
    return loss, metrics

  def eval_step(variables, batch):
    return task.eval_step(variables, task.preprocess(batch, rng, train=False))

  batch = _shapes_batch()

  def per_device(step):
    return jax.vmap(step, in_axes=(None, 0), axis_name=AXIS)

  loss, metrics = jax.eval_shape(per_device(train_step), variables, batch)
  assert loss.shape == (1,) and "loss" in metrics
  sums, outputs = jax.eval_shape(per_device(eval_step), variables, batch)
  if name == "unet_shapes":
    assert sums["confusion"].shape == (1, 4, 4)
  else:
    assert outputs["det_boxes"].shape[:2] == (1, 2) and outputs["gt_boxes"].shape == (1, 2, 4, 4)


@pytest.mark.parametrize("name", ["unet_shapes", "yolo_shapes", "fast_rcnn_shapes"])
@pytest.mark.parametrize(
  "key, value, message",
  [
    ("augment", "cifar", "input.augment='cifar' crops and shifts the images but not the"),
    ("augment", "shift", "input.augment='shift'"),
    ("augment", "inception", "input.augment='inception'"),
    ("center_crop", True, "input.center_crop crops the images but not the"),
    ("resize", 24, "input.resize=24 shrinks the images inside zero padding but not the"),
  ],
)
def test_image_only_geometry_is_refused(name, key, value, message):
  config = _config(name)
  data = tasks.DataInfo(
    3, (32, 32, 3), {"train": 2000, "test": 500}, adapters.SEGMENTATION_AND_DETECTION
  )
  config.input.size = 32
  config.input.resize = 32  # The same side as the input: nothing to pad, allowed.
  tasks.create(config, data)
  config.input[key] = value
  with pytest.raises(UsageError, match=message) as error:
    tasks.create(config, data)
  assert "\n" not in str(error.value)


def test_jittered_proposals_cover_objects_and_stay_in_the_image():
  boxes = jnp.array([[2.0, 3.0, 12.0, 9.0], [0, 0, 0, 0]])
  valid = jnp.array([True, False])
  jitter = jax.jit(det_task.jittered_proposals, static_argnums=(3, 4, 5))
  proposals, proposal_valid = jitter(jax.random.key(0), boxes, valid, 32, 8, 4)
  assert proposals.shape == (20, 4) and proposal_valid.shape == (20,)
  assert not np.asarray(proposal_valid[8:16]).any()  # copies of the padded box
  assert (np.asarray(proposals) >= 0).all() and (np.asarray(proposals) <= 32).all()


def test_tasks_are_registered():
  assert {"segmentation", "yolo", "region_cnn"} <= set(tasks.names())
