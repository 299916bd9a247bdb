"""`cnnjax --help`, `cnnjax COMMAND --help`, `--helpfull` and `cnnjax config`."""

import pathlib
import subprocess
import sys

import pytest

from cnnjax import main
from cnnjax.train import config as config_lib
from cnnjax.train import tasks

REPO = pathlib.Path(__file__).resolve().parents[1]
LENET = REPO / "experiments" / "configs" / "lenet_digits.py"


def _output(capsys, argv: list[str]) -> str:
  """What `cnnjax ARGV...` prints, once it has exited with status 0."""
  with pytest.raises(SystemExit) as exit_info:
    main.run_cli(["cnnjax", *argv])
  captured = capsys.readouterr()
  assert exit_info.value.code == 0, captured.err
  return captured.out


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["help"]])
def test_help_lists_the_commands(capsys, argv):
  out = _output(capsys, argv)
  assert out.startswith("usage: cnnjax COMMAND [flags]")
  lines = out.splitlines()
  for name, command in main.COMMANDS.items():
    assert f"  {name:<7}  {command.description}" in lines


@pytest.mark.parametrize(
  "argv",
  [
    ["train", "--help"],
    ["eval", "-h"],
    ["help", "train"],
    ["train", f"--config={LENET}", "--helpshort"],
  ],
)
def test_command_help_lists_its_flags(capsys, argv):
  out = _output(capsys, argv)
  assert out.startswith(f"usage: cnnjax {argv[0] if argv[0] != 'help' else argv[1]} --config=")
  assert "  --config: the experiment: a Python file whose get_config(ARG)" in out
  assert "  --workdir: directory for checkpoints and logs" in out
  assert "`cnnjax config [--config=FILE[:ARG]] [--task=NAME]` lists every" in out
  assert "--jax_platforms:" not in out and "--helpfull` adds jax's own flags" in out


def test_helpfull_adds_jax_flags(capsys):
  out = _output(capsys, ["train", "--helpfull"])
  assert "  --workdir: directory for checkpoints and logs" in out
  assert "  --jax_platforms: Comma-separated list of platform names" in out
  assert "  --[no]jax_debug_nans: " in out


def test_help_of_an_unknown_command_is_an_error(capsys):
  with pytest.raises(SystemExit) as exit_info:
    main.run_cli(["cnnjax", "help", "trian"])
  assert exit_info.value.code == 2
  assert capsys.readouterr().err.strip() == (
    "cnnjax: error: unknown command 'trian'; did you mean 'train'? choose one of train, eval, "
    "config, models, summary, plan, show."
  )


def test_console_script_help_exits_0():
  script = pathlib.Path(sys.executable).parent / "cnnjax"
  result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith("usage: cnnjax COMMAND [flags]") and not result.stderr


def test_the_command_line_module_imports_no_heavy_module():
  # `run_cli` installs the stop handlers first; whatever this import loads delays them.
  code = (
    "import sys, cnnjax.main; print(sorted(m for m in ('absl', 'jax', 'ml_collections') "
    "if m in sys.modules))"
  )
  result = subprocess.run(
    [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO
  )
  assert result.stdout.strip() == "[]", result.stderr


def _assignments(out: str) -> dict[str, tuple[str, str]]:
  """`cnnjax config` output as key -> (value, comment) of each `key = value  # comment`."""
  found = {}
  for line in out.splitlines():
    if not line.startswith("#"):
      key, rest = line.split(" = ", 1)
      value, _, comment = rest.partition("  # ")
      found[key] = (value.strip(), comment)
  return found


def test_config_lists_every_default_with_its_comment(capsys):
  listed = _assignments(_output(capsys, ["config"]))
  assert set(listed) == set(config_lib.keys(config_lib.defaults()))
  # In the order `defaults` sets them, sections together.
  assert list(listed) == [key for key in config_lib.comments("classification") if key in listed]
  assert listed["schedule.learning_rate"] == ("0.1", "")
  assert listed["batch_size"] == ("128", "Global, over all devices and processes.")
  assert listed["schedule.name"] == ("'cosine'", '"constant", "cosine", "step" or "plateau".')
  assert listed["model_kwargs"][0] == "{}"


def test_config_of_a_file_shows_its_values_and_overrides(capsys):
  out = _output(capsys, ["config", f"--config={LENET}:local", "--config.batch_size=32"])
  assert out.splitlines()[0].startswith(f"# {LENET}:local (task 'classification')")
  listed = _assignments(out)
  assert listed["batch_size"][0] == "32" and listed["schedule.learning_rate"][0] == "0.004"
  assert listed["model"] == ("'lenet5'", "A name from `cnnjax models`.")


def test_config_of_a_task_lists_its_sections(capsys):
  listed = _assignments(_output(capsys, ["config", "--task=simclr"]))
  assert listed["simclr.temperature"] == ("0.5", "") and "schedule.learning_rate" in listed


@pytest.mark.parametrize("task", tasks.names())
def test_comments_name_every_key_of_every_task(task):
  # Every key is found in the source of `defaults` or of the task's `config_defaults`.
  assert set(config_lib.keys(config_lib.defaults(task))) <= set(config_lib.comments(task))
  assert config_lib.comments(task)["model"] == "A name from `cnnjax models`."
