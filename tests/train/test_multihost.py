"""Two processes with two CPU devices each train like one process with four devices."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "multihost_worker.py")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_match_one_process(tmp_path):
  port = _free_port()
  env = {**os.environ, "PYTHONPATH": REPO}
  runs = {
      "host0": [0, 2, 2], "host1": [1, 2, 2], "single": [0, 1, 4],
  }
  processes = {
      name: subprocess.Popen([sys.executable, WORKER, *map(str, args), str(port),
                              str(tmp_path / f"{name}.npz")], env=env, cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for name, args in runs.items()}
  for name, process in processes.items():
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, f"{name}: {stderr[-3000:]}"
  results = {name: np.load(tmp_path / f"{name}.npz") for name in runs}
  for name in results["single"].files:
    np.testing.assert_array_equal(results["host0"][name], results["host1"][name])
    np.testing.assert_allclose(results["host0"][name], results["single"][name],
                               rtol=2e-5, atol=2e-6)
