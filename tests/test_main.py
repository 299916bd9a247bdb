"""The `cnnjax` command line: one-line errors for bad input, and the listing commands."""

import os
import subprocess
import sys

import pytest

from cnnjax import main
from cnnjax.train import config as config_lib
from cnnjax.train import loop
from cnnjax.train import tasks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "experiments", "configs")
LENET = os.path.join(CONFIGS, "lenet_digits.py")


def _error_line(capsys, argv: list[str]) -> str:
  with pytest.raises(SystemExit) as exit_info:
    main.run_cli(["cnnjax", *argv])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1, err
  assert err.startswith("cnnjax: error: ") and "Traceback" not in err
  return err


@pytest.mark.parametrize("override, message", [
    ("--config.no_such_key=1", "no_such_key"),
    ("--config.bogus=1", "unknown config key 'bogus'"),
    ("--config.optimizer.nmae=sgd", "unknown config key 'optimizer.nmae'"),
    ("--config.task=segmentashun", "unknown task"),
    ("--config.optimizer.name=adamax", "unknown optimizer.name 'adamax'"),
    ("--config.schedule.name=linear", "unknown schedule.name"),
    ("--config.batch_size=12", "not divisible by the 8 devices"),
    ("--config.model=resnet9000", "unknown model 'resnet9000'"),
])
def test_bad_config_is_one_line(capsys, tmp_path, override, message):
  err = _error_line(capsys, ["train", f"--config={LENET}", f"--workdir={tmp_path}", override])
  assert message in err


def test_missing_config_file_and_workdir_file(capsys, tmp_path):
  assert "no_such_config.py" in _error_line(
      capsys, ["train", "--config=no_such_config.py", f"--workdir={tmp_path}"])
  a_file = tmp_path / "file"
  a_file.write_text("not a directory")
  assert "is a file" in _error_line(capsys, ["train", f"--config={LENET}",
                                             f"--workdir={a_file}"])
  assert "unknown command" in _error_line(capsys, ["fly"])


def test_models_lists_names(capsys):
  with pytest.raises(SystemExit) as exit_info:
    main.run_cli(["cnnjax", "models"])
  assert exit_info.value.code == 0
  assert "lenet5" in capsys.readouterr().out.split()


def test_console_script_prints_no_traceback(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "cnnjax.main", "train", f"--config={LENET}",
       f"--workdir={tmp_path}", "--config.optimizer.name=adamax"],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith("cnnjax: error: unknown optimizer")
  assert "Traceback" not in result.stderr


def test_summary_prints_lenet(capsys):
  with pytest.raises(SystemExit) as exit_info:
    main.run_cli(["cnnjax", "summary", "lenet5", "--input=32,32,1", "--num-classes=10"])
  assert exit_info.value.code == 0
  out = capsys.readouterr().out
  assert "61,706" in out or "61706" in out


def _fake_run(monkeypatch, result: dict) -> dict:
  """Replaces the trainer: `main` then only parses; returns where the config lands."""
  seen = {}

  def run(config, workdir, train):
    seen.update(config=config, workdir=workdir, train=train)
    return result

  monkeypatch.setattr(loop, "run", run)
  monkeypatch.setattr(main, "_enable_compilation_cache", lambda: None)
  return seen


def test_model_kwargs_overrides_reach_the_model(monkeypatch, tmp_path):
  seen = _fake_run(monkeypatch, {"accuracy": 1.0, "step": 1})
  # simclr_digits' docstring suggests exactly this; its model_kwargs start empty.
  assert main.main(["cnnjax", "train", f"--config={CONFIGS}/simclr_digits.py",
                    f"--workdir={tmp_path}", "--config.model=resnet20",
                    "--config.model_kwargs.width=8"]) == 0
  config = seen["config"]
  config_lib.validate(config)
  task = tasks.create(config, tasks.DataInfo(10, (8, 8, 1), {"train": 1437}))
  assert task.model.backbone.width == 8


def test_config_variant_typo_is_one_line(capsys, tmp_path):
  err = _error_line(capsys, ["train", f"--config={CONFIGS}/resnet_cifar10.py:locl",
                             f"--workdir={tmp_path}"])
  assert "no variant 'locl'" in err and "resnet56, resnet110, local" in err


@pytest.mark.parametrize("flags, status", [([], 0), (["--preempted_exit_code=75"], 75)])
def test_preempted_exit_code(monkeypatch, tmp_path, flags, status):
  _fake_run(monkeypatch, {"preempted": True, "step": 3})
  assert main.main(["cnnjax", "train", f"--config={LENET}", f"--workdir={tmp_path}",
                    *flags]) == status
