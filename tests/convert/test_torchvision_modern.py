"""torchvision ResNet, DenseNet and MobileNet v2 weights give the same logits in cnnjax."""

import re

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from cnnjax import models  # noqa: E402
from cnnjax.convert import torchvision as tv_convert  # noqa: E402
from cnnjax.errors import UsageError  # noqa: E402

pytestmark = pytest.mark.torch


def _random_torch_model(name: str, **kwargs) -> "torch.nn.Module":
  """torchvision `name` in eval mode with random weights and non-trivial BN statistics."""
  torch.manual_seed(0)
  model = getattr(torchvision.models, name)(**kwargs)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.weight.uniform_(0.5, 1.0)
        module.bias.uniform_(-0.2, 0.2)
        module.running_mean.uniform_(-0.2, 0.2)
        module.running_var.uniform_(1.0, 2.0)
  return model.eval()


def _zeros_state_dict(name: str, **kwargs) -> dict[str, np.ndarray]:
  """The keys and shapes of torchvision `name`'s state dict, without computing any weights."""
  with torch.device("meta"):
    state_dict = getattr(torchvision.models, name)(**kwargs).state_dict()
  return {key: np.zeros(tensor.shape, np.float32) for key, tensor in state_dict.items()}


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "densenet121", "mobilenet_v2"])
def test_converted_weights_give_torchvision_logits(name):
  torch_model = _random_torch_model(name)
  images = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)
  with torch.no_grad():
    want = torch_model(torch.from_numpy(images)).numpy()

  variables = tv_convert.convert(name, torch_model.state_dict())
  model = models.create(name)
  nhwc = images.transpose(0, 2, 3, 1)
  # Unoptimised XLA: compiling a full-depth net otherwise takes longer than the test itself.
  apply = jax.jit(model.apply).lower(variables, nhwc).compile({"xla_backend_optimization_level": 0})
  got = np.asarray(apply(variables, nhwc))
  assert np.abs(want).max() > 0.05  # The comparison is not between two near-zero outputs.
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


@pytest.mark.parametrize(
  "name, classifier",
  [
    ("resnet34", "fc"),
    ("resnet101", "fc"),
    ("resnet152", "fc"),
    ("densenet161", "classifier"),
    ("densenet169", "classifier"),
    ("densenet201", "classifier"),
  ],
)
def test_every_variant_maps_every_key(name, classifier):
  variables = tv_convert.convert(name, _zeros_state_dict(name, num_classes=7))
  assert variables["params"][classifier]["bias"].shape == (7,)


def test_densenet_released_checkpoint_key_names_convert():
  # A distinct constant per tensor, so a tensor landing in the wrong place shows.
  state_dict = {
    key: np.full(value.shape, i, np.float32)
    for i, (key, value) in enumerate(_zeros_state_dict("densenet121").items())
  }
  # torchvision's downloadable files spell "denselayer1.norm1" as "denselayer1.norm.1".
  released = {
    re.sub(r"(denselayer\d+)\.(norm|conv)(\d)", r"\1.\2.\3", key): value
    for key, value in state_dict.items()
  }
  assert "features.denseblock1.denselayer1.norm.1.weight" in released
  converted = tv_convert.convert("densenet121", released)
  expected = tv_convert.convert("densenet121", state_dict)
  assert jax.tree.structure(converted) == jax.tree.structure(expected)
  for got, want in zip(jax.tree.leaves(converted), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("alpha", [0.35, 0.5, 0.75, 1.4])
def test_mobilenet_v2_width_multipliers_match_torchvision(alpha):
  state_dict = _zeros_state_dict("mobilenet_v2", width_mult=alpha)
  variables = tv_convert.convert("mobilenet_v2", state_dict, alpha=alpha)
  num_params = sum(v.size for v in jax.tree.leaves(variables["params"]))
  statistics = ("running_mean", "running_var", "num_batches_tracked")
  assert num_params == sum(v.size for k, v in state_dict.items() if not k.endswith(statistics))


@pytest.mark.parametrize(
  "edit, named",
  [
    (lambda sd: sd.pop("layer1.0.bn1.running_var"), "layer1.0.bn1.running_var"),
    (lambda sd: sd.pop("layer1.0.bn1.weight"), "layer1.0.bn1.weight"),
    (
      lambda sd: [sd.pop(f"layer1.0.bn1.running_{s}") for s in ("mean", "var")],
      "layer1.0.bn1.running_mean",
    ),
    (lambda sd: sd.update({"fc.weight": sd["fc.weight"][..., None]}), "fc.weight"),
    (lambda sd: sd.pop("layer2.0.downsample.0.weight"), "layer2.0.downsample.0"),
    (
      lambda sd: sd.update({"layer1.0.conv9.weight": sd.pop("layer1.0.conv1.weight")}),
      "layer1.0.conv9.weight",
    ),
    (lambda sd: sd.update({"fc.kernel": sd.pop("fc.weight")}), "fc.weight"),
  ],
)
def test_removed_or_renamed_key_is_named(edit, named):
  state_dict = _zeros_state_dict("resnet18")
  edit(state_dict)
  with pytest.raises(UsageError, match=named.replace(".", r"\.")):
    tv_convert.convert("resnet18", state_dict)


def test_bfloat16_state_dict_converts_to_float32():
  state_dict = _random_torch_model("resnet18").to(torch.bfloat16).state_dict()
  variables = tv_convert.convert("resnet18", state_dict)
  expected = tv_convert.convert("resnet18", {k: v.float() for k, v in state_dict.items()})
  assert jax.tree.structure(variables) == jax.tree.structure(expected)
  for got, want in zip(jax.tree.leaves(variables), jax.tree.leaves(expected)):
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
