"""Tests for cnnjax.inspect.summary: every model at its native input, totals against ANCHORS.md,
detectors' proposals, hand-computed receptive fields."""

import flax.linen as nn
import jax.numpy as jnp
import pytest

from cnnjax import models
from cnnjax.errors import UsageError
from cnnjax.models import layers
from cnnjax.inspect.summary import NUM_PROPOSALS, format_summary, summarize

# shared/ANCHORS.md, torchvision models at 224x224x3 and 1000 classes: (params, GMACs).
TORCHVISION_ANCHORS = {
  "alexnet": (61_100_840, 0.714),
  "vgg11": (132_863_336, 7.609),
  "vgg11_bn": (132_868_840, 7.609),
  "vgg13": (133_047_848, 11.308),
  "vgg13_bn": (133_053_736, 11.308),
  "vgg16": (138_357_544, 15.47),
  "vgg16_bn": (138_365_992, 15.47),
  "vgg19": (143_667_240, 19.632),
  "vgg19_bn": (143_678_248, 19.632),
  "googlenet": (6_624_904, 1.498),
  "resnet18": (11_689_512, 1.814),
  "resnet34": (21_797_672, 3.664),
  "resnet50": (25_557_032, 4.089),
  "resnet101": (44_549_160, 7.801),
  "resnet152": (60_192_808, 11.514),
  "densenet121": (7_978_856, 2.834),
  "densenet169": (14_149_480, 3.36),
  "densenet201": (20_013_928, 4.291),
  "mobilenet_v2": (3_504_872, 0.301),
}


@pytest.mark.parametrize("name", models.names())
def test_every_model_summarizes_at_its_native_input(name):
  summary = summarize(name)
  native = models.native_input(name)
  assert summary.input_shape == native
  assert summary.notes[:2] == (
    f"{name}'s native input {'x'.join(map(str, native))}",
    f"{name}'s default num_classes={models.create(name).num_classes}",
  )
  assert summary.rows and summary.total_macs > 0
  assert sum(row.params for row in summary.rows) == summary.total_params
  if name in TORCHVISION_ANCHORS:  # Native: 224x224x3 and 1000 classes, as the anchors.
    params, gmacs = TORCHVISION_ANCHORS[name]
    assert summary.total_params == params
    assert summary.total_macs / 1e9 == pytest.approx(gmacs, rel=0.01)


def test_lenet5_without_input_is_the_papers_network():
  summary = summarize("lenet5")
  assert summary.input_shape == (32, 32, 1)
  assert summary.total_params == 61_706
  assert summary.rows[-1].output_shape == (10,)


def test_resnet20_at_its_native_32x32():
  summary = summarize("resnet20")
  # conv1 3x3x3 -> 16 at 32x32; stage 1: six 3x3 16 -> 16 convs at 32x32; stages 2 and 3:
  # one 3x3 conv from the narrower width, five at the width, at 16x16 and 8x8 (the zero-pad
  # shortcuts have no MACs); fc 64 -> 10.
  expected = (
    32 * 32 * 27 * 16
    + 6 * 32 * 32 * 9 * 16 * 16
    + 16 * 16 * 9 * 16 * 32
    + 5 * 16 * 16 * 9 * 32 * 32
    + 8 * 8 * 9 * 32 * 64
    + 5 * 8 * 8 * 9 * 64 * 64
    + 64 * 10
  )
  assert summary.total_macs == expected == 40_551_040  # 0.041 GMACs.
  assert summary.total_params == 269_722


def test_unet_at_the_papers_572x572x1():
  summary = summarize("unet")
  assert summary.input_shape == (572, 572, 1)
  assert summary.rows[-1].output_shape == (388, 388, 2)
  assert summary.total_params == 31_030_658


def test_yolo_v1_at_448():
  summary = summarize("yolo_v1")
  assert summary.input_shape == (448, 448, 3)
  # resnet18 maps 448 to 14x14, pooled to the 7x7 grid; 7 * 7 * (2 * 5 + 20) outputs.
  pooled = [row for row in summary.rows if row.kind == "AdaptiveAvgPool"]
  assert [row.output_shape for row in pooled] == [(7, 7, 512)]
  assert summary.rows[-1].output_shape == (7 * 7 * 30,)


