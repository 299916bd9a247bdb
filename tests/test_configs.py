"""Every experiment config loads, passes validation, and refuses a variant it does not know."""

import importlib.util
import pathlib

import pytest

from cnnjax.errors import UsageError
from cnnjax.train import config as config_lib

CONFIGS = sorted((pathlib.Path(__file__).parents[1] / "experiments" / "configs").glob("*.py"))
BY_NAME = {path.stem: path for path in CONFIGS}


def _get_config(path: pathlib.Path, arg: str | None = None):
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def test_configs_are_found():
  assert {"lenet_digits", "resnet_cifar10", "facenet_lfw"} <= set(BY_NAME)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_and_its_local_variant_validate(path):
  for arg in (None, "", "local"):
    config_lib.validate(_get_config(path, arg))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_unknown_variant_is_a_one_line_error(path):
  with pytest.raises(UsageError, match="no variant 'locl'; did you mean 'local'") as error:
    _get_config(path, "locl")
  assert path.name in str(error.value) and "\n" not in str(error.value)
  with pytest.raises(UsageError, match="no variant 'bogus'"):
    _get_config(path, "local,bogus")


@pytest.mark.parametrize(
  "name, arg, key, value",
  [
    ("resnet_cifar10", "resnet56,local", "model", "resnet56"),
    ("resnet_cifar10", "resnet110", "dataset", "cifar10"),
    ("alexnet_imagenet", "alexnet2012,local", "model", "alexnet2012"),
    ("triplet_digits", "hard", "metric.loss", "hard"),
    ("resnet50_imagenet", "local", "dataset", "shapes/small"),
  ],
)
def test_documented_variants(name, arg, key, value):
  node = _get_config(BY_NAME[name], arg)
  for part in key.split("."):
    node = node[part]
  assert node == value


def test_exclusive_variants_are_refused():
  with pytest.raises(UsageError, match="resnet20 and resnet56 exclude each other"):
    _get_config(BY_NAME["resnet_cifar10"], "resnet56,resnet20")
