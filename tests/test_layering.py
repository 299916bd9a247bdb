"""Imports point one way: main -> train -> models, losses, ops, inspect, data, evaluate.

Every `import` statement of every module under cnnjax/ is read (function-level ones too:
a lazy import is still a dependency) and checked against the layers below. The checker is
tested on a synthetic package with one wrong-way import, so a checker that finds nothing
cannot pass unnoticed. Importing the library layers must not load TFDS, scikit-image or
matplotlib (checked in a fresh interpreter).
"""

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "cnnjax"

# What each part may import from cnnjax, besides itself. Parts are the first component
# under cnnjax (a subpackage or a top-level module).
BASE = {"errors", "axis", "param_paths", "stopping"}
ALLOWED = {
  "errors": set(),
  "axis": set(),
  "param_paths": set(),
  "stopping": set(),
  "ops": BASE,
  "losses": BASE | {"ops"},
  "models": BASE | {"ops"},
  "evaluate": BASE | {"ops"},
  "data": BASE,
  "inspect": BASE | {"models", "ops"},
  "convert": BASE | {"models"},
  "train": BASE | {"models", "losses", "ops", "inspect", "data", "evaluate", "convert"},
  "main": BASE | {"train", "models", "inspect", "data", "losses", "ops", "evaluate"},
}
# Inside the trainer: a task depends on the task interface and the library, never on the
# loop or the parts that configure it.
TASKS = "cnnjax.train.tasks"
TASKS_MAY_NOT_IMPORT = (
  "cnnjax.train.loop",
  "cnnjax.train.transfer",
  "cnnjax.train.config",
  "cnnjax.train.evaluators",
  "cnnjax.train.checkpoint",
  "cnnjax.train.optim",
  "cnnjax.train.state",
  "cnnjax.train.writer",
  "cnnjax.train.parallel",
)


def _module_name(path: pathlib.Path, root: pathlib.Path) -> str:
  parts = path.relative_to(root.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path, package: str) -> list[tuple[int, str]]:
  """(line, imported module) of every import statement in `path` naming `package`."""
  found = []
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      found += [(node.lineno, alias.name) for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      # `from cnnjax.train import tasks` imports cnnjax.train.tasks.
      found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
  return [(line, name) for line, name in found if name.split(".")[0] == package]


def wrong_way_imports(root: pathlib.Path) -> list[str]:
  """'module:line imports name' for each import the layers above do not allow."""
  package = root.name
  problems = []
  for path in sorted(root.rglob("*.py")):
    module = _module_name(path, root)
    part = module.split(".")[1] if "." in module else None
    if part is None:
      continue
    allowed = ALLOWED.get(part)
    for line, name in _imports(path, package):
      target = name.split(".")[1] if "." in name else None
      if target is None or target == part:
        inside_tasks = module.startswith(f"{package}.train.tasks")
        bad_task_edge = inside_tasks and any(
          name == banned.replace("cnnjax", package, 1)
          or name.startswith(banned.replace("cnnjax", package, 1) + ".")
          for banned in TASKS_MAY_NOT_IMPORT
        )
        if bad_task_edge:
          problems.append(f"{module}:{line} imports {name}")
        continue
      if allowed is None or target not in allowed:
        problems.append(f"{module}:{line} imports {name}")
  return problems


def test_no_module_imports_the_wrong_way():
  assert wrong_way_imports(ROOT) == []


def test_every_part_has_a_layer():
  parts = {
    p.stem if p.is_file() else p.name
    for p in ROOT.iterdir()
    if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()
  }
  assert parts <= set(ALLOWED), f"add {sorted(parts - set(ALLOWED))} to ALLOWED"


def _write(root: pathlib.Path, relative: str, text: str) -> None:
  path = root / relative
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)


def test_the_checker_finds_a_wrong_way_import(tmp_path):
  root = tmp_path / "cnnjax"
  for package in ("", "models/", "losses/", "train/", "train/tasks/"):
    _write(root, f"{package}__init__.py", "")
  _write(root, "losses/fine.py", "from cnnjax.ops import boxes\n")
  _write(root, "models/bad.py", "import jax\n\ndef f():\n  from cnnjax.losses import detection\n")
  _write(root, "train/tasks/bad_task.py", "from cnnjax.train import transfer\n")
  _write(root, "train/tasks/fine_task.py", "from cnnjax.train import tasks\n")
  assert wrong_way_imports(root) == [
    "cnnjax.models.bad:4 imports cnnjax.losses.detection",
    "cnnjax.train.tasks.bad_task:1 imports cnnjax.train.transfer",
  ]


@pytest.mark.parametrize(
  "modules", ["cnnjax.losses", "cnnjax.models", "cnnjax.ops", "cnnjax.train.parallel"]
)
def test_library_layers_load_no_datasets_image_or_plotting_libraries(modules):
  heavy = ("tensorflow_datasets", "skimage", "matplotlib")
  code = f"import sys, {modules}\nprint(','.join(m for m in {heavy!r} if m in sys.modules))"
  loaded = subprocess.run(
    [sys.executable, "-c", code], capture_output=True, text=True, check=True
  ).stdout.strip()
  assert loaded == ""
