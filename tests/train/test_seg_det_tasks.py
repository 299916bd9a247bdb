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
  config.eval_every = 0
  config.checkpoint_every = 2
  config.async_checkpoints = False
  config.progress = "lines"
  return train.run(config, str(workdir))


@pytest.mark.parametrize("name,metric", [("unet_pets", "miou"), ("yolo_voc", "map50"),
                                         ("fast_rcnn_voc", "map50")])
def test_real_dataset_configs_run_two_steps_on_mock_data(name, metric, tmp_path):
  config = _config(name, "local")
  with tfds.testing.mock_data(num_examples=8):
    summary = _two_steps(config, tmp_path)
  assert summary["step"] == 2 and 0.0 <= summary[metric] <= 1.0


@pytest.mark.parametrize("name,model_kwargs", [
    ("unet_shapes", {"depth": 1, "base_width": 4}),
    ("yolo_shapes", {"backbone_widths": (4, 8), "head_width": 8, "hidden": 16}),
    ("fast_rcnn_shapes", {"backbone_widths": (4, 8), "hidden": 16}),
    ("rcnn_shapes", {"backbone_widths": (4, 8), "hidden": 16, "crop_size": 8}),
])
def test_shapes_configs_train_and_evaluate(name, model_kwargs, tmp_path):
  config = _config(name)
  config.model_kwargs.update(model_kwargs)
  config.dataset = "shapes/tiny"
  config.data_dir = str(tmp_path / "data")
  config.batch_size = 8
  config.eval_split = "test[:8]"
  summary = _two_steps(config, tmp_path / "work")
  assert summary["step"] == 2
  assert np.isfinite([v for k, v in summary.items() if k != "step"]).all()


def test_jittered_proposals_cover_objects_and_stay_in_the_image():
  boxes = jnp.array([[2.0, 3.0, 12.0, 9.0], [0, 0, 0, 0]])
  valid = jnp.array([True, False])
  proposals, proposal_valid = det_task.jittered_proposals(jax.random.key(0), boxes, valid, 32,
                                                          8, 4)
  assert proposals.shape == (20, 4) and proposal_valid.shape == (20,)
  assert not np.asarray(proposal_valid[8:16]).any()  # copies of the padded box
  assert (np.asarray(proposals) >= 0).all() and (np.asarray(proposals) <= 32).all()


def test_tasks_are_registered():
  assert {"segmentation", "yolo", "region_cnn"} <= set(tasks.names())
