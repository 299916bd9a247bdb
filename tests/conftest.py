"""Test-wide setup: eight forced host CPU devices, so multi-device code runs on any machine."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
