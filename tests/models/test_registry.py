"""cnnjax.models.create: names, keyword checking and num_classes validation."""

import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax import models
from cnnjax.errors import UsageError


@pytest.mark.parametrize("name", models.names())
def test_every_model_takes_the_shared_fields(name):
  model = models.create(name, dtype=jnp.bfloat16, axis_name="batch")
  assert (model.dtype, model.axis_name) == (jnp.bfloat16, "batch")
  assert hasattr(model, "num_classes")


def test_unknown_name_lists_the_closest():
  with pytest.raises(UsageError, match="unknown model 'resnet5'; did you mean .*resnet50"):
    models.create("resnet5")


@pytest.mark.parametrize("name, keyword, hint", [
    ("resnet18", "num_clases", "did you mean num_classes"),
    ("vgg11", "batchnorm", "did you mean batch_norm"),  # A registered partial's class fields.
    ("lenet5", "zzz", "its fields are activation, axis_name, dtype, name, num_classes, pooling"),
])
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
