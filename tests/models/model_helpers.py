"""Small pieces the model tests share: fast-compiling keys, fixed inputs, counts, MACs."""

import functools

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def key(seed: int) -> jax.Array:
  """An RBG key: threefry's initialisers take seconds to compile on the CPU."""
  return jax.random.key(seed, impl="rbg")


# Initialising through XLA's RngBitGenerator compiles ~6x faster on CPU than threefry.
INIT_KEY = key(1)


def normal(shape: tuple[int, ...]) -> jnp.ndarray:
  """Fixed standard-normal float32 inputs of `shape`."""
  return jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)


def param_count(variables) -> int:
  """Trainable parameters (the `params` collection; BatchNorm statistics excluded)."""
  return sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))


def run_unoptimised(fn, *args):
  """fn(*args), compiled without XLA's backend optimisations: tiny nets compile ~2x faster."""
  compiled = jax.jit(fn).lower(*args).compile({"xla_backend_optimization_level": 0})
  return compiled(*args)


def count_and_gmacs(model: nn.Module, size: int) -> tuple[int, float]:
  """(parameters, GMACs) of `model` on one [size, size, 3] image, from shapes alone.

  MACs as torchvision's reference figures count them: every Conv and Dense call, output
  positions x kernel size (kh * kw * in / groups * out), nothing else.
  """
  variables = jax.eval_shape(
    functools.partial(
      model.init,
      mutable=True,
      capture_intermediates=lambda m, _: isinstance(m, (nn.Conv, nn.Dense)),
    ),
    jax.random.key(0),
    jnp.zeros((1, size, size, 3)),
  )
  params = flax.traverse_util.flatten_dict(variables["params"])
  macs = sum(
    np.prod(params[path[:-1] + ("kernel",)].shape) * np.prod(out[0].shape[1:-1])
    for path, out in flax.traverse_util.flatten_dict(variables["intermediates"]).items()
  )
  return sum(p.size for p in params.values()), macs / 1e9
