"""The launch scripts parse, every cnnjax flag they pass is one the command line defines, and
the SLURM and xpk launchers start a run again that SIGTERM stopped (and only such a run)."""

import os
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
  flags = r"distributed|coordinator_address|num_processes|process_id|preempted_exit_code"
  for flag in re.findall(rf"--({flags}|config|workdir)\b", text):
    assert flag in defined, flag


def test_multi_gpu_launcher_refuses_missing_config(tmp_path):
  result = subprocess.run(
    ["bash", str(LAUNCH / "multi_gpu.sh")],
    capture_output=True,
    text=True,
    env={"PATH": "/usr/bin:/bin"},
  )
  assert result.returncode != 0
  assert "CONFIG" in result.stderr


def _stubs(directory: pathlib.Path, **scripts: str) -> dict[str, str]:
  """An environment whose PATH finds the given bash scripts before the system's commands."""
  directory.mkdir()
  for name, body in scripts.items():
    path = directory / name
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)
  return {"PATH": f"{directory}:/usr/bin:/bin"}


@pytest.mark.parametrize(
  "outcome, requeued, status",
  [
    ("finish", False, 0),  # the run reached its last step: summary.json is new
    ("sigterm", True, 0),  # saved and exited 0 early: no summary.json
    ("sigterm_after_old_run", True, 0),  # a summary.json from an earlier run does not count
    ("fail", False, 3),  # errors are not retried
  ],
)
def test_slurm_requeues_only_a_run_that_sigterm_stopped(tmp_path, outcome, requeued, status):
  workdir = tmp_path / "run"
  workdir.mkdir()
  if outcome == "sigterm_after_old_run":
    (workdir / "summary.json").write_text("{}")
    os.utime(workdir / "summary.json", (0, 0))
  log = tmp_path / "calls"
  env = _stubs(
    tmp_path / "bin",
    srun=f"""
echo "srun $*" >> {log}
case "$OUTCOME" in
  finish) echo '{{}}' > "$WORKDIR/summary.json" ;;
  fail) exit 3 ;;
esac
""",
    scontrol=f'echo "scontrol $*" >> {log}\n',
  )
  env.update(
    CONFIG="experiments/configs/lenet_digits.py",
    WORKDIR=str(workdir),
    SLURM_JOB_ID="42",
    OUTCOME=outcome,
  )
  result = subprocess.run(
    ["bash", str(LAUNCH / "slurm.sbatch"), "--config.seed=1"],
    capture_output=True,
    text=True,
    env=env,
  )
  assert result.returncode == status, result.stderr
  calls = log.read_text().splitlines()
  assert "train --distributed" in calls[0] and calls[0].endswith("--config.seed=1")
  assert ("scontrol requeue 42" in calls) == requeued


def test_slurm_refuses_a_workdir_it_cannot_read(tmp_path):
  env = _stubs(tmp_path / "bin", srun="exit 0\n")
  env.update(CONFIG="c.py", WORKDIR="gs://bucket/run", SLURM_JOB_ID="42")
  result = subprocess.run(
    ["bash", str(LAUNCH / "slurm.sbatch")], capture_output=True, text=True, env=env
  )
  assert result.returncode != 0 and "WORKDIR" in result.stderr


def test_xpk_fails_a_preempted_run_so_xpk_restarts_it(tmp_path):
  log = tmp_path / "calls"
  env = _stubs(tmp_path / "bin", xpk=f'printf "%s\\n" "$@" > {log}\n')
  env.update(
    CLUSTER="c", TPU_TYPE="v5litepod-16", IMAGE="image", CONFIG="c.py", WORKDIR="gs://bucket/run"
  )
  subprocess.run(["bash", str(LAUNCH / "xpk.sh")], check=True, env=env)
  arguments = log.read_text().splitlines()
  command = next(a for a in arguments if a.startswith("--command="))
  assert "--preempted_exit_code=75" in command and "--max-restarts=10" in arguments
