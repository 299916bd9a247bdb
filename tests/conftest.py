"""Test-wide setup: eight forced host CPU devices, so multi-device code runs on any machine.

The suite compiles hundreds of tiny programs and runs each a few times, so XLA's backend
optimisations cost far more than they save: level 0 halves the suite's time. Set through
the environment so that subprocesses (`cnnjax train`, multi-host workers) inherit both.
"""

import os

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
  " --xla_backend_optimization_level=0"
).strip()
