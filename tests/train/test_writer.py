"""Run outputs: metrics.jsonl appended across runs, summary, plots and the run's config."""

import json
import os
import shutil
import struct
import subprocess

import numpy as np
import pytest
import tensorboardX
from tensorboardX.proto import event_pb2, plugin_hparams_pb2

import cnnjax
import fake_gcs
from cnnjax.train import writer as writer_lib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _two_runs(workdir: str) -> None:
  """A run of 2 steps, then a resumed one of 2 more, each logging train and eval."""
  for start in (0, 2):
    writer = writer_lib.MetricsWriter(workdir, 4, start, progress=False)
    for step in (start + 1, start + 2):
      writer.write(step, "train", {"loss": 1.0 / step, "learning_rate": 0.1})
    writer.write(start + 2, "eval", {"accuracy": 0.5 + start / 10, "count": 10})
    writer.close()


def test_local_workdir_gets_metrics_summary_and_curves(tmp_path):
  _two_runs(str(tmp_path))
  records = writer_lib.read_metrics(str(tmp_path))
  assert [(r["step"], r["split"]) for r in records] == [
    (1, "train"),
    (2, "train"),
    (2, "eval"),
    (3, "train"),
    (4, "train"),
    (4, "eval"),
  ]
  assert records[-1]["accuracy"] == pytest.approx(0.7)
  writer_lib.write_summary(str(tmp_path), {"accuracy": 0.7, "step": 4})
  assert json.loads((tmp_path / "summary.json").read_text()) == {"accuracy": 0.7, "step": 4}
  assert writer_lib.plot_curves(str(tmp_path)) == str(tmp_path / "curves.png")
  assert (tmp_path / "curves.png").read_bytes().startswith(PNG_SIGNATURE)
  assert any((tmp_path / "tensorboard").iterdir())


def test_remote_workdir_is_written_remotely_not_locally(tmp_path, monkeypatch):
  store = fake_gcs.install(monkeypatch)
  logdirs = []

  class SummaryWriter:
    def __init__(self, logdir, **options):
      del options
      logdirs.append(logdir)

    def add_scalar(self, *args):
      del args

    def flush(self):
      pass

    def close(self):
      pass

  monkeypatch.setattr(tensorboardX, "SummaryWriter", SummaryWriter)
  monkeypatch.chdir(tmp_path)
  workdir = "gs://bucket/run"
  _two_runs(workdir)
  writer_lib.write_summary(workdir, {"accuracy": 0.7, "step": 4})
  assert writer_lib.plot_curves(workdir) == "gs://bucket/run/curves.png"

  assert logdirs == ["gs://bucket/run/tensorboard"] * 2
  assert sorted(store) == [
    "gs://bucket/run/curves.png",
    "gs://bucket/run/metrics.jsonl",
    "gs://bucket/run/summary.json",
  ]
  assert len(writer_lib.read_metrics(workdir)) == 6
  assert json.loads(store["gs://bucket/run/summary.json"].getvalue())["step"] == 4
  assert store["gs://bucket/run/curves.png"].getvalue().startswith(PNG_SIGNATURE)
  assert list(tmp_path.iterdir()) == []


