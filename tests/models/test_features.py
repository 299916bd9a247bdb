"""The backbone feature API: named feature maps of every classifier, and the detectors on it."""

import functools
import re

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax import models
from cnnjax.errors import UsageError
from cnnjax.models import backbones, feature_maps, layers
import model_helpers

NOT_CLASSIFIERS = {"fast_rcnn", "rcnn", "unet", "unet_same", "yolo_v1"}
CLASSIFIERS = sorted(set(models.names()) - NOT_CLASSIFIERS)


def _maps_and_variables(model, shape):
  """(feature shapes, variable shapes) of `model` on [shape] inputs, from one traced init."""
  init = functools.partial(model.init_with_output, stages=models.feature_names(model))
  return jax.eval_shape(init, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32))


def test_every_model_but_the_detectors_and_unets_offers_feature_maps():
  for name in models.names():
    offers = hasattr(models.create(name), "feature_names")
    assert offers == (name not in NOT_CLASSIFIERS), name


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_feature_maps_are_named_in_order_and_shrink(name):
  model = models.create(name)
  maps, _ = _maps_and_variables(model, (2, *models.native_input(name)))
  names = models.feature_names(model)
  assert tuple(maps) == names and len(set(names)) == len(names)
  sides = [m.shape[1:3] for m in maps.values()]
  assert all(m.ndim == 4 and m.shape[0] == 2 and min(m.shape[1:]) >= 1 for m in maps.values())
  assert all(a[0] >= b[0] and a[1] >= b[1] for a, b in zip(sides, sides[1:]))
  assert sides[-1][0] < sides[0][0]  # The network downsamples somewhere.


def _vgg16():
  names, shapes = [], []
  for stage, (convs, side, width) in enumerate(
    [(2, 224, 64), (2, 112, 128), (3, 56, 256), (3, 28, 512), (3, 14, 512)], start=1
  ):
    names += [f"conv{stage}_{i}" for i in range(1, convs + 1)] + [f"pool{stage}"]
    shapes += [(side, width)] * convs + [(side // 2, width)]
  return dict(zip(names, shapes))


# (side, channels) of every map at the native input, as torchvision's models give them.
TORCHVISION_SHAPES = {
  "resnet18": {"layer1": (56, 64), "layer2": (28, 128), "layer3": (14, 256), "layer4": (7, 512)},
  "resnet50": {"layer1": (56, 256), "layer2": (28, 512), "layer3": (14, 1024), "layer4": (7, 2048)},
  "resnet20": {"layer1": (32, 16), "layer2": (16, 32), "layer3": (8, 64)},
  "vgg16": _vgg16(),
  "alexnet": {
    "conv1": (55, 64),
    "pool1": (27, 64),
    "conv2": (27, 192),
    "pool2": (13, 192),
    "conv3": (13, 384),
    "conv4": (13, 256),
    "conv5": (13, 256),
    "pool5": (6, 256),
  },
  "googlenet": {
    "conv1": (112, 64),
    "maxpool1": (56, 64),
    "conv2": (56, 64),
    "conv3": (56, 192),
    "maxpool2": (28, 192),
    "inception3a": (28, 256),
    "inception3b": (28, 480),
    "maxpool3": (14, 480),
    "inception4a": (14, 512),
    "inception4b": (14, 512),
    "inception4c": (14, 512),
    "inception4d": (14, 528),
    "inception4e": (14, 832),
    "maxpool4": (7, 832),
    "inception5a": (7, 832),
    "inception5b": (7, 1024),
  },
  "densenet121": {
    "denseblock1": (56, 256),
    "transition1": (28, 128),
    "denseblock2": (28, 512),
    "transition2": (14, 256),
    "denseblock3": (14, 1024),
    "transition3": (7, 512),
    "denseblock4": (7, 1024),
    "norm5": (7, 1024),
  },
  "densenet161": {
    "denseblock1": (56, 384),
    "transition1": (28, 192),
    "denseblock2": (28, 768),
    "transition2": (14, 384),
    "denseblock3": (14, 2112),
    "transition3": (7, 1056),
    "denseblock4": (7, 2208),
    "norm5": (7, 2208),
  },
  "mobilenet_v2": dict(
    zip(
      [f"features_{i}" for i in range(19)],
      [(112, 32), (112, 16), (56, 24), (56, 24)]
      + [(28, 32)] * 3
      + [(14, 64)] * 4
      + [(14, 96)] * 3
      + [(7, 160)] * 3
      + [(7, 320), (7, 1280)],
    )
  ),
  "mobilenet_v1": dict(
    zip(
      ["conv1"] + [f"block{i}" for i in range(1, 14)],
      [(112, 32), (112, 64), (56, 128), (56, 128), (28, 256), (28, 256)]
      + [(14, 512)] * 6
      + [(7, 1024)] * 2,
    )
  ),
  "lenet5": {"c1": (28, 6), "s2": (14, 6), "c3": (10, 16), "s4": (5, 16)},
  "nin": {
    "block1": (32, 96),
    "pool1": (16, 96),
    "block2": (16, 192),
    "pool2": (8, 192),
    "block3": (8, 192),
    "class_maps": (8, 10),
  },
}


@pytest.mark.parametrize("name", sorted(TORCHVISION_SHAPES))
def test_feature_map_shapes_are_torchvisions(name):
  model = models.create(name)
  maps, _ = _maps_and_variables(model, (1, *models.native_input(name)))
  got = {key: (m.shape[1], m.shape[3]) for key, m in maps.items()}
  assert got == TORCHVISION_SHAPES[name]
  assert all(m.shape[1] == m.shape[2] for m in maps.values())


# Small but complete members of every family, with one input batch each.
SMALL = {
  "lenet5": ({}, (2, 32, 32, 1)),
  "resnet18": ({"width": 8}, (2, 64, 64, 3)),
  "resnet20": ({"stage_sizes": (1, 1, 1)}, (2, 16, 16, 3)),
  "vgg11_bn": ({"widths": (4, 4, 8, 8, 8), "hidden": 16, "num_classes": 5}, (2, 32, 32, 3)),
  "alexnet2012": ({"widths": (8, 8, 8, 8, 8), "hidden": 16, "num_classes": 5}, (2, 67, 67, 3)),
  "densenet121": (
    {
      "block_config": (2, 2),
      "growth_rate": 4,
      "num_init_features": 8,
      "bn_size": 2,
      "num_classes": 5,
    },
    (2, 16, 16, 3),
  ),
  "mobilenet_v1": (
    {"alpha": 0.125, "blocks": ((64, 1), (128, 2), (256, 2)), "num_classes": 5},
    (2, 16, 16, 3),
  ),
  "mobilenet_v2": (
    {
      "alpha": 0.25,
      "last_channel": 64,
      "num_classes": 5,
      "blocks": ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 1, 1)),
    },
    (2, 16, 16, 3),
  ),
  "nin": ({"widths": ((8, 6, 4), (8, 8, 8), (8, 8))}, (2, 16, 16, 3)),
}
# The families whose features without a classifier are the mean of their deepest map.
GLOBAL_POOLED = ("resnet18", "resnet20", "densenet121", "mobilenet_v1", "mobilenet_v2", "nin")


