"""cnnjax.models: names, native inputs, keyword checking, num_classes and activations."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax import models
from cnnjax.errors import UsageError
from cnnjax.models import registry

CIFAR = (32, 32, 3)
IMAGENET = (224, 224, 3)
# Every registered model's native input: its paper's image (Fast R-CNN: a 500x375 VOC image
# with its shorter side scaled to 600; R-CNN: that image as it is; unet_same: the paper's
# whole 512x512 ISBI image, which 'same' padding takes untiled).
NATIVE_INPUTS = {
  "lenet5": (32, 32, 1),
  "nin": CIFAR,
  "unet": (572, 572, 1),
  "unet_same": (512, 512, 1),
  "yolo_v1": (448, 448, 3),
  "fast_rcnn": (600, 800, 3),
  "rcnn": (375, 500, 3),
  **{f"resnet{depth}": CIFAR for depth in (20, 32, 44, 56, 110)},
  **{
    name: IMAGENET
    for name in (
      "alexnet",
      "alexnet2012",
      "densenet121",
      "densenet161",
      "densenet169",
      "densenet201",
      "googlenet",
      "googlenet_paper",
      "mobilenet_v1",
      "mobilenet_v2",
      "resnet18",
      "resnet34",
      "resnet50",
      "resnet101",
      "resnet152",
      "vgg11",
      "vgg11_bn",
      "vgg13",
      "vgg13_bn",
      "vgg16",
      "vgg16_bn",
      "vgg19",
      "vgg19_bn",
    )
  },
}


def test_every_model_has_its_papers_native_input():
  assert {name: models.native_input(name) for name in models.names()} == NATIVE_INPUTS


def test_native_input_of_an_unknown_name_lists_the_closest():
  with pytest.raises(UsageError, match="unknown model 'lenet'; did you mean lenet5"):
    models.native_input("lenet")


@pytest.mark.parametrize("name", models.names())
def test_every_model_takes_the_shared_fields(name):
  model = models.create(name, dtype=jnp.bfloat16, axis_name="batch")
  assert (model.dtype, model.axis_name) == (jnp.bfloat16, "batch")
  assert hasattr(model, "num_classes")


def test_unknown_name_lists_the_closest():
  with pytest.raises(UsageError, match="unknown model 'resnet5'; did you mean .*resnet50"):
    models.create("resnet5")


@pytest.mark.parametrize("name", [None, 3, ["resnet50"]])
def test_a_name_that_is_not_a_string_is_a_one_line_usage_error(name):
  with pytest.raises(
    UsageError,
    match="a model name must be a string such as 'resnet50', got "
    ".*; run `cnnjax models` to list them.",
  ) as error:
    models.create(name)
  assert "\n" not in str(error.value)


@pytest.mark.parametrize(
  "name, keyword, hint",
  [
    ("resnet18", "num_clases", "did you mean num_classes"),
    ("vgg11", "batchnorm", "did you mean batch_norm"),  # A registered partial's class fields.
    ("lenet5", "zzz", "its fields are activation, axis_name, dtype, name, num_classes, pooling"),
  ],
)
def test_unknown_keyword_names_the_closest_field(name, keyword, hint):
  with pytest.raises(UsageError, match=f"model {name} has no field '{keyword}'; {hint}"):
    models.create(name, **{keyword: 1})


def test_parent_is_not_a_keyword():
  with pytest.raises(UsageError, match="no field 'parent'"):
    models.create("lenet5", parent=None)


@pytest.mark.parametrize("num_classes", [0, -3, True, 2.5, "10"])
def test_num_classes_must_be_a_positive_int_or_none(num_classes):
  with pytest.raises(UsageError, match="num_classes must be a positive int or None"):
    models.create("lenet5", num_classes=num_classes)


@pytest.mark.parametrize("num_classes", [None, 1, np.int64(7)])
def test_valid_num_classes_and_fields_pass_through(num_classes):
  model = models.create("vgg11", num_classes=num_classes, hidden=16)
  assert model.num_classes == num_classes and model.hidden == 16
  assert model.stage_sizes == (1, 1, 2, 2, 2)


@pytest.mark.parametrize("name", registry.ACTIVATIONS)
def test_every_accepted_activation_string_becomes_its_flax_function(name):
  model = models.create("lenet5", activation=name)
  assert model.activation is getattr(nn, name)
  x = jnp.linspace(-3.0, 3.0, 7)
  assert model.activation(x).shape == x.shape  # Elementwise, as an activation field needs.


def test_a_string_activation_builds_the_model_it_names():
  # `--config.model_kwargs.activation=relu` reaches create as the string "relu".
  x = jnp.linspace(-1.0, 1.0, 32 * 32).reshape(1, 32, 32, 1)
  model = models.create("lenet5", activation="relu")
  variables = model.init(jax.random.key(0), x)
  reference = models.create("lenet5", activation=nn.relu)
  np.testing.assert_array_equal(model.apply(variables, x), reference.apply(variables, x))


def test_a_callable_activation_is_kept():
  def activation(x):
    return nn.leaky_relu(x, 0.2)

  assert models.create("lenet5", activation=activation).activation is activation


@pytest.mark.parametrize("value", ["rleu", "Dense", 3, None])
def test_an_unknown_activation_names_the_accepted_strings(value):
  with pytest.raises(
    UsageError,
    match="model lenet5 field activation must be a function or one "
    f"of celu, elu, gelu, .*, tanh; got {re.escape(repr(value))}.",
  ) as error:
    models.create("lenet5", activation=value)
  assert "\n" not in str(error.value)