def _macs(summary, prefix):
  return sum(row.macs for row in summary.rows if row.name.startswith(prefix))


def test_fast_rcnn_runs_its_head_on_every_proposal():
  few = summarize("fast_rcnn", num_proposals=3)
  full = summarize("fast_rcnn")
  assert full.notes[2].startswith(f"{NUM_PROPOSALS} proposals per image")
  # The backbone runs once per image; the head's first layer on every 7x7x512 RoI.
  assert _macs(few, "ResNet_0/") == _macs(full, "ResNet_0/") > 0
  head = {row.name: row for row in full.rows}["DetectionHead_0/Dense_0"]
  assert head.output_shape == (1024,)
  assert head.macs == NUM_PROPOSALS * 7 * 7 * 512 * 1024
  assert _macs(full, "DetectionHead_0/") == NUM_PROPOSALS / 3 * _macs(few, "DetectionHead_0/")
  assert few.total_params == full.total_params


def test_rcnn_runs_its_cnn_on_every_warped_proposal():
  summary = summarize("rcnn", num_proposals=5)
  alexnet = summarize("alexnet", (227, 227, 3), num_classes=None)
  assert _macs(summary, "AlexNet_0/") == 5 * alexnet.total_macs
  assert "5 proposals per image" in format_summary(summary)


def test_googlenet_aux_heads_count_parameters_but_no_rows_or_macs():
  # The auxiliary heads run only in training; torchvision's 1.498 GMACs leave them out.
  plain = summarize("googlenet")
  with_aux = summarize("googlenet", aux_logits=True)
  assert with_aux.total_macs == plain.total_macs
  assert [row.name for row in with_aux.rows] == [row.name for row in plain.rows]
  assert with_aux.total_params == 13_004_888


def _field(summary, kinds):
  return [(row.receptive_field[0], row.jump[0]) for row in summary.rows if row.kind in kinds]


def test_lenet5_receptive_fields():
  summary = summarize("lenet5", (32, 32, 1))
  # c1 5x5: 5, jump 1; s2 2x2/2: 5 + 1 = 6, jump 2; c3 5x5: 6 + 4 * 2 = 14; s4: 14 + 2 = 16,
  # jump 4; c5 flattens 5x5 units: 16 + 4 * 4 = 32, no jump.
  assert [(row.receptive_field, row.jump) for row in summary.rows] == [
    ((5, 5), (1, 1)),
    ((6, 6), (2, 2)),
    ((14, 14), (2, 2)),
    ((16, 16), (4, 4)),
    ((32, 32), None),
    ((32, 32), None),
    ((32, 32), None),
  ]
  assert summary.total_params == 61_706
  assert summary.rows[0].macs == 28 * 28 * 6 * 5 * 5


def test_vgg16_receptive_fields():
  summary = summarize("vgg16", (224, 224, 3))
  # Each 3x3 conv adds 2 * jump, each 2x2/2 pool adds one jump and doubles it.
  expected = [
    (3, 1),
    (5, 1),
    (6, 2),  # conv1_1, conv1_2, pool1
    (10, 2),
    (14, 2),
    (16, 4),  # conv2_x, pool2
    (24, 4),
    (32, 4),
    (40, 4),
    (44, 8),  # conv3_x, pool3
    (60, 8),
    (76, 8),
    (92, 8),
    (100, 16),  # conv4_x, pool4
    (132, 16),
    (164, 16),
    (196, 16),
    (212, 32),  # conv5_x, pool5
  ]
  assert _field(summary, ("Conv", "MaxPool")) == expected
  dense = [row for row in summary.rows if row.kind == "Dense"]
  assert dense[0].receptive_field == (212 + 6 * 32,) * 2 and dense[0].jump is None