def _features(model, variables, x, *args, **kwargs):
  """models.features(model, variables, x, *args, **kwargs), compiled."""
  return jax.jit(lambda v, x: models.features(model, v, x, *args, **kwargs))(variables, x)


def _apply(model, variables, *args, **kwargs):
  return jax.jit(functools.partial(model.apply, **kwargs))(variables, *args)


def _small(name, **overrides):
  kwargs, shape = SMALL[name]
  model = models.create(name, **{**kwargs, **overrides})
  x = model_helpers.normal(shape)
  return model, jax.jit(model.init)(model_helpers.key(1), x), x


@pytest.mark.parametrize("name", sorted(SMALL))
def test_asking_for_features_changes_neither_variables_nor_logits(name):
  model, variables, x = _small(name)
  logits = jax.jit(model.apply)(variables, x)
  names = models.feature_names(model)
  with_stages = jax.eval_shape(functools.partial(model.init, stages=names), model_helpers.key(1), x)
  assert jax.tree.map(jnp.shape, with_stages) == jax.tree.map(jnp.shape, variables)
  maps = jax.jit(lambda v, x: models.features(model, v, x))(variables, x)
  assert tuple(maps) == names
  assert all(np.isfinite(np.asarray(m)).all() for m in maps.values())
  np.testing.assert_array_equal(jax.jit(model.apply)(variables, x), logits)
  # One map alone is the same map as in the full set.
  last = jax.jit(lambda v, x: models.features(model, v, x, names[-1]))(variables, x)
  assert list(last) == [names[-1]]
  np.testing.assert_allclose(last[names[-1]], maps[names[-1]], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", GLOBAL_POOLED)
def test_the_deepest_map_is_the_global_pools_input(name):
  model, variables, x = _small(name, num_classes=None)
  deepest = models.feature_names(model)[-1]
  pooled = jnp.mean(_features(model, variables, x, deepest)[deepest], axis=(1, 2))
  np.testing.assert_allclose(pooled, _apply(model, variables, x), rtol=1e-5, atol=1e-6)


def _dense(params, x):
  return x @ params["kernel"] + params["bias"]


def test_resnet18_layer4_pooled_through_fc_gives_the_logits():
  model, variables, x = _small("resnet18")
  maps = _features(model, variables, x, ["layer4", "layer1"])
  assert list(maps) == ["layer1", "layer4"]  # Network order, whatever the request's.
  logits = _dense(variables["params"]["fc"], jnp.mean(maps["layer4"], axis=(1, 2)))
  np.testing.assert_allclose(logits, _apply(model, variables, x), rtol=1e-5, atol=1e-5)


def test_resnet18_layer1_is_the_stem_and_the_first_blocks():
  model, variables, x = _small("resnet18")
  params, stats = variables["params"], variables["batch_stats"]

  def bn(name, y, scope=()):
    p = functools.reduce(lambda d, k: d[k], scope + (name,), params)
    s = functools.reduce(lambda d, k: d[k], scope + (name,), stats)
    return (y - s["mean"]) / jnp.sqrt(s["var"] + 1e-5) * p["scale"] + p["bias"]

  def conv(name, y, stride=1, scope=()):
    kernel = functools.reduce(lambda d, k: d[k], scope + (name,), params)["kernel"]
    pad = kernel.shape[0] // 2
    return jax.lax.conv_general_dilated(
      y, kernel, (stride, stride), [(pad, pad)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )

  @jax.jit
  def by_hand(x):
    y = jax.nn.relu(bn("bn1", conv("conv1", x, 2)))
    y = layers.MaxPool(3, 2, padding=1).apply({}, y)
    for block in ("layer1_0", "layer1_1"):
      z = jax.nn.relu(bn("bn1", conv("conv1", y, scope=(block,)), (block,)))
      z = bn("bn2", conv("conv2", z, scope=(block,)), (block,))
      y = jax.nn.relu(z + y)
    return y

  y = by_hand(x)
  np.testing.assert_allclose(
    _features(model, variables, x, "layer1")["layer1"], y, rtol=1e-4, atol=1e-4
  )


@pytest.mark.parametrize(
  "name, head",
  [
    ("vgg11_bn", ("fc6", "fc7", "fc8")),
    ("alexnet2012", ("fc6", "fc7", "fc8")),
  ],
)
def test_the_deepest_map_feeds_the_dense_layers(name, head):
  model, variables, x = _small(name)
  deepest = models.feature_names(model)[-1]
  side = 7 if name.startswith("vgg") else 6
  y = _features(model, variables, x, deepest)[deepest]
  y = layers.flatten_nchw(layers.AdaptiveAvgPool(side).apply({}, y))
  for layer in head[:-1]:
    y = jax.nn.relu(_dense(variables["params"][layer], y))
  y = _dense(variables["params"][head[-1]], y)
  np.testing.assert_allclose(y, _apply(model, variables, x), rtol=1e-4, atol=1e-5)


def test_lenet_s4_feeds_the_dense_layers():
  model, variables, x = _small("lenet5")
  y = _features(model, variables, x, "s4")["s4"].reshape(2, -1)
  for layer in ("c5", "f6"):
    y = jnp.tanh(_dense(variables["params"][layer], y))
  np.testing.assert_allclose(
    _dense(variables["params"]["output"], y), _apply(model, variables, x), rtol=1e-5, atol=1e-6
  )


def test_training_mode_features_use_batch_statistics_and_keep_the_variables():
  model, variables, x = _small("resnet20")
  frozen = jax.tree.map(np.asarray, variables)
  train = _features(model, variables, x, "layer3", train=True)["layer3"]
  evaluation = _features(model, variables, x, "layer3")["layer3"]
  want, _ = _apply(model, variables, x, train=True, stages=("layer3",), mutable=["batch_stats"])
  np.testing.assert_allclose(train, want["layer3"], rtol=1e-6, atol=1e-6)
  assert np.abs(np.asarray(train) - np.asarray(evaluation)).max() > 1e-3
  jax.tree.map(np.testing.assert_array_equal, variables, frozen)
  # NiN's dropout sits between its blocks: training mode needs a dropout key.
  nin, nin_variables, nin_x = _small("nin")
  maps = _features(
    nin, nin_variables, nin_x, "block3", train=True, rngs={"dropout": model_helpers.key(2)}
  )
  assert maps["block3"].shape == (2, 4, 4, 8)


def test_unknown_or_missing_stages_are_usage_errors():
  model = models.create("resnet18", width=8)
  variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  x = jnp.zeros((1, 32, 32, 3))
  message = (
    "ResNet has no feature map 'layer5'; its feature maps are layer1, layer2, layer3, layer4."
  )
  with pytest.raises(UsageError, match=f"^{re.escape(message)}$"):
    models.features(model, variables, x, "layer5")
  with pytest.raises(UsageError, match="has no feature map 'fc'"):
    models.features(model, variables, x, ["layer4", "fc"])
  with pytest.raises(UsageError, match="has no feature map 'layer5'"):
    model.apply(variables, x, stages=("layer5",))
  with pytest.raises(UsageError, match="give one or more of layer1, layer2"):
    models.features(model, variables, x, [])
  for name in ("unet_same", "yolo_v1"):
    with pytest.raises(UsageError, match="offers no named feature maps"):
      models.feature_names(models.create(name))


def test_taps_catch_a_model_whose_names_disagree_with_its_forward_pass():
  model = models.create("resnet20", stage_sizes=(1, 1, 1))
  taps = feature_maps.Taps(model, "layer1")
  taps("layer1", jnp.zeros((1, 2, 2, 1)))
  with pytest.raises(AssertionError, match="tapped"):
    taps.output(None)
  assert feature_maps.Taps(model, None).output("logits") == "logits"


DETECTORS = [
  (
    "yolo_v1",
    dict(
      backbone="conv", backbone_widths=(4, 8), grid_size=4, num_classes=3, head_width=8, hidden=16
    ),
    32,
    "ConvBackbone_0",
    {"Conv_0", "Conv_1", "Dense_0", "Dense_1"},
  ),
  (
    "yolo_v1",
    dict(
      backbone="resnet18",
      backbone_kwargs={"width": 8},
      grid_size=2,
      num_classes=3,
      head_width=8,
      hidden=16,
    ),
    64,
    "ResNet_0",
    {"Conv_0", "Conv_1", "Dense_0", "Dense_1"},
  ),
  (
    "fast_rcnn",
    dict(
      backbone="mobilenet_v2",
      num_classes=3,
      hidden=16,
      pool_size=2,
      backbone_kwargs=dict(alpha=0.25, last_channel=64, blocks=((1, 16, 1, 1), (6, 24, 2, 2))),
    ),
    32,
    "MobileNetV2_0",
    {"DetectionHead_0"},
  ),
  (
    "fast_rcnn",
    dict(backbone="conv", backbone_widths=(4, 8), num_classes=3, hidden=16, pool_size=2),
    32,
    "ConvBackbone_0",
    {"DetectionHead_0"},
  ),
]


@pytest.mark.parametrize("name, kwargs, size, backbone_key, head_keys", DETECTORS)
def test_detectors_take_the_backbones_deepest_named_map(
  monkeypatch, name, kwargs, size, backbone_key, head_keys
):
  model = models.create(name, **kwargs)
  images = model_helpers.normal((2, size, size, 3))
  args = (images,)
  if name == "fast_rcnn":
    args += (jnp.array([[[0, 0, 16, 16], [4, 4, 30, 20]]] * 2, jnp.float32),)
  variables = jax.jit(model.init)(model_helpers.key(1), *args)
  # The parameter trees existing checkpoints hold.
  assert set(variables["params"]) == head_keys | {backbone_key}
  backbone = backbones.make_backbone(
    model.backbone, model.backbone_widths, model.backbone_kwargs, model.dtype, model.axis_name
  )
  sub = {col: tree[backbone_key] for col, tree in variables.items()}
  deepest = models.feature_names(backbone)[-1]
  want = _features(backbone, sub, images, deepest)[deepest]
  if backbone_key == "ConvBackbone_0":
    np.testing.assert_array_equal(_apply(backbone, sub, images), want)
  else:
    np.testing.assert_allclose(
      jnp.mean(want, axis=(1, 2)), _apply(backbone, sub, images), rtol=1e-5, atol=1e-6
    )
  maps = []
  original = backbones.feature_map

  def spy(*call_args, **call_kwargs):
    maps.append(original(*call_args, **call_kwargs))
    return maps[-1]

  monkeypatch.setattr(backbones, "feature_map", spy)
  # The spy's map is a tracer of the same trace, so the compiled function can return it.
  got = jax.jit(lambda v: (model.apply(v, *args), maps[-1])[1])(variables)
  assert len(maps) == 1
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_detector_backbone_variables_are_the_classifiers_without_its_head():
  detector = models.create("yolo_v1", backbone="resnet18")
  variables = jax.eval_shape(
    detector.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 448, 448, 3), jnp.float32)
  )
  classifier = jax.eval_shape(
    models.create("resnet18", num_classes=None).init,
    jax.random.key(0),
    jax.ShapeDtypeStruct((1, 448, 448, 3), jnp.float32),
  )

  def shapes(tree):
    return flax.traverse_util.flatten_dict(jax.tree.map(lambda a: a.shape, tree))

  assert shapes(variables["params"]["ResNet_0"]) == shapes(classifier["params"])
