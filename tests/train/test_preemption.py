"""SIGTERM or Ctrl-C mid-run saves and exits cleanly; the restarted run ends bit-identical."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARGS = [
  "--config=experiments/configs/lenet_digits.py",
  "--config.num_epochs=0",
  "--config.num_steps=120",
  "--config.batch_size=32",
  "--config.log_every=1",
  "--config.checkpoint_every=8",
  "--config.progress=lines",
  "--config.schedule.warmup_steps=5",
]


def _train(workdir: str, cache: str, extra: list[str] = ()) -> subprocess.Popen:
  command = [sys.executable, "-m", "cnnjax.main", "train", f"--workdir={workdir}", *ARGS, *extra]
  env = {**os.environ, "CNNJAX_COMPILATION_CACHE": cache}
  return subprocess.Popen(
    command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
  )


def _train_steps(workdir: str) -> list[int]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [r["step"] for r in map(json.loads, filter(str.strip, f)) if r["split"] == "train"]


def _final_state(workdir: str) -> dict:
  """The whole train state (moving averages included) of the workdir's newest checkpoint."""
  manager = ocp.CheckpointManager(
    os.path.join(workdir, "checkpoints"),
    item_handlers={"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()},
  )
  state = manager.restore(
    manager.latest_step(), args=ocp.args.Composite(state=ocp.args.StandardRestore())
  )["state"]
  manager.close()
  return state


@pytest.mark.parametrize(
  "signum, status, said, extra",
  [
    (signal.SIGTERM, 0, "stopped by SIGTERM at step", []),
    (signal.SIGINT, 130, "stopped by Ctrl-C (SIGINT) at step", []),
    (signal.SIGTERM, 0, "stopped by SIGTERM at step", ["--config.ema_decay=0.9"]),
  ],
)
def test_stop_signal_then_resume_matches_uninterrupted_run(tmp_path, signum, status, said, extra):
  straight_dir, stopped_dir = str(tmp_path / "straight"), str(tmp_path / "stopped")
  cache = str(tmp_path / "xla_cache")
  straight = _train(straight_dir, cache, extra)
  stopped = _train(stopped_dir, cache, extra)
  deadline = time.time() + 300
  # Stop mid-run, past the periodic checkpoint at step 8, so the resumed run starts from
  # the SIGTERM save with a data iterator part-way through its epoch.
  while max(_train_steps(stopped_dir), default=0) < 10:
    assert stopped.poll() is None and time.time() < deadline, stopped.communicate()[1][-2000:]
    time.sleep(0.05)
  stopped.send_signal(signum)
  _, stderr = stopped.communicate(timeout=300)
  assert stopped.returncode == status, stderr[-2000:]
  assert said in stderr and "Traceback" not in stderr
  assert not os.path.exists(os.path.join(stopped_dir, "summary.json"))
  stopped_at = max(_train_steps(stopped_dir))
  assert 10 <= stopped_at < 120

  resumed = _train(stopped_dir, cache, extra)
  _, stderr = resumed.communicate(timeout=300)
  assert resumed.returncode == 0, stderr[-2000:]
  assert f"resumed from step {stopped_at}" in stderr
  _, stderr = straight.communicate(timeout=300)
  assert straight.returncode == 0, stderr[-2000:]

  final_straight, final_resumed = _final_state(straight_dir), _final_state(stopped_dir)
  assert bool(final_straight["ema"]) == bool(extra)
  for a, b in zip(jax.tree.leaves(final_straight), jax.tree.leaves(final_resumed)):
    np.testing.assert_array_equal(a, b)
  with open(os.path.join(stopped_dir, "summary.json")) as f:
    summary = json.load(f)
  assert summary["step"] == 120
  assert ("ema/test/accuracy" in summary) == bool(extra)


def test_sigterm_during_start_up_stops_after_one_saved_step(tmp_path):
  workdir = str(tmp_path / "run")
  command = [
    sys.executable,
    "-m",
    "cnnjax.main",
    "train",
    f"--workdir={workdir}",
    *ARGS,
    "--preempted_exit_code=75",
  ]
  env = {**os.environ, "CNNJAX_COMPILATION_CACHE": str(tmp_path / "xla_cache")}
  process = subprocess.Popen(
    command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
  )
  time.sleep(1.0)  # Past the handler's installation, still importing jax and TFDS.
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=300)
  assert process.returncode == 75, stderr[-2000:]
  assert "stopped by SIGTERM at step 1;" in stderr
  assert _train_steps(workdir) == [1]