class _Branches(nn.Module):
  """Inception-like block behind a strided stem, then a residual pair and a head."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    x = nn.Conv(4, (3, 3), strides=2, name="stem")(x)  # 3, jump 2
    one = nn.Conv(4, (1, 1), name="one")(x)  # 3
    three = nn.Conv(4, (3, 3), name="three")(x)  # 3 + 2 * 2 = 7
    deep = nn.Conv(4, (3, 3), name="deep_b")(nn.Conv(4, (3, 3), name="deep_a")(x))  # 7, 11
    pooled = layers.MaxPool(3, 1, padding=1, name="pool")(x)  # 7
    x = jnp.concatenate([one, three, deep, pooled], axis=-1)
    x = nn.Conv(8, (1, 1), name="mix")(x)  # max over paths: 11
    residual = nn.Conv(8, (3, 3), kernel_dilation=2, name="dilated")(x)  # 11 + 4 * 2 = 19
    x = nn.relu(x + residual)
    x = nn.Conv(8, (1, 1), name="after_add")(x)  # 19
    x = layers.AdaptiveAvgPool(3, name="adaptive")(x)  # 7 -> 3: bins of 3
    x = layers.GlobalAvgPool(name="gap")(x)
    return nn.Dense(5, name="head")(x)


def test_receptive_fields_follow_branches_dilation_and_pools():
  summary = summarize(_Branches(), (14, 14, 3))
  fields = {row.name: (row.receptive_field, row.jump) for row in summary.rows}
  expected = {
    "stem": 3,
    "one": 3,
    "three": 7,
    "deep_a": 7,
    "deep_b": 11,
    "pool": 7,
    "mix": 11,
    "dilated": 19,
    "after_add": 19,
  }
  for name, size in expected.items():
    assert fields[name] == ((size, size), (2, 2)), name
  # Adaptive 7 -> 3: bins [0, 3), [2, 5), [4, 7) of units 2 pixels apart: 19 + 2 * 2 = 23,
  # jump 2 * 2 = 4.
  assert fields["adaptive"] == ((23, 23), (4, 4))
  # Global pooling over the 3 bins covers all 7 units: 23 + 2 * 4 = 19 + 6 * 2 = 31.
  assert fields["gap"] == ((31, 31), None)
  assert fields["head"][1] is None
  head = summary.rows[-1]
  assert head.params == 8 * 5 + 5 and head.macs == 8 * 5


class _UpConv(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    x = nn.Conv(2, (2, 2), strides=2, name="down")(x)
    return nn.ConvTranspose(3, (2, 2), strides=(2, 2), name="up")(x)


def test_transposed_convolution_halves_the_jump_and_counts_input_positions():
  up = summarize(_UpConv(), (8, 8, 1)).rows[1]
  # Each output unit of a 2x2/2 transposed conv sees exactly one input unit.
  assert up.receptive_field == (2, 2) and up.jump == (1, 1)
  assert up.output_shape == (8, 8, 3) and up.macs == 4 * 4 * (2 * 2 * 2 * 3)


def test_format_summary_lists_layers_and_totals():
  summary = summarize(_Branches(), (14, 14, 3))
  text = format_summary(summary)
  assert "deep_b" in text and "3x3/2" in text
  assert f"{summary.total_params:,} parameters" in text
  assert f"{summary.total_macs:,} MACs" in text


def test_num_classes_and_default_input():
  summary = summarize("resnet18", None, 10)
  assert summary.input_shape == (224, 224, 3)
  assert summary.rows[-1].output_shape == (10,)
  assert summary.total_params == TORCHVISION_ANCHORS["resnet18"][0] - 513 * 990


def test_explicit_input_and_classes_are_not_notes():
  summary = summarize("resnet20", (64, 64, 3), 100)
  assert summary.input_shape == (64, 64, 3) and summary.notes == ()
  assert "assumed" not in format_summary(summary)


def test_format_summary_prints_the_assumptions():
  text = format_summary(summarize("lenet5"))
  assert text.endswith(
    "lenet5 on 32x32x1: 61,706 parameters, 416,520 MACs (0.000 G)\n"
    "assumed: lenet5's native input 32x32x1\n"
    "assumed: lenet5's default num_classes=10"
  )


def test_bad_input_raises_usage_errors():
  with pytest.raises(UsageError, match="give summarize\\(\\) an input_shape"):
    summarize(_Branches())
  with pytest.raises(UsageError, match="a model name must be a string"):
    summarize(None)
  with pytest.raises(UsageError, match="num_proposals must be at least 1"):
    summarize("fast_rcnn", num_proposals=0)
  with pytest.raises(UsageError):
    summarize(_Branches(), (14, 14))
  with pytest.raises(UsageError):
    summarize(_Branches(), (14, 14, 3), num_classes=3)
  with pytest.raises(UsageError, match="unknown model"):
    summarize("resnet_50_typo")
