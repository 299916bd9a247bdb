"""Run outputs: metrics.jsonl appended across runs, summary and curves, locally and on gs://."""

import json

import pytest
import tensorboardX

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
      (1, "train"), (2, "train"), (2, "eval"), (3, "train"), (4, "train"), (4, "eval")]
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
    def __init__(self, logdir):
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
  assert sorted(store) == ["gs://bucket/run/curves.png", "gs://bucket/run/metrics.jsonl",
                           "gs://bucket/run/summary.json"]
  assert len(writer_lib.read_metrics(workdir)) == 6
  assert json.loads(store["gs://bucket/run/summary.json"].getvalue())["step"] == 4
  assert store["gs://bucket/run/curves.png"].getvalue().startswith(PNG_SIGNATURE)
  assert list(tmp_path.iterdir()) == []
