"""GoogLeNet / Inception v1 (Szegedy et al. 2014), torchvision's form and the paper's.

`googlenet` is torchvision's model: every conv is bias-free and followed by BatchNorm
(eps 1e-3), the "5x5" branch of each Inception block is a 3x3 conv, max pools use ceil
mode and dropout 0.2 precedes the classifier (6,624,904 parameters; 13,004,888 with the
auxiliary heads). `googlenet_paper` is the 2014 network: true 5x5 convs with biases, no
BatchNorm, dropout 0.4 (6,998,552 / 13,378,280). The paper's local response
normalisation layers are left out of both.

With `aux_logits`, the auxiliary classifiers after inception4a and inception4d (average
pool, 1x1 conv to 128, fc 1024, dropout 0.7, fc classes) are built and, when training,
returned: `(logits, aux1, aux2)`, aux1 being the earlier head. torchvision returns them in
the other order, (logits, aux2, aux1). In evaluation only the logits come back. The heads'
pool (`aux_pool`) is torchvision's 4x4 adaptive average pool in `googlenet` and the paper's
5x5/3 average pool in `googlenet_paper` (ceil mode, as the Caffe model): both give 4x4 on
the 14x14 maps of a 224x224 input, but the paper's needs inputs of at least 47x47 (at
init and in training, where the heads run).

Module names follow torchvision's state-dict prefixes ("inception3a/branch2_1/bn" is
"inception3a.branch2.1.bn"), so `cnnjax.convert` maps them one to one.
"""

import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from cnnjax.errors import UsageError
from cnnjax.models import feature_maps
from cnnjax.models import layers
from cnnjax.models.registry import register

# conv1 (7x7/2) and three 3x3/2 ceil-mode pools: 15 -> 8 -> 4 -> 2 -> 1.
MIN_SIZE = 15
# The paper's 5x5/3 ceil-mode aux pool needs a 3x3 map at inception4a: 47 -> 24 -> 12 -> 6 -> 3.
PAPER_AUX_MIN_SIZE = 47
AUX_POOLS = ("adaptive", "5x5/3")

# Inception block -> (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection) widths.
INCEPTION_WIDTHS = {
  "3a": (64, 96, 128, 16, 32, 32),
  "3b": (128, 128, 192, 32, 96, 64),
  "4a": (192, 96, 208, 16, 48, 64),
  "4b": (160, 112, 224, 24, 64, 64),
  "4c": (128, 128, 256, 24, 64, 64),
  "4d": (112, 144, 288, 32, 64, 64),
  "4e": (256, 160, 320, 32, 128, 128),
  "5a": (256, 160, 320, 32, 128, 128),
  "5b": (384, 192, 384, 48, 128, 128),
}

# ImageNet channel statistics that `transform_input` undoes (torchvision's pretrained
# GoogLeNet was ported from TensorFlow and expects inputs scaled to [-1, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The maps `stages` can name: torchvision's GoogLeNet modules up to the global pool.
FEATURE_NAMES = (
  "conv1",
  "maxpool1",
  "conv2",
  "conv3",
  "maxpool2",
  "inception3a",
  "inception3b",
  "maxpool3",
  "inception4a",
  "inception4b",
  "inception4c",
  "inception4d",
  "inception4e",
  "maxpool4",
  "inception5a",
  "inception5b",
)


