"""The `cnnjax` command line: one-line errors for bad input, and the listing commands."""

import os
import subprocess
import sys

import pytest

from cnnjax import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LENET = os.path.join(REPO, "experiments", "configs", "lenet_digits.py")


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
