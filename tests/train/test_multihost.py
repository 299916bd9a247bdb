"""Two processes with two CPU devices each train like one process with four devices."""

import json
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
    "host0": [0, 2, 2],
    "host1": [1, 2, 2],
    "single": [0, 1, 4],
  }
  processes = {
    name: subprocess.Popen(
      [sys.executable, WORKER, *map(str, args), str(port), str(tmp_path / f"{name}.npz")],
      env=env,
      cwd=REPO,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for name, args in runs.items()
  }
  for name, process in processes.items():
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, f"{name}: {stderr[-3000:]}"
  results = {name: np.load(tmp_path / f"{name}.npz") for name in runs}
  for name in results["single"].files:
    np.testing.assert_array_equal(results["host0"][name], results["host1"][name])
    np.testing.assert_allclose(
      results["host0"][name], results["single"][name], rtol=2e-5, atol=2e-6
    )


def test_two_process_command_line_run_trains_evaluates_and_checkpoints(tmp_path):
  """`cnnjax train` as two processes (gloo on 127.0.0.1): one workdir, one shared result."""
  port, workdir = _free_port(), str(tmp_path / "run")
  env = {
    **os.environ,
    "PYTHONPATH": REPO,
    "CNNJAX_COMPILATION_CACHE": "",
    "XLA_FLAGS": "--xla_force_host_platform_device_count=2 --xla_backend_optimization_level=0",
  }
  processes = [
    subprocess.Popen(
      [
        sys.executable,
        "-m",
        "cnnjax.main",
        "train",
        f"--coordinator_address=127.0.0.1:{port}",
        "--num_processes=2",
        f"--process_id={i}",
        "--config=experiments/configs/lenet_digits.py",
        f"--workdir={workdir}",
        "--config.num_epochs=0",
        "--config.num_steps=20",
        "--config.log_every=10",
        "--config.checkpoint_every=10",
        "--config.progress=lines",
      ],
      env=env,
      cwd=REPO,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  finals = []
  for i, process in enumerate(processes):
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, f"process {i}: {stderr[-3000:]}"
    finals.append([line for line in stderr.splitlines() if line.startswith("final ")])
  # Process 0 alone logs; the evaluation covers every test example exactly once.
  assert len(finals[0]) == 1 and not finals[1]
  with open(os.path.join(workdir, "summary.json")) as f:
    summary = json.load(f)
  assert summary["step"] == 20 and summary["test/count"] == 359
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints")))