class BasicConv(nn.Module):
  """kxk conv (stride `stride`, padding k // 2), optional BatchNorm, ReLU."""

  features: int
  kernel_size: int
  conv: layers.ModuleDef
  norm: layers.ModuleDef | None
  stride: int = 1

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """x: [N, H, W, C] -> [N, ceil(H / stride), ceil(W / stride), features]."""
    k = self.kernel_size
    x = self.conv(self.features, (k, k), (self.stride, self.stride), padding=k // 2, name="conv")(x)
    if self.norm is not None:
      x = self.norm(name="bn")(x)
    return nn.relu(x)


class Inception(nn.Module):
  """Four parallel branches concatenated on channels: 1x1; 1x1 -> 3x3; 1x1 -> kxk;
  3x3/1 max pool -> 1x1. Branch submodules carry torchvision's indices."""

  widths: Sequence[int]
  basic_conv: layers.ModuleDef
  branch3_kernel: int

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """x: [N, H, W, C] -> [N, H, W, widths[0] + widths[2] + widths[4] + widths[5]]."""
    ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj = self.widths
    branch1 = self.basic_conv(ch1x1, 1, name="branch1")(x)
    branch2 = self.basic_conv(ch3x3red, 1, name="branch2_0")(x)
    branch2 = self.basic_conv(ch3x3, 3, name="branch2_1")(branch2)
    branch3 = self.basic_conv(ch5x5red, 1, name="branch3_0")(x)
    branch3 = self.basic_conv(ch5x5, self.branch3_kernel, name="branch3_1")(branch3)
    branch4 = layers.MaxPool(3, 1, padding=1, ceil_mode=True)(x)
    branch4 = self.basic_conv(pool_proj, 1, name="branch4_1")(branch4)
    return jnp.concatenate([branch1, branch2, branch3, branch4], axis=-1)


class InceptionAux(nn.Module):
  """Auxiliary classifier: average pool, 1x1 conv 128, fc 1024, dropout, fc.

  `pool`: "adaptive" (torchvision: 4x4 adaptive) or "5x5/3" (the paper: a 5x5/3 ceil-mode
  pool, 4x4 on a 14x14 map; other map sizes change fc1's input width).
  """

  num_classes: int
  basic_conv: layers.ModuleDef
  dense: layers.ModuleDef
  dropout_rate: float = 0.7
  pool: str = "adaptive"

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    """x: [N, H, W, C] -> logits [N, num_classes]."""
    if self.pool == "adaptive":
      x = layers.AdaptiveAvgPool(4)(x)
    else:
      x = layers.AvgPool(5, 3, ceil_mode=True)(x)
    x = self.basic_conv(128, 1, name="conv")(x)
    x = nn.relu(self.dense(1024, name="fc1")(layers.flatten_nchw(x)))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return self.dense(self.num_classes, name="fc2")(x)


class GoogLeNet(nn.Module):
  """GoogLeNet for [N, H, W, 3] images, H and W >= 15 (>= 47 to build or train the
  auxiliary heads with aux_pool="5x5/3").

  num_classes=None returns the globally pooled 1024-d features [N, 1024] (needs
  aux_logits=False). Set transform_input=True with torchvision's pretrained weights.

  Feature maps (`stages`, see `cnnjax.models.feature_maps`): torchvision's module names,
  `FEATURE_NAMES` ("conv1", "maxpool1", .., "inception5b").
  """

  num_classes: int | None = 1000
  aux_logits: bool = False
  batch_norm: bool = True  # False: the paper's form, convs with biases and no BatchNorm.
  branch3_kernel: int = 3  # 5 in the paper.
  dropout_rate: float = 0.2
  aux_dropout_rate: float = 0.7
  aux_pool: str = "adaptive"  # "5x5/3" in the paper.
  transform_input: bool = False
  dtype: layers.Dtype = jnp.float32
  axis_name: str | None = None

  @nn.nowrap
  def feature_names(self) -> tuple[str, ...]:
    """The maps `stages` can name, in network order."""
    return FEATURE_NAMES

  @nn.compact
  def __call__(
    self, x: jnp.ndarray, train: bool = False, *, stages: feature_maps.Stages = None
  ) -> jnp.ndarray | tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray] | dict[str, jnp.ndarray]:
    """x: [N, H, W, 3] -> logits [N, num_classes]; (logits, aux1, aux2) when training with aux.

    With `stages` (names from `feature_names()`), {name: [N, h, w, C]} of those maps instead.
    """
    taps = feature_maps.Taps(self, stages)
    if self.aux_pool not in AUX_POOLS:
      raise UsageError(f"GoogLeNet aux_pool must be one of {AUX_POOLS}, got {self.aux_pool!r}.")
    layers.require_min_size(x, MIN_SIZE, "GoogLeNet")
    if self.aux_logits and self.num_classes is None:
      raise UsageError(
        "GoogLeNet's auxiliary heads need num_classes; set aux_logits=False to "
        "get pooled features with num_classes=None."
      )
    # Aux heads are built at init even for train=False so their parameters always exist.
    with_aux = self.aux_logits and (train or self.is_initializing())
    if with_aux and self.aux_pool == "5x5/3":
      layers.require_min_size(x, PAPER_AUX_MIN_SIZE, "GoogLeNet's 5x5/3 auxiliary pools")
    if self.transform_input:
      std, mean = jnp.asarray(IMAGENET_STD), jnp.asarray(IMAGENET_MEAN)
      x = x * (std / 0.5) + (mean - 0.5) / 0.5
    if self.batch_norm:
      # torchvision: trunc_normal(std=0.01) cut at +-2, i.e. at 200 std: a plain normal.
      kernel_init = nn.initializers.normal(0.01)
      norm = layers.batch_norm(train, self.axis_name, self.dtype, epsilon=1e-3)
    else:
      kernel_init, norm = nn.initializers.xavier_uniform(), None  # As the Caffe model.
    conv = functools.partial(
      nn.Conv, use_bias=not self.batch_norm, kernel_init=kernel_init, dtype=self.dtype
    )
    dense = functools.partial(nn.Dense, kernel_init=kernel_init, dtype=self.dtype)
    basic_conv = functools.partial(BasicConv, conv=conv, norm=norm)
    inception = functools.partial(
      Inception, basic_conv=basic_conv, branch3_kernel=self.branch3_kernel
    )
    aux_head = functools.partial(
      InceptionAux, self.num_classes, basic_conv, dense, self.aux_dropout_rate, self.aux_pool
    )
    pool = functools.partial(layers.MaxPool, 3, 2, ceil_mode=True)

    def block(name: str, x: jnp.ndarray) -> jnp.ndarray:
      """Inception block `name` ("3a") on x, tapped as f"inception{name}"."""
      x = inception(INCEPTION_WIDTHS[name], name=f"inception{name}")(x)
      return taps(f"inception{name}", x)

    x = taps("conv1", basic_conv(64, 7, stride=2, name="conv1")(x))
    x = taps("maxpool1", pool()(x))
    x = taps("conv2", basic_conv(64, 1, name="conv2")(x))
    x = taps("conv3", basic_conv(192, 3, name="conv3")(x))
    x = taps("maxpool2", pool()(x))
    x = block("3a", x)
    x = block("3b", x)
    x = taps("maxpool3", pool()(x))
    x = block("4a", x)
    aux1 = aux_head(name="aux1")(x, train) if with_aux else None
    for name in ("4b", "4c", "4d"):
      x = block(name, x)
    aux2 = aux_head(name="aux2")(x, train) if with_aux else None
    x = block("4e", x)
    x = taps("maxpool4", layers.MaxPool(2, 2, ceil_mode=True)(x))
    x = block("5a", x)
    x = block("5b", x)
    x = layers.GlobalAvgPool()(x)
    if self.num_classes is None:
      return taps.output(x)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    logits = dense(self.num_classes, name="fc")(x)
    if with_aux and train:
      return taps.output((logits, aux1, aux2))
    return taps.output(logits)


register("googlenet", GoogLeNet)
register(
  "googlenet_paper",
  functools.partial(
    GoogLeNet, batch_norm=False, branch3_kernel=5, dropout_rate=0.4, aux_pool="5x5/3"
  ),
)
