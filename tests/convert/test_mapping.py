"""cnnjax.convert.mapping: layer kinds from tensors, errors that name the keys, dtypes."""

import numpy as np
import pytest

from cnnjax.convert import mapping
from cnnjax.convert import torchvision as tv_convert
from cnnjax.errors import UsageError

PREFIXES = {"features.0": "conv", "features.1": "bn", "classifier": "fc"}


def _state_dict() -> dict[str, np.ndarray]:
  """A conv (8 -> 4, 3x3), its BatchNorm and a dense layer (4 -> 2), as torch lays them out."""
  rng = np.random.default_rng(0)
  tensors = {
    "features.0.weight": (4, 8, 3, 3),
    "features.0.bias": (4,),
    "features.1.weight": (4,),
    "features.1.bias": (4,),
    "features.1.running_mean": (4,),
    "features.1.running_var": (4,),
    "classifier.weight": (2, 4),
    "classifier.bias": (2,),
  }
  state_dict = {key: rng.normal(size=shape).astype(np.float32) for key, shape in tensors.items()}
  state_dict["features.1.num_batches_tracked"] = np.array(3)
  return state_dict


def test_layers_map_to_flax_layouts():
  state_dict = _state_dict()
  variables = mapping.map_state_dict(state_dict, PREFIXES)
  np.testing.assert_array_equal(
    variables["params"]["conv"]["kernel"], state_dict["features.0.weight"].transpose(2, 3, 1, 0)
  )
  np.testing.assert_array_equal(
    variables["params"]["fc"]["kernel"], state_dict["classifier.weight"].T
  )
  np.testing.assert_array_equal(variables["params"]["bn"]["scale"], state_dict["features.1.weight"])
  np.testing.assert_array_equal(
    variables["batch_stats"]["bn"]["var"], state_dict["features.1.running_var"]
  )


def test_batch_norm_without_running_statistics_names_them():
  state_dict = _state_dict()
  del state_dict["features.1.running_mean"], state_dict["features.1.running_var"]
  with pytest.raises(UsageError, match=r"features\.1\.running_mean.*features\.1\.running_var"):
    mapping.map_state_dict(state_dict, PREFIXES)


@pytest.mark.parametrize(
  "key, shape",
  [
    ("features.0.weight", (4, 8, 9)),
    ("classifier.weight", (2, 4, 1, 1, 1)),
    ("classifier.weight", ()),
  ],
)
def test_weight_of_a_rank_no_layer_has_is_named(key, shape):
  state_dict = _state_dict()
  state_dict[key] = np.zeros(shape, np.float32)
  with pytest.raises(UsageError, match=f"{key.replace('.', '[.]')} [(]"):
    mapping.map_state_dict(state_dict, PREFIXES)


def test_bfloat16_torch_tensors_convert_to_float32():
  torch = pytest.importorskip("torch")
  state_dict = _state_dict()
  bf16 = {key: torch.from_numpy(value).to(torch.bfloat16) for key, value in state_dict.items()}
  variables = mapping.map_state_dict(bf16, PREFIXES)
  kernel = variables["params"]["conv"]["kernel"]
  assert kernel.dtype == np.float32
  want = bf16["features.0.weight"].float().numpy().transpose(2, 3, 1, 0)
  np.testing.assert_array_equal(kernel, want)


def test_convertible_names_are_the_torchvision_models():
  names = tv_convert.convertible_names()
  assert names == sorted(names)
  assert {"alexnet", "googlenet", "vgg16_bn", "resnet50", "densenet121", "mobilenet_v2"} <= set(
    names
  )
