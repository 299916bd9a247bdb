"""The launch scripts parse, and every cnnjax flag they pass is one the command line defines."""

import pathlib
import re
import subprocess

import pytest

from cnnjax import main

LAUNCH = pathlib.Path(__file__).resolve().parents[1] / "launch"
SCRIPTS = sorted(p for p in LAUNCH.iterdir() if p.suffix in (".sh", ".sbatch"))


def test_every_launcher_is_found():
  assert {p.name for p in SCRIPTS} >= {"tpu_vm.sh", "xpk.sh", "multi_gpu.sh", "slurm.sbatch"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_launcher_is_valid_bash(script):
  subprocess.run(["bash", "-n", str(script)], check=True)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_launcher_flags_exist(script):
  text = script.read_text()
  defined = main._define_flags(["cnnjax", "train"])
  assert re.search(r"cnnjax\"? train", text)
  for flag in re.findall(r"--(distributed|coordinator_address|num_processes|process_id|config|workdir)\b",
                         text):
    assert flag in defined, flag


def test_multi_gpu_launcher_refuses_missing_config(tmp_path):
  result = subprocess.run(["bash", str(LAUNCH / "multi_gpu.sh")], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin"})
  assert result.returncode != 0
  assert "CONFIG" in result.stderr