def _write_records(workdir, records) -> None:
  (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture
def figures(monkeypatch):
  """The figures the plot functions save, by file name, inspected after they are written."""
  saved = {}
  save = writer_lib._save_figure

  def capture(fig, path):
    saved[path.name] = fig
    save(fig, path)

  monkeypatch.setattr(writer_lib, "_save_figure", capture)
  return saved


def _png_size(path) -> tuple[int, int]:
  """(width, height) in pixels from a PNG's header."""
  return struct.unpack(">II", path.read_bytes()[16:24])


def _legend(ax) -> list[str]:
  return [text.get_text() for text in ax.get_legend().get_texts()]


def test_curves_grid_pairs_train_with_eval_and_leaves_per_class_out(tmp_path, figures):
  rng = np.random.default_rng(0)
  records = []
  for step in range(10, 610, 10):
    loss = 2.0 / step**0.5 + rng.uniform(0, 0.3)
    records.append(
      {
        "step": step,
        "split": "train",
        "loss": loss,
        "main_loss": loss,
        "accuracy": rng.uniform(0.5, 1.0),
        "grad_norm": rng.uniform(0, 2),
        "learning_rate": 0.1 * (1 - step / 1000),
        "steps_per_second": 30.0,
      }
    )
    if step % 300 == 0:
      records.append(
        {
          "step": step,
          "split": "eval",
          "loss": 0.5,
          "accuracy": 0.8,
          "top5_accuracy": 0.95,
          "count": 100.0,
          "ap/0": 0.5,
          "ap/1": 0.6,
        }
      )
  _write_records(tmp_path, records)

  path = writer_lib.plot_curves(str(tmp_path), notes={"train/loss": "label smoothing 0.1"})
  assert path == str(tmp_path / "curves.png")
  axes = figures["curves.png"].axes
  # main_loss equals loss here (no auxiliary heads); throughput, eval size and per-class
  # APs are not curves.
  assert [ax.get_title() for ax in axes] == [
    "loss\ntrain: label smoothing 0.1",
    "accuracy",
    "top5_accuracy",
    "grad_norm",
    "learning_rate",
  ]
  assert len({round(ax.get_position().x0, 3) for ax in axes}) == writer_lib.MAX_COLUMNS
  assert len({round(ax.get_position().y0, 3) for ax in axes}) == 2
  width, height = _png_size(tmp_path / "curves.png")
  assert abs(width - 1290) <= 1 and abs(height - 640) <= 1  # Older matplotlib rounds down.

  loss = axes[0]
  assert _legend(loss)[0] == "train, raw"
  assert _legend(loss)[1].startswith("train, EMA 0.9 (last ")
  assert _legend(loss)[2] == "eval (last 0.5)"
  raw, smoothed, evals = loss.get_lines()
  assert smoothed.get_ydata()[0] == pytest.approx(raw.get_ydata()[0])  # Debiased start.
  assert np.std(np.diff(smoothed.get_ydata())) < np.std(np.diff(raw.get_ydata())) / 3
  assert evals.get_marker() == "o"
  assert list(evals.get_xdata()) == [300, 600]
  assert _legend(axes[1])[-1] == "eval (last 0.8)"
  # A schedule is not noise: drawn as it is.
  assert _legend(axes[4]) == ["train (last 0.04)"]


def test_curves_of_a_run_with_one_evaluation(tmp_path, figures):
  _write_records(
    tmp_path,
    [
      {"step": 1, "split": "train", "loss": 2.0},
      {"step": 2, "split": "train", "loss": 1.5},
      {"step": 2, "split": "eval", "loss": 1.4, "accuracy": 0.3, "count": 10.0},
    ],
  )
  writer_lib.plot_curves(str(tmp_path))
  loss, accuracy = figures["curves.png"].axes
  assert (loss.get_title(), accuracy.get_title()) == ("loss", "accuracy")
  (point,) = accuracy.get_lines()
  assert (list(point.get_xdata()), point.get_marker()) == ([2], "o")
  assert loss.get_lines()[0].get_marker() == "."  # Two train points: each one visible.
  assert _png_size(tmp_path / "curves.png") == (860, 320)


def test_curves_keep_the_newest_value_of_a_step_logged_again(tmp_path, figures):
  # A run preempted after logging step 3 resumes from its checkpoint at step 2.
  _write_records(
    tmp_path,
    [
      {"step": s, "split": "train", "loss": v}
      for s, v in ((1, 3.0), (2, 2.0), (3, 1.0), (3, 1.5), (4, 1.2))
    ],
  )
  writer_lib.plot_curves(str(tmp_path))
  (line,) = figures["curves.png"].axes[0].get_lines()
  assert list(line.get_xdata()) == [1, 2, 3, 4]
  assert list(line.get_ydata()) == [3.0, 2.0, 1.5, 1.2]


@pytest.mark.parametrize("metric", ["ap", "iou"])
def test_per_class_bars_of_the_last_evaluation(tmp_path, figures, metric):
  _write_records(
    tmp_path,
    [
      {"step": 5, "split": "eval", "map50": 0.15, f"{metric}/0": 0.1, f"{metric}/1": 0.2},
      {"step": 9, "split": "train", "loss": 1.0},
      {
        "step": 10,
        "split": "eval",
        "map50": 0.7,
        f"{metric}/10": 0.9,
        f"{metric}/0": 0.5,
        f"{metric}/2": 0.7,
      },
    ],
  )
  names = [f"class{i}" for i in range(11)]
  path = writer_lib.plot_per_class(str(tmp_path), class_names=names)
  assert path == str(tmp_path / "per_class.png")
  assert (tmp_path / "per_class.png").read_bytes().startswith(PNG_SIGNATURE)
  (ax,) = figures["per_class.png"].axes
  assert ax.get_title() == f"eval {metric} per class, step 10\nmean 0.700 (dashed)"
  assert [t.get_text() for t in ax.get_yticklabels()] == ["class0", "class2", "class10"]
  assert [bar.get_width() for bar in ax.patches] == [0.5, 0.7, 0.9]


def test_per_class_without_class_names_or_per_class_metrics(tmp_path, figures):
  _write_records(tmp_path, [{"step": 1, "split": "eval", "accuracy": 0.5, "count": 10.0}])
  assert writer_lib.plot_per_class(str(tmp_path)) is None
  assert not (tmp_path / "per_class.png").exists()
  _write_records(tmp_path, [{"step": 1, "split": "eval", "iou/0": 0.5, "iou/1": 0.25}])
  writer_lib.plot_per_class(str(tmp_path))
  (ax,) = figures["per_class.png"].axes
  assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "1"]


