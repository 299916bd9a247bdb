"""cnnjax.inspect.gradients and receptive_field on tiny zoo models at random initialisation:
Grad-CAM equals CAM where the two coincide, SmoothGrad without noise is the saliency map,
and the effective receptive field of a unit lies inside its theoretical one, centred on it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax import models
from cnnjax.errors import UsageError
from cnnjax.inspect import gradients
from cnnjax.inspect import receptive_field as rf
from cnnjax.models import heads

# Small BatchNorm networks, their input and the stages checked.
TINY = {
  "resnet18": ({"width": 4, "stage_sizes": (1, 1), "num_classes": 3}, (64, 64, 3)),
  "resnet20": ({"width": 4, "stage_sizes": (1, 1, 1), "num_classes": 3}, (32, 32, 3)),
  "vgg11_bn": (
    {"stage_sizes": (1, 1, 2, 2), "widths": (4, 4, 8, 8), "hidden": 8, "num_classes": 3},
    (64, 64, 3),
  ),
  "lenet5": ({"num_classes": 4}, (32, 32, 1)),
}


def _model(name: str, seed: int = 0):
  kwargs, shape = TINY[name]
  model = models.create(name, **kwargs)
  variables = model.init(jax.random.key(seed), jnp.zeros((1, *shape)), train=False)
  if "batch_stats" in variables:  # Non-trivial running statistics, as after training.
    leaves, tree = jax.tree.flatten(variables["batch_stats"])
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    leaves = [
      leaf + 0.2 * jnp.abs(jax.random.normal(k, leaf.shape)) for k, leaf in zip(keys, leaves)
    ]
    variables = {**variables, "batch_stats": jax.tree.unflatten(tree, leaves)}
  images = jax.random.normal(jax.random.key(seed + 2), (4, *shape))
  return model, variables, images


@pytest.mark.parametrize("name", ["resnet20", "lenet5"])
def test_grad_cam_at_the_last_map_is_cam(name):
  # Where the deepest map feeds a global average pool and one dense layer (ResNet), or is
  # flattened into dense layers, Grad-CAM's weights are the class's mean gradients; for
  # the pool they are fc weights / (h w), which makes Grad-CAM Zhou et al.'s CAM.
  model, variables, images = _model(name)
  stage = models.feature_names(model)[-1]
  classes = jnp.array([0, 1, 2, 0])
  cam = gradients.grad_cam(model, variables, images, classes, stage)
  maps = models.features(model, variables, images, stage)[stage]
  assert cam.shape == maps.shape[:3] and bool(jnp.all(cam >= 0))
  if name == "resnet20":
    kernel = variables["params"]["fc"]["kernel"][:, classes].T  # [B, K]
    expected = jax.nn.relu(jnp.einsum("bhwk,bk->bhw", maps, kernel)) / (
      maps.shape[1] * maps.shape[2]
    )
    np.testing.assert_allclose(cam, expected, rtol=1e-4, atol=1e-6)
  else:  # LeNet-5 flattens s4 into c5, f6, output: the mean gradient through them by hand.
    params = variables["params"]

    def score(a):
      x = a.reshape(a.shape[0], -1)
      for layer in ("c5", "f6", "output"):
        x = x @ params[layer]["kernel"] + params[layer]["bias"]
        x = model.activation(x) if layer != "output" else x
      return jnp.take_along_axis(x, classes[:, None], -1).sum()

    weights = jax.grad(score)(maps).mean(axis=(1, 2))
    expected = jax.nn.relu(jnp.einsum("bhwk,bk->bhw", maps, weights))
    np.testing.assert_allclose(cam, expected, rtol=1e-4, atol=1e-7)


def test_grad_cam_takes_batches_and_the_predicted_class():
  model, variables, images = _model("vgg11_bn")
  stage = models.feature_names(model)[-3]
  predicted = jnp.argmax(model.apply(variables, images, train=False), -1)
  cam = gradients.grad_cam(model, variables, images, None, stage)
  np.testing.assert_allclose(
    cam, gradients.grad_cam(model, variables, images, predicted, stage), rtol=1e-5, atol=1e-7
  )
  single = gradients.grad_cam(model, variables, images[1:2], predicted[1:2], stage)
  np.testing.assert_allclose(cam[1:2], single, rtol=1e-4, atol=1e-6)
  # Taking the gradient leaves the model as it was.
  np.testing.assert_allclose(
    gradients.logits(model, variables, images),
    model.apply(variables, images, train=False),
    rtol=1e-5,
    atol=1e-9,
  )
  up = gradients.upsample(cam, images.shape[1:3])
  assert up.shape == images.shape[:3]
  peak = np.asarray(gradients.peaks(up))
  assert peak.shape == (4, 2)
  for i, (row, col) in enumerate(peak):
    assert np.isclose(up[i, row, col], up[i].max())


def test_grad_cam_refuses_what_it_cannot_do():
  model, variables, images = _model("lenet5")
  with pytest.raises(
    UsageError, match="LeNet5 has no feature map 'layer4'; its feature maps are c1, s2, c3, s4"
  ):
    gradients.grad_cam(model, variables, images, None, "layer4")
  embedder = heads.EmbeddingNet(models.create("lenet5", num_classes=None), 8)
  emb_variables = embedder.init(jax.random.key(0), images[:1], train=False)
  with pytest.raises(UsageError, match="Grad-CAM needs a classifier"):
    gradients.grad_cam(embedder, emb_variables, images, None, "s4")


def test_smoothgrad_without_noise_is_the_saliency_map():
  model, variables, images = _model("lenet5")
  plain = gradients.saliency(model, variables, images)
  smooth = gradients.smoothgrad(
    model, variables, images, None, jax.random.key(0), samples=2, noise=0.0
  )
  np.testing.assert_allclose(smooth, plain, rtol=1e-5, atol=1e-8)
  noisy = gradients.smoothgrad(model, variables, images, None, jax.random.key(0), samples=4)
  assert noisy.shape == images.shape[:3] and bool(jnp.all(noisy >= 0))
  assert not np.allclose(noisy, plain)


def _support_and_centroid(erf: np.ndarray):
  rows, cols = np.nonzero(erf > 0)
  grid = np.mgrid[: erf.shape[0], : erf.shape[1]]
  centroid = [(erf * grid[a]).sum() / erf.sum() for a in (0, 1)]
  return (rows.min(), cols.min(), rows.max(), cols.max()), centroid


@pytest.mark.parametrize(
  "name, stages",
  [
    ("resnet18", ("layer1", "layer2")),
    ("resnet20", ("layer1", "layer2")),
    ("vgg11_bn", ("pool2", "conv3_2", "pool3", "conv4_1")),
  ],
)
def test_effective_field_lies_in_the_theoretical_field_centred_on_the_unit(name, stages):
  model, variables, images = _model(name)
  shape = images.shape[1:]
  fields = rf.stage_fields(model, shape, stages)
  assert tuple(fields) == stages
  for stage, field in fields.items():
    h, w = field.map_shape
    for unit in [rf.centre_unit(field), (0, 0), (h - 1, w // 3)]:
      erf = np.asarray(
        gradients.effective_receptive_field(model, variables, images, stage, unit)
      ).mean(0)
      (top, left, bottom, right), centroid = _support_and_centroid(erf)
      box = rf.unit_box(field, unit, shape)
      tol = rf.phase_tolerance(field)
      where = f"{name} {stage} unit {unit}: support {top, left, bottom, right}, box {box}"
      assert top >= box[0] - tol[0] and bottom <= box[2] + tol[0], where
      assert left >= box[1] - tol[1] and right <= box[3] + tol[1], where
      centre = rf.unit_centre(field, unit, shape)
      inside = (
        box[0] >= tol[0]
        and box[1] >= tol[1]
        and box[2] <= shape[0] - 1 - tol[0]
        and box[3] <= shape[1] - 1 - tol[1]
      )
      if inside:  # The whole field in the image: its support is the theoretical one.
        assert abs((top + bottom) / 2 - centre[0]) <= tol[0] + 0.5, where
        assert abs((left + right) / 2 - centre[1]) <= tol[1] + 0.5, where
        assert bottom - top + 1 <= field.size[0] and right - left + 1 <= field.size[1], where
        assert abs(centroid[0] - centre[0]) <= field.jump[0], where
        assert abs(centroid[1] - centre[1]) <= field.jump[1], where


def test_stage_fields_by_hand():
  # LeNet-5: 5x5 conv, 2x2/2 pool, 5x5 conv, 2x2/2 pool.
  model = models.create("lenet5")
  fields = rf.stage_fields(model, (32, 32, 1))
  assert {k: (f.size, f.jump, f.map_shape) for k, f in fields.items()} == {
    "c1": ((5, 5), (1, 1), (28, 28)),
    "s2": ((6, 6), (2, 2), (14, 14)),
    "c3": ((14, 14), (2, 2), (10, 10)),
    "s4": ((16, 16), (4, 4), (5, 5)),
  }
  s4 = fields["s4"]
  assert rf.unit_centre(s4, (0, 0), (32, 32)) == (7.5, 7.5)  # Pixels 0..15.
  assert rf.unit_box(s4, (0, 0), (32, 32)) == (0.0, 0.0, 15.0, 15.0)
  for unit in [(0, 0), (2, 3), (4, 4)]:
    assert rf.unit_at(s4, rf.unit_centre(s4, unit, (32, 32)), (32, 32)) == unit
  with pytest.raises(UsageError, match="no feature map 'pool9'"):
    rf.stage_fields(model, (32, 32, 1), "pool9")


def test_effective_field_of_networks_without_a_classifier():
  unet = models.create("unet_same", depth=2, width=4, num_classes=3)
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  variables = unet.init(jax.random.key(1), x, train=False)
  fields = rf.stage_fields(unet, x.shape[1:], ("DoubleConv_0", "DoubleConv_1"))
  assert fields["DoubleConv_0"].size == (5, 5) and fields["DoubleConv_1"].jump == (2, 2)
  erf = gradients.effective_receptive_field(unet, variables, x, "DoubleConv_0", (8, 8))
  rows, cols = np.nonzero(np.asarray(erf).sum(0))
  assert (rows.min(), rows.max(), cols.min(), cols.max()) == (6, 10, 6, 10)
  embedder = heads.EmbeddingNet(models.create("lenet5", num_classes=None), 8)
  digits = jax.random.normal(jax.random.key(2), (2, 32, 32, 1))
  emb_variables = embedder.init(jax.random.key(3), digits, train=False)
  erf = gradients.effective_receptive_field(embedder, emb_variables, digits, "c1", (0, 0))
  rows, cols = np.nonzero(np.asarray(erf).sum(0))
  assert rows.max() == 4 and cols.max() == 4
