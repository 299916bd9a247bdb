"""Tests for cnnjax.ops.summary: totals against ANCHORS.md, hand-computed receptive fields."""

import flax.linen as nn
import jax.numpy as jnp
import pytest

from cnnjax.errors import UsageError
from cnnjax.models import layers
from cnnjax.ops.summary import format_summary, summarize

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


@pytest.mark.parametrize("name", sorted(TORCHVISION_ANCHORS))
def test_totals_match_anchors(name):
  params, gmacs = TORCHVISION_ANCHORS[name]
  summary = summarize(name, (224, 224, 3))
  assert summary.total_params == params
  assert sum(row.params for row in summary.rows) == params
  assert summary.total_macs / 1e9 == pytest.approx(gmacs, rel=0.01)


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
      ((5, 5), (1, 1)), ((6, 6), (2, 2)), ((14, 14), (2, 2)), ((16, 16), (4, 4)),
      ((32, 32), None), ((32, 32), None), ((32, 32), None)]
  assert summary.total_params == 61_706
  assert summary.rows[0].macs == 28 * 28 * 6 * 5 * 5


def test_vgg16_receptive_fields():
  summary = summarize("vgg16", (224, 224, 3))
  # Each 3x3 conv adds 2 * jump, each 2x2/2 pool adds one jump and doubles it.
  expected = [
      (3, 1), (5, 1), (6, 2),                       # conv1_1, conv1_2, pool1
      (10, 2), (14, 2), (16, 4),                    # conv2_x, pool2
      (24, 4), (32, 4), (40, 4), (44, 8),           # conv3_x, pool3
      (60, 8), (76, 8), (92, 8), (100, 16),         # conv4_x, pool4
      (132, 16), (164, 16), (196, 16), (212, 32),   # conv5_x, pool5
  ]
  assert _field(summary, ("Conv", "MaxPool")) == expected
  dense = [row for row in summary.rows if row.kind == "Dense"]
  assert dense[0].receptive_field == (212 + 6 * 32,) * 2 and dense[0].jump is None


class _Branches(nn.Module):
  """Inception-like block behind a strided stem, then a residual pair and a head."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    x = nn.Conv(4, (3, 3), strides=2, name="stem")(x)                 # 3, jump 2
    one = nn.Conv(4, (1, 1), name="one")(x)                            # 3
    three = nn.Conv(4, (3, 3), name="three")(x)                        # 3 + 2 * 2 = 7
    deep = nn.Conv(4, (3, 3), name="deep_b")(nn.Conv(4, (3, 3), name="deep_a")(x))  # 7, 11
    pooled = layers.MaxPool(3, 1, padding=1, name="pool")(x)           # 7
    x = jnp.concatenate([one, three, deep, pooled], axis=-1)
    x = nn.Conv(8, (1, 1), name="mix")(x)                              # max over paths: 11
    residual = nn.Conv(8, (3, 3), kernel_dilation=2, name="dilated")(x)  # 11 + 4 * 2 = 19
    x = nn.relu(x + residual)
    x = nn.Conv(8, (1, 1), name="after_add")(x)                        # 19
    x = layers.AdaptiveAvgPool(3, name="adaptive")(x)                  # 7 -> 3: bins of 3
    x = layers.GlobalAvgPool(name="gap")(x)
    return nn.Dense(5, name="head")(x)


def test_receptive_fields_follow_branches_dilation_and_pools():
  summary = summarize(_Branches(), (14, 14, 3))
  fields = {row.name: (row.receptive_field, row.jump) for row in summary.rows}
  expected = {"stem": 3, "one": 3, "three": 7, "deep_a": 7, "deep_b": 11, "pool": 7, "mix": 11,
              "dilated": 19, "after_add": 19}
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


def test_bad_input_raises_usage_errors():
  with pytest.raises(UsageError):
    summarize(_Branches(), (14, 14))
  with pytest.raises(UsageError):
    summarize(_Branches(), (14, 14, 3), num_classes=3)
  with pytest.raises(UsageError, match="unknown model"):
    summarize("resnet_50_typo")
