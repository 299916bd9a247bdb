"""What the weights look like: the first convolution's kernels, every layer's kernel norms.

  order = layer_order(model, (32, 32, 3))          # layer names in call order
  name, kernel = first_conv(variables["params"], order)   # "conv1", [kh, kw, C_in, C_out]
  tiles = kernel_images(kernel)                     # [C_out, kh, kw, 3 or 1] in [0, 1]
  norms = kernel_norms(variables["params"], order)  # {"conv1": [C_out], ..., "fc": [K]}

Parameter trees come back from checkpoints (and jax's tree functions) with their keys
sorted, which is not the order the input meets the layers (GoogLeNet's "aux1" sorts before
"conv1", a U-Net's "ConvTranspose_0" before "Conv_0"): `layer_order` takes that order from
one trace of the model (`cnnjax.inspect.summary`), and the functions here follow it.
"""

import collections
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax.errors import UsageError
from cnnjax.inspect import summary

Order = Sequence[str] | None


def layer_order(model: nn.Module, input_shape: Sequence[int]) -> tuple[str, ...]:
  """Names ("layer1_0/conv1") of `model`'s layers in the order an image of `input_shape`
  (H, W, C) meets them in evaluation."""
  return tuple(dict.fromkeys(row.name for row in summary.summarize(model, input_shape).rows))


def _kernels(params: Any, order: Order = None) -> list[tuple[str, jax.Array]]:
  """("a/b", kernel) of every leaf named "kernel": in `order` (names of layers), then the
  rest in the tree's order."""
  found = {}

  def walk(tree, path):
    for key, value in tree.items():
      if hasattr(value, "items"):
        walk(value, (*path, key))
      elif key == "kernel":
        found["/".join(path)] = value

  walk(params, ())
  rank = {name: i for i, name in enumerate(order or ())}
  names = sorted(found, key=lambda name: rank.get(name, len(rank)))
  return [(name, found[name]) for name in names]


def first_conv(params: Any, order: Order = None) -> tuple[str, jax.Array]:
  """(layer name, kernel [kh, kw, C_in, C_out]) of the first convolution in `params`.

  Args:
    params: a model's parameters.
    order: its layers in call order (`layer_order`); None: the tree's order.

  Raises:
    UsageError: the model has no convolution.
  """
  for name, kernel in _kernels(params, order):
    if len(kernel.shape) == 4:
      return name, kernel
  raise UsageError("the model has no convolution; there are no filters to show.")


@jax.jit
def kernel_images(kernel: jax.Array) -> jax.Array:
  """Kernels [kh, kw, C_in, C_out] as images [C_out, kh, kw, 3 or 1] in [0, 1].

  Three input channels are shown as RGB, any other number as grey (their mean). All
  filters share one scale, 0.5 + w / (2 max |w|), so that zero is mid-grey and their
  relative strength shows.
  """
  kernel = kernel.astype(jnp.float32)
  if kernel.shape[2] != 3:
    kernel = jnp.mean(kernel, axis=2, keepdims=True)
  scale = jnp.maximum(jnp.max(jnp.abs(kernel)), 1e-12)
  return jnp.transpose(0.5 + 0.5 * kernel / scale, (3, 0, 1, 2))


@jax.jit
def _filter_norms(kernel: jax.Array) -> jax.Array:
  kernel = kernel.astype(jnp.float32)
  return jnp.sqrt(jnp.sum(kernel.reshape(-1, kernel.shape[-1]) ** 2, axis=0))


def kernel_norms(params: Any, order: Order = None) -> "collections.OrderedDict[str, jax.Array]":
  """{layer: L2 norm of each output filter [C_out]} of every conv and dense kernel.

  Args:
    params: a model's parameters.
    order: its layers in call order (`layer_order`); None: the tree's order.
  """
  return collections.OrderedDict(
    (name, _filter_norms(jnp.asarray(kernel))) for name, kernel in _kernels(params, order)
  )
