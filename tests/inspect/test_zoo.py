"""cnnjax.inspect on the zoo: Grad-CAM, SmoothGrad and the effective receptive field trace
for one model of every family at its native input (shapes only: `jax.eval_shape`, nothing
compiled), the detectors' and U-Net's maps come from their backbones and layers, and the
filters and outputs functions agree with numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax import models
from cnnjax.errors import UsageError
from cnnjax.inspect import filters
from cnnjax.inspect import gradients
from cnnjax.inspect import network
from cnnjax.inspect import outputs

# One model of each family, the deep ones shortened (tracing time grows with the layers).
# (ResNet, VGG and LeNet-5 compile in test_gradients.py.)
FAMILIES = {
  "alexnet": {},
  "googlenet": {},
  "nin": {},
  "mobilenet_v1": {},
  "densenet121": {"block_config": (2, 2)},
  "resnet50": {"stage_sizes": (1, 1)},
}


def _abstract(model, shape, *extra):
  x = jax.ShapeDtypeStruct((2, *shape), jnp.float32)
  variables = jax.eval_shape(
    lambda x, *e: model.init(jax.random.key(0), x, *e, train=False), x, *extra
  )
  return variables, x


@pytest.mark.parametrize("name", FAMILIES)
def test_grad_cam_traces_on_every_family(name):
  model = models.create(name, num_classes=7, **FAMILIES[name])
  shape = models.native_input(name)
  variables, x = _abstract(model, shape)
  stages = models.feature_names(model)
  maps = jax.eval_shape(lambda v, x: models.features(model, v, x, stages[-1]), variables, x)
  cam = jax.eval_shape(lambda v, x: gradients.grad_cam(model, v, x, None, stages[-1]), variables, x)
  assert cam.shape == maps[stages[-1]].shape[:3] and cam.dtype == jnp.float32


def test_detectors_and_unets_show_their_backbones_and_layers():
  yolo = models.create(
    "yolo_v1",
    backbone="conv",
    backbone_widths=(4, 8),
    grid_size=4,
    head_width=8,
    hidden=16,
    num_classes=3,
  )
  variables, x = _abstract(yolo, (32, 32, 3))
  net = network.network(yolo)
  assert net.path == ("ConvBackbone_0",) and net.names() == ("block1", "block2")
  maps = jax.eval_shape(lambda v, x: net.maps(v, x), variables, x)
  assert {k: m.shape for k, m in maps.items()} == {"block1": (2, 16, 16, 4), "block2": (2, 8, 8, 8)}
  fast = models.create(
    "fast_rcnn",
    backbone="resnet18",
    backbone_kwargs={"width": 4},
    pool_size=2,
    hidden=8,
    num_classes=3,
  )
  variables, x = _abstract(fast, (64, 64, 3), jax.ShapeDtypeStruct((2, 4, 4), jnp.float32))
  net = network.network(fast)
  assert net.path == ("ResNet_0",) and net.names()[-1] == "layer4"
  erf = jax.eval_shape(
    lambda v, x: gradients.effective_receptive_field(fast, v, x, "layer2"), variables, x
  )
  assert erf.shape == (2, 64, 64)
  unet = models.create("unet", depth=2, width=4)
  net = network.network(unet)
  assert net.kind == network.INTERMEDIATES
  names = net.names((92, 92, 1))
  assert names[:4] == ("DoubleConv_0", "MaxPool_0", "DoubleConv_1", "MaxPool_1")
  with pytest.raises(
    UsageError,
    match="UNet has no feature map 'layer1'; its feature maps are DoubleConv_0, MaxPool_0",
  ):
    net.check("layer1", (92, 92, 1))


def test_first_conv_is_the_first_the_image_meets():
  # The parameter tree sorts a U-Net's "ConvTranspose_0" before "Conv_0" and
  # "DoubleConv_0" (and GoogLeNet's "aux1" before "conv1").
  model = models.create("unet_same", depth=2, width=4)
  variables, _ = _abstract(model, (32, 32, 3))
  assert next(iter(variables["params"])) == "ConvTranspose_0"
  order = filters.layer_order(model, (32, 32, 3))
  layer, kernel = filters.first_conv(variables["params"], order)
  assert layer == "DoubleConv_0/Conv_0" and kernel.shape == (3, 3, 3, 4)
  assert filters.first_conv(variables["params"])[0] == "ConvTranspose_0/..."[:15]


def test_filter_images_and_norms():
  rng = np.random.default_rng(0)
  kernel = rng.normal(size=(3, 3, 3, 5)).astype(np.float32)
  tiles = np.asarray(filters.kernel_images(kernel))
  assert tiles.shape == (5, 3, 3, 3) and tiles.min() >= 0 and tiles.max() <= 1
  assert np.isclose(np.abs(tiles - 0.5).max(), 0.5)  # One scale: the largest |w| reaches 0 or 1.
  grey = np.asarray(filters.kernel_images(kernel[:, :, :1]))
  assert grey.shape == (5, 3, 3, 1)
  params = {"b": {"kernel": kernel}, "a": {"kernel": np.ones((4, 2), np.float32), "bias": 0}}
  norms = filters.kernel_norms(params, ["b", "a"])
  assert list(norms) == ["b", "a"]
  np.testing.assert_allclose(norms["b"], np.linalg.norm(kernel.reshape(-1, 5), axis=0), rtol=1e-6)
  np.testing.assert_allclose(norms["a"], [2.0, 2.0])
  with pytest.raises(UsageError, match="no convolution"):
    filters.first_conv({"fc": {"kernel": np.ones((2, 2))}})


def test_outputs_agree_with_numpy():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(6, 10)).astype(np.float32)
  probs, classes = outputs.top_k(logits, 5)
  np.testing.assert_array_equal(classes, np.argsort(-logits, axis=1)[:, :5])
  soft = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  np.testing.assert_allclose(probs, np.take_along_axis(soft, np.asarray(classes), 1), rtol=1e-5)
  labels, predicted = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
  valid = rng.random(50) > 0.3
  expected = np.zeros((4, 4), int)
  np.add.at(expected, (labels[valid], predicted[valid]), 1)
  np.testing.assert_array_equal(outputs.confusion_matrix(labels, predicted, 4, valid), expected)
  keys = rng.normal(size=(20, 8)).astype(np.float32)
  queries = np.array([3, 7])
  index, similarity = outputs.nearest_neighbours(keys[queries], keys, 4, queries)
  unit = keys / np.linalg.norm(keys, axis=1, keepdims=True)
  cosine = unit[queries] @ unit.T
  cosine[np.arange(2), queries] = -np.inf
  np.testing.assert_array_equal(index, np.argsort(-cosine, axis=1)[:, :4])
  assert not np.any(np.asarray(index) == queries[:, None])
  maps = rng.normal(size=(2, 3, 3, 6)).astype(np.float32)
  maps[..., 4] *= 10
  channels, chosen = outputs.strongest_channels(maps, 2)
  assert int(channels[0]) == 4 and chosen.shape == (2, 3, 3, 2)
  np.testing.assert_allclose(chosen[..., 0], maps[..., 4])
