"""experiments/benchmarks/accelerator.py at tiny sizes on CPU: it runs, prints one table and
writes it; the PyTorch columns appear when torch is importable."""

import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "experiments" / "benchmarks" / "accelerator.py"


@pytest.mark.slow
def test_tiny_benchmark_prints_and_writes_one_table(tmp_path):
  out = tmp_path / "RESULTS_test.md"
  # One CPU device (the suite forces eight; the tiny batch of 2 would not divide them).
  env = {**os.environ, "XLA_FLAGS": "--xla_backend_optimization_level=0", "JAX_PLATFORMS": "cpu"}
  result = subprocess.run(
    [sys.executable, str(SCRIPT), "--tiny", "--notorch_compile", f"--out={out}"],
    capture_output=True,
    text=True,
    timeout=900,
    cwd=REPO,
    env=env,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  torch = all(importlib.util.find_spec(name) for name in ("torch", "torchvision"))
  header = "| measurement | size | cnnjax | XLA memory |" + (
    " PyTorch eager | PyTorch torch.compile |" if torch else ""
  )
  assert header in result.stdout
  table = [line for line in result.stdout.splitlines() if line.startswith("|")]
  names = [line.split(" | ")[0] for line in table[2:]]
  assert names == [
    "| ResNet-18 train step, bf16, 32x32, images/s",
    "| ResNet-18 CIFAR train step, bf16, 32x32, images/s",
    *["| semi-hard triplet loss + grad"] * 2,
    *["| NT-Xent loss + grad, dense"] * 2,
    *["| NT-Xent loss + grad, blockwise (32)"] * 2,
    "| input pipeline vs ResNet-18 step, 32x32 JPEG, images/s",
    "| largest ResNet-18 bf16 batch that fits one device",
  ]
  for line in table[2:-1]:  # Every measurement gave a number, none an error.
    cells = line.split(" | ")
    assert "error" not in line and "skipped" not in line, line
    assert cells[2][0].isdigit(), line
  if torch:
    assert table[2].split(" | ")[4][0].isdigit()  # PyTorch eager, ResNet-18 at batch 2.
  assert "n/a on cpu" in table[-1]
  written = out.read_text()
  assert written.startswith(
    "# Accelerator benchmark: cpu\n\n    python experiments/benchmarks/accelerator.py --tiny"
  )
  assert "\n".join(table) in written
