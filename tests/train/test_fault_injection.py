"""experiments/fault_injection.py, small: SIGKILLed runs restart and end bit-identical."""

import importlib.util
import json
import pathlib
import types

import numpy as np
import orbax.checkpoint as ocp
import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "fault_injection.py"


def _load_script() -> types.ModuleType:
  spec = importlib.util.spec_from_file_location("fault_injection", SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


# Loaded once: the script defines absl flags, which a second load would define again.
fault_injection = _load_script()


@pytest.mark.slow
def test_sigkilled_runs_end_bit_identical_to_the_reference(tmp_path):
  # Three jobs: the reference and both faulted runs train at once, to keep this short.
  report = fault_injection.inject(runs=2, seed=0, workdir_root=tmp_path, max_kills=1, jobs=3)
  assert report.failures == []
  assert (report.runs, report.kills, report.identical) == (2, 2, 2)
  # Passing runs leave only the shared compilation cache behind.
  assert [p.name for p in tmp_path.iterdir()] == ["xla_cache"]


def _write_workdir(workdir: pathlib.Path, state: dict, data: dict, summary: dict) -> None:
  """A workdir as `cnnjax train` leaves it: checkpoints/<step>/{state,data}, summary.json."""
  manager = ocp.CheckpointManager(
    workdir / "checkpoints",
    item_handlers={"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()},
  )
  manager.save(
    int(state["step"]),
    args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data)),
  )
  manager.close()
  (workdir / "summary.json").write_text(json.dumps(summary))


def _end_state(zero: float = 0.0, next_index: int = 60, accuracy: float = 0.9) -> tuple:
  state = {"step": np.int32(60), "params": {"w": np.array([1.5, zero], np.float32)}}
  return state, {"iterator": {"next_index": next_index}}, {"accuracy": accuracy, "step": 60}


@pytest.mark.parametrize(
  "changed, difference",
  [
    ({}, None),
    ({"zero": -0.0}, "train state differs in ['params']['w']"),  # Equal values, other bits.
    ({"next_index": 59}, "data state"),
    ({"accuracy": 0.8}, "summary.json"),
  ],
)
def test_compare_finds_any_difference_from_the_reference(tmp_path, changed, difference):
  _write_workdir(tmp_path / "reference", *_end_state())
  _write_workdir(tmp_path / "run", *_end_state(**changed))
  found = fault_injection.compare(tmp_path / "reference", tmp_path / "run")
  if difference is None:
    assert found is None
  else:
    assert found.startswith(difference), found
