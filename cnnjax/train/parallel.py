"""Runs a per-device (pmap-style) function over all devices: shard_map under jit, or pmap.

    runner = Runner("shard_map")          # or "pmap"
    step = runner.compile(train_step, in_specs=(REPLICATED, SHARDED),
                          out_specs=(REPLICATED, REPLICATED), donate_argnums=(0,))
    state = runner.replicate(state)       # once
    state, metrics = step(state, runner.shard_batch(host_batch))

The per-device function sees this device's shard of every SHARDED argument and a copy
of every REPLICATED one; collectives over the axis "batch" combine them. Under
shard_map the replicated values are global arrays on a one-axis mesh of all devices of
all processes, and each process passes only its own rows of a batch
(`jax.make_array_from_process_local_data`). Under pmap they carry a leading axis of
local devices. Both run the same step and give the same numbers.
"""

from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from cnnjax.errors import UsageError
from cnnjax.axis import AXIS

REPLICATED = PartitionSpec()
SHARDED = PartitionSpec(AXIS)
KINDS = ("shard_map", "pmap")


class Runner:
  """Places data on the devices and compiles per-device functions for them.

  Attributes:
    kind: "shard_map" or "pmap".
    num_devices: devices over all processes.
    local_device_count: devices of this process.
  """

  def __init__(self, kind: str = "shard_map", devices: Sequence[jax.Device] | None = None):
    if kind not in KINDS:
      raise UsageError(f"unknown parallel {kind!r}; choose one of {', '.join(KINDS)}.")
    self.kind = kind
    self.devices = list(devices) if devices is not None else jax.devices()
    self.num_devices = len(self.devices)
    self.local_devices = [d for d in self.devices if d.process_index == jax.process_index()]
    self.local_device_count = len(self.local_devices)
    self.mesh = Mesh(np.array(self.devices), (AXIS,))

  def check_batch_size(self, global_batch: int, name: str = "batch_size") -> int:
    """The per-process batch size; UsageError unless the devices divide `global_batch`.

    `name` is the config key the error names (e.g. "eval_batch_size").
    """
    if global_batch <= 0 or global_batch % self.num_devices:
      raise UsageError(
        f"{name} {global_batch} is not divisible by the {self.num_devices} "
        f"devices; use a positive multiple of {self.num_devices}."
      )
    return global_batch // self.num_devices * self.local_device_count

  def replicate(self, tree: Any) -> Any:
    """Values identical on every process -> one copy per device."""
    if self.kind == "pmap":
      return jax.tree.map(
        lambda x: np.broadcast_to(np.asarray(x), (self.local_device_count, *np.shape(x))), tree
      )
    sharding = self.replicated_sharding()

    def put(x):
      if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return x  # Already a global array (restored from a checkpoint with this sharding).
      x = np.asarray(x)
      return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(put, tree)

  def unreplicate(self, tree: Any) -> Any:
    """Replicated values -> one copy (a global replicated array under shard_map)."""
    if self.kind == "pmap":
      return jax.tree.map(lambda x: x[0], tree)
    return tree

  def replicated_sharding(self) -> NamedSharding:
    """The sharding of replicated values under shard_map (for jit and checkpoint restore)."""
    return NamedSharding(self.mesh, REPLICATED)

  def shard_batch(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """This process's rows [B_local, ...] -> a batch split over all devices."""
    if self.kind == "pmap":
      return jax.tree.map(lambda x: x.reshape(self.local_device_count, -1, *x.shape[1:]), batch)
    sharding = NamedSharding(self.mesh, SHARDED)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)

  def compile(
    self, fn: Callable, in_specs: tuple, out_specs: Any, donate_argnums: tuple[int, ...] = ()
  ) -> Callable:
    """`fn` per device over all devices; specs are REPLICATED or SHARDED pytree prefixes."""
    if self.kind == "pmap":
      # pmap over a subset names its devices; over all of them (multi-host too) it needs none.
      devices = None if self.num_devices == len(jax.devices()) else self.local_devices
      return jax.pmap(fn, axis_name=AXIS, donate_argnums=donate_argnums, devices=devices)
    # check_vma=False keeps pmap's semantics: the gradient of a replicated parameter is
    # this device's gradient, and the step averages it with an explicit pmean.
    mapped = jax.shard_map(
      fn, mesh=self.mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False
    )
    return jax.jit(mapped, donate_argnums=donate_argnums)

  def to_host(self, tree: Any, spec: PartitionSpec) -> Any:
    """Device values -> numpy on every process: one copy of REPLICATED, all rows of SHARDED."""
    if spec == REPLICATED:
      if self.kind == "pmap":
        return jax.tree.map(lambda x: np.asarray(x[0]), tree)
      return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)
    if self.kind == "pmap":
      tree = jax.tree.map(lambda x: np.asarray(x).reshape(-1, *x.shape[2:]), tree)
      return (
        multihost_utils.process_allgather(tree, tiled=True) if jax.process_count() > 1 else tree
      )
    return multihost_utils.process_allgather(tree, tiled=True)
