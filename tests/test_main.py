"""The `cnnjax` command line: one-line errors for bad input, and the listing commands."""

import os
import subprocess
import sys

from absl import logging as absl_logging
import jax
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


@pytest.mark.parametrize(
  "override, message",
  [
    ("--config.no_such_key=1", "no_such_key"),
    ("--config.bogus=1", "unknown config key 'bogus'"),
    ("--config.optimizer.nmae=sgd", "unknown config key 'optimizer.nmae'"),
    ("--config.schedule.learnig_rate=0.1", "did you mean 'schedule.learning_rate'?"),
    ("--config.learning_rate=0.1", "did you mean 'schedule.learning_rate'?"),
    ("--config.task=segmentashun", "unknown task"),
    ("--config.optimizer.name=adamax", "unknown optimizer.name 'adamax'"),
    ("--config.schedule.name=linear", "unknown schedule.name"),
    ("--config.batch_size=12", "not divisible by the 8 devices"),
    ("--config.model=resnet9000", "unknown model 'resnet9000'"),
  ],
)
def test_bad_config_is_one_line(capsys, tmp_path, override, message):
  err = _error_line(capsys, ["train", f"--config={LENET}", f"--workdir={tmp_path}", override])
  assert message in err


def test_missing_config_file_and_workdir_file(capsys, tmp_path):
  assert "no_such_config.py" in _error_line(
    capsys, ["train", "--config=no_such_config.py", f"--workdir={tmp_path}"]
  )
  a_file = tmp_path / "file"
  a_file.write_text("not a directory")
  assert "is a file" in _error_line(capsys, ["train", f"--config={LENET}", f"--workdir={a_file}"])
  assert "unknown command" in _error_line(capsys, ["fly"])


def test_models_lists_names(capsys):
  with pytest.raises(SystemExit) as exit_info:
    main.run_cli(["cnnjax", "models"])
  assert exit_info.value.code == 0
  assert "lenet5" in capsys.readouterr().out.split()


def test_console_script_prints_no_traceback(tmp_path):
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "cnnjax.main",
      "train",
      f"--config={LENET}",
      f"--workdir={tmp_path}",
      "--config.optimizer.name=adamax",
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
  )
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

  def fake(train):
    def run(config, workdir):
      seen.update(config=config, workdir=workdir, train=train)
      return result

    return run

  monkeypatch.setattr(loop, "run", fake(train=True))
  monkeypatch.setattr(loop, "evaluate", fake(train=False))
  monkeypatch.setattr(main, "_enable_compilation_cache", lambda: None)
  return seen


def test_model_kwargs_overrides_reach_the_model(monkeypatch, tmp_path):
  seen = _fake_run(monkeypatch, {"accuracy": 1.0, "step": 1})
  # simclr_digits' docstring suggests exactly this; its model_kwargs start empty.
  assert (
    main.main(
      [
        "cnnjax",
        "train",
        f"--config={CONFIGS}/simclr_digits.py",
        f"--workdir={tmp_path}",
        "--config.model=resnet20",
        "--config.model_kwargs.width=8",
      ]
    )
    == 0
  )
  config = seen["config"]
  config_lib.validate(config)
  task = tasks.create(config, tasks.DataInfo(10, (8, 8, 1), {"train": 1437}))
  assert task.model.backbone.width == 8


def test_config_variant_typo_is_one_line(capsys, tmp_path):
  err = _error_line(
    capsys, ["train", f"--config={CONFIGS}/resnet_cifar10.py:locl", f"--workdir={tmp_path}"]
  )
  assert "no variant 'locl'" in err and "resnet56, resnet110, local" in err


@pytest.mark.parametrize("flags, status", [([], 0), (["--preempted_exit_code=75"], 75)])
def test_preempted_exit_code(monkeypatch, tmp_path, flags, status):
  _fake_run(monkeypatch, {"preempted": True, "step": 3})
  assert (
    main.main(["cnnjax", "train", f"--config={LENET}", f"--workdir={tmp_path}", *flags]) == status
  )


@pytest.mark.parametrize(
  "source, message",
  [
    ("def get_config(:\n  pass\n", "syntax error in the --config file {path}, line 1"),
    (
      (
        "import ml_collections\n\ndef get_config():\n  c = ml_collections.ConfigDict()\n"
        "  c.model = 'lenet5'\n  return c\n"
      ),
      "start from cnnjax.train.config.defaults()",
    ),
    (
      "def get_config():\n  return {'model': 'lenet5'}\n",
      "config is a dict, not a ConfigDict; start from cnnjax.train.config.defaults()",
    ),
    (
      (
        "from cnnjax.train import config as config_lib\n\ndef get_config():\n"
        "  c = config_lib.defaults()\n  c.optimzer.name = 'sgd'\n  return c\n"
      ),
      "{path}, line 5: unknown config key 'optimzer'",
    ),
  ],
  ids=["syntax", "plain_configdict", "dict", "typo_read"],
)
def test_config_file_mistakes_are_one_line(capsys, tmp_path, source, message):
  path = tmp_path / "experiment.py"
  path.write_text(source)
  err = _error_line(capsys, ["train", f"--config={path}", f"--workdir={tmp_path / 'run'}"])
  assert message.format(path=path) in err


def test_jax_flags_set_jax_config(monkeypatch, tmp_path):
  seen = {}

  def run(config, workdir):
    seen.update(nans=jax.config.jax_debug_nans, platforms=jax.config.jax_platforms)
    return {"step": 1}

  _fake_run(monkeypatch, {})
  monkeypatch.setattr(loop, "run", run)
  before = {name: getattr(jax.config, name) for name in ("jax_debug_nans", "jax_platforms")}
  try:
    assert (
      main.main(
        [
          "cnnjax",
          "train",
          f"--config={LENET}",
          f"--workdir={tmp_path}",
          "--jax_platforms=cpu",
          "--jax_debug_nans",
        ]
      )
      == 0
    )
  finally:
    for name, value in before.items():
      jax.config.update(name, value)
  assert seen == {"nans": True, "platforms": "cpu"}


def test_opencv_advice_is_silenced_other_warnings_are_not(caplog):
  assert main.main(["cnnjax", "models"]) == 0
  with caplog.at_level("WARNING"):
    absl_logging.warning("OpenCV is not installed. We recommend using OpenCV ...")
    absl_logging.warning("something else")
  assert [record.getMessage() for record in caplog.records] == ["something else"]
