"""The tasks' on-device input preparation normalises with the dataset's statistics."""

import importlib.util
import pathlib

import jax
import numpy as np
import pytest

from cnnjax.data import augment
from cnnjax.train import config as config_lib
from cnnjax.train.tasks import inputs

CONFIGS = pathlib.Path(__file__).parents[2] / "experiments" / "configs"


def _config(name: str):
  spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


@pytest.mark.parametrize(
  "name, dataset",
  [
    ("lenet_digits", "digits"),
    ("triplet_digits", "digits"),
    ("resnet_cifar10", "cifar10"),
    ("simclr_cifar10", "cifar10"),
    ("resnet50_imagenet", "imagenet2012"),
    ("alexnet_imagenet", "imagenet2012"),
  ],
)
def test_configs_normalise_with_their_dataset_statistics(name, dataset):
  assert (
    inputs.normalization(_config(name).input, _config(name).dataset)
    == augment.DATASET_STATS[dataset]
  )


def test_explicit_statistics_win_and_unknown_datasets_get_half():
  config = _config("resnet_cifar10")
  config.input.mean = (0.1, 0.2, 0.3)
  assert inputs.normalization(config.input, config.dataset) == (
    (0.1, 0.2, 0.3),
    augment.DATASET_STATS["cifar10"][1],
  )
  config.input.std = (0.4, 0.5, 0.6)
  assert inputs.normalization(config.input, config.dataset) == ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
  config = config_lib.defaults()
  config.dataset = "shapes/small"
  assert inputs.normalization(config.input, config.dataset) == ((0.5,), (0.5,))
  config.dataset = "cifar10:3.0.2"
  assert inputs.normalization(config.input, config.dataset) == augment.DATASET_STATS["cifar10"]


def test_prepared_images_use_the_dataset_statistics():
  config = _config("lenet_digits")
  images = np.full((2, 8, 8, 1), 255, np.uint8)
  prepared = inputs.prepare_images(
    images, jax.random.key(0), False, config.input, config.dataset, 32, np.float32
  )
  (mean,), (std,) = augment.DATASET_STATS["digits"]
  # The digit fills the centred 28x28; the zero padding around it normalises to -mean/std.
  np.testing.assert_allclose(prepared[0, 16, 16, 0], (1 - mean) / std, rtol=1e-6)
  np.testing.assert_allclose(prepared[0, 0, 0, 0], -mean / std, rtol=1e-6)