def _events(logdir) -> list[event_pb2.Event]:
  """Every event in the TFRecord files of `logdir` (length, its CRC, data, data CRC)."""
  events = []
  for path in sorted(logdir.glob("events.out.tfevents.*")):
    data, offset = path.read_bytes(), 0
    while offset < len(data):
      (length,) = struct.unpack("<Q", data[offset : offset + 8])
      events.append(event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length]))
      offset += length + 16
  return events


def test_write_config_puts_text_and_hparams_on_the_run(tmp_path):
  writer = writer_lib.MetricsWriter(str(tmp_path), 10, 4, progress=False)
  writer.write_config(
    {
      "schedule.learning_rate": 0.004,
      "model": "lenet5",
      "input.size": 32,
      "input.flip": True,
      "model_kwargs": {"widths": [6, 16]},
      "note": "a|b",
    },
    commit="abc123-dirty",
    step=4,
  )
  writer.write(5, "train", {"loss": 1.0})
  writer.close()

  logdir = tmp_path / "tensorboard"
  assert [p for p in logdir.iterdir() if p.is_dir()] == []  # No hparams sub-run.
  values = {v.tag: (event.step, v) for event in _events(logdir) for v in event.summary.value}
  step, text = values["config/text_summary"]
  assert (step, text.metadata.plugin_data.plugin_name) == (4, "text")
  table = text.tensor.string_val[0].decode()
  assert table.splitlines() == [
    "| key | value |",
    "|---|---|",
    "| commit | abc123-dirty |",
    "| input.flip | True |",
    "| input.size | 32 |",
    "| model | lenet5 |",
    '| model_kwargs | {"widths": [6, 16]} |',
    r"| note | a\|b |",
    "| schedule.learning_rate | 0.004 |",
  ]

  step, start = values["_hparams_/session_start_info"]
  assert (step, start.metadata.plugin_data.plugin_name) == (4, "hparams")
  hparams = plugin_hparams_pb2.HParamsPluginData.FromString(
    start.metadata.plugin_data.content
  ).session_start_info.hparams
  assert hparams["commit"].string_value == "abc123-dirty"
  assert hparams["schedule.learning_rate"].number_value == 0.004
  assert hparams["input.size"].number_value == 32
  assert hparams["input.flip"].bool_value is True
  assert hparams["model_kwargs"].string_value == '{"widths": [6, 16]}'
  assert "train/loss" in values  # The scalars TensorBoard offers as the run's metrics.


def test_write_config_without_commit_and_off_process_0(tmp_path, monkeypatch):
  writer = writer_lib.MetricsWriter(str(tmp_path / "a"), 10, progress=False)
  writer.write_config({"model": "lenet5"}, commit=None)
  writer.close()
  values = {v.tag: v for e in _events(tmp_path / "a" / "tensorboard") for v in e.summary.value}
  assert "| commit | unknown |" in values["config/text_summary"].tensor.string_val[0].decode()

  monkeypatch.setattr(writer_lib.jax, "process_index", lambda: 1)
  writer = writer_lib.MetricsWriter(str(tmp_path / "b"), 10, progress=False)
  writer.write_config({"model": "lenet5"}, commit="abc")
  writer.close()
  assert not (tmp_path / "b").exists()


needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(directory, *args) -> str:
  return subprocess.run(
    ["git", "-C", str(directory), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
    check=True,
    capture_output=True,
    text=True,
  ).stdout.strip()


@needs_git
def test_git_commit_of_a_checkout_clean_and_dirty(tmp_path):
  _git(tmp_path, "init", "-q")
  package = tmp_path / "pkg"
  package.mkdir()
  (package / "code.py").write_text("x = 1\n")
  (tmp_path / ".gitignore").write_text("venv/\n")
  _git(tmp_path, "add", ".")
  _git(tmp_path, "commit", "-q", "-m", "first")
  head = _git(tmp_path, "rev-parse", "HEAD")
  assert writer_lib.git_commit(package) == head
  (package / "new.py").write_text("")  # Untracked files do not change the code that runs.
  assert writer_lib.git_commit(package) == head
  (package / "code.py").write_text("x = 2\n")
  assert writer_lib.git_commit(package) == head + "-dirty"
  installed = tmp_path / "venv" / "pkg"  # A copy installed in an ignored venv.
  installed.mkdir(parents=True)
  assert writer_lib.git_commit(installed) is None


def test_git_commit_is_none_outside_a_checkout_or_without_git(tmp_path, monkeypatch):
  assert writer_lib.git_commit(tmp_path) is None
  assert writer_lib.git_commit(tmp_path / "missing") is None
  monkeypatch.setenv("PATH", str(tmp_path))
  assert writer_lib.git_commit() is None


def test_git_commit_defaults_to_the_cnnjax_package():
  assert writer_lib.git_commit() == writer_lib.git_commit(os.path.dirname(cnnjax.__file__))
