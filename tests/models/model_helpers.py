"""Small pieces the model tests share: fast-compiling keys, fixed inputs, parameter counts."""

import jax
import jax.numpy as jnp
import numpy as np


def key(seed: int) -> jax.Array:
  """An RBG key: threefry's initialisers take seconds to compile on the CPU."""
  return jax.random.key(seed, impl="rbg")


def normal(shape: tuple[int, ...]) -> jnp.ndarray:
  """Fixed standard-normal float32 inputs of `shape`."""
  return jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)


def param_count(variables) -> int:
  """Trainable parameters (the `params` collection; BatchNorm statistics excluded)."""
  return sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))
