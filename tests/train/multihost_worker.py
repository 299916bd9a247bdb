"""One process of the multi-host test: trains 3 steps of a tiny ResNet, saves its params.

python multihost_worker.py PROCESS_ID NUM_PROCESSES LOCAL_DEVICES PORT OUT.npz
"""

import os
import sys

process_id, num_processes, local_devices, port = map(int, sys.argv[1:5])
output = sys.argv[5]
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={local_devices}"

import jax  # noqa: E402  (XLA_FLAGS must be set first)
import numpy as np  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")
if num_processes > 1:
  jax.distributed.initialize(
    coordinator_address=f"127.0.0.1:{port}", num_processes=num_processes, process_id=process_id
  )

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_helpers  # noqa: E402

from cnnjax import param_paths  # noqa: E402
from cnnjax.train import parallel  # noqa: E402

config = train_helpers.tiny_config("classification", batch_size=8)
runner = parallel.Runner("shard_map")
assert runner.num_devices == 4 and runner.local_device_count == local_devices
params, batch_stats, losses = train_helpers.train(
  train_helpers.initial_state(config), runner, train_helpers.batches(3, config.batch_size)
)
names = jax.tree.leaves(param_paths.path_names(params))
np.savez(
  output,
  losses=np.array(losses),
  **{name: np.asarray(leaf) for name, leaf in zip(names, jax.tree.leaves(params))},
)
