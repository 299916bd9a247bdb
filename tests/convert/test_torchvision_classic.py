"""torchvision AlexNet, VGG and GoogLeNet weights give the same logits in cnnjax.

Random torchvision weights (with random BatchNorm statistics, so evaluation-mode BN is not
the identity) are converted and both frameworks run the same images. Differences are
measured against the logits' scale, which is small for randomly initialised networks.
"""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

import torchvision_helpers as helpers  # noqa: E402
from cnnjax import models  # noqa: E402
from cnnjax.convert import mapping  # noqa: E402
from cnnjax.convert.torchvision import convert  # noqa: E402
from cnnjax.errors import UsageError  # noqa: E402

pytestmark = pytest.mark.torch


def _images(size: int) -> np.ndarray:
  """[2, 3, size, size] float32, NCHW for torch."""
  return np.random.default_rng(0).normal(size=(2, 3, size, size)).astype(np.float32)


def _run_cnnjax(name: str, state_dict, images: np.ndarray, train: bool = False, **model_kwargs):
  """Converts `state_dict` and runs the cnnjax model on NCHW `images`."""
  variables = convert(name, state_dict, **model_kwargs)
  _, implied_kwargs = mapping.prefix_mapping(name, state_dict)
  model = models.create(name, **implied_kwargs, **model_kwargs)
  nhwc = images.transpose(0, 2, 3, 1)
  if train:
    outputs, _ = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
      variables, nhwc
    )
    return outputs
  return jax.jit(model.apply)(variables, nhwc)


def _assert_close(got, expected) -> None:
  got, expected = np.asarray(got), expected.detach().numpy()
  assert got.shape == expected.shape
  # Below 1e-4 absolute (the issue's bar) and relative to the logits' scale, since random
  # weights give small logits.
  error = np.abs(got - expected).max()
  assert error < 1e-4 and error < 1e-4 * max(np.abs(expected).max(), 1e-2)


@pytest.fixture(scope="module")
def alexnet_state_dict():
  return helpers.random_torch_model("alexnet", num_classes=10).state_dict()


def test_alexnet(alexnet_state_dict):
  model = helpers.random_torch_model("alexnet", num_classes=10)
  images = _images(127)  # 127 -> 31 -> 15 -> 7 -> 3: the adaptive pool repeats values.
  with torch.no_grad():
    expected = model(torch.from_numpy(images))
  _assert_close(_run_cnnjax("alexnet", alexnet_state_dict, images), expected)


@pytest.mark.parametrize(
  "name", ["vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"]
)
def test_vgg(name):
  model = helpers.random_torch_model(name, num_classes=10)
  images = _images(64)
  with torch.no_grad():
    expected = model(torch.from_numpy(images))
  _assert_close(_run_cnnjax(name, model.state_dict(), images), expected)


def test_googlenet_without_aux_heads_and_with_input_transform():
  model = helpers.random_torch_model(
    "googlenet", num_classes=10, aux_logits=False, transform_input=True, init_weights=False
  )
  images = _images(64)
  with torch.no_grad():
    expected = model(torch.from_numpy(images))
  variables = convert("googlenet", model.state_dict())
  assert "aux1" not in variables["params"]
  _assert_close(
    _run_cnnjax("googlenet", model.state_dict(), images, transform_input=True), expected
  )


def test_googlenet_aux_heads_in_training():
  # Training mode with dropout off: BatchNorm uses batch statistics in both frameworks and
  # both return the auxiliary logits (torchvision as (logits, aux2, aux1)).
  model = helpers.random_torch_model(
    "googlenet", num_classes=10, aux_logits=True, init_weights=False, dropout=0.0, dropout_aux=0.0
  ).train()
  images = _images(64)
  with torch.no_grad():
    expected, expected_aux2, expected_aux1 = model(torch.from_numpy(images))
  logits, aux1, aux2 = _run_cnnjax(
    "googlenet", model.state_dict(), images, train=True, dropout_rate=0.0, aux_dropout_rate=0.0
  )
  _assert_close(logits, expected)
  _assert_close(aux1, expected_aux1)
  _assert_close(aux2, expected_aux2)


def test_missing_layer_is_named(alexnet_state_dict):
  state_dict = {k: v for k, v in alexnet_state_dict.items() if not k.startswith("classifier.4.")}
  with pytest.raises(UsageError, match=r"classifier\.4"):
    convert("alexnet", state_dict)


def test_missing_key_is_named(alexnet_state_dict):
  state_dict = {k: v for k, v in alexnet_state_dict.items() if k != "features.3.weight"}
  with pytest.raises(UsageError, match=r"features\.3\.weight"):
    convert("alexnet", state_dict)


def test_unexpected_key_is_named(alexnet_state_dict):
  state_dict = {**alexnet_state_dict, "features.1.weight": alexnet_state_dict["features.0.bias"]}
  with pytest.raises(UsageError, match=r"features\.1\.weight"):
    convert("alexnet", state_dict)


def test_mismatched_shape_is_named(alexnet_state_dict):
  state_dict = {**alexnet_state_dict, "features.3.bias": alexnet_state_dict["features.0.bias"]}
  with pytest.raises(UsageError, match="conv2/bias"):
    convert("alexnet", state_dict)
