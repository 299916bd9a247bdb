"""Where training reports go: progress on the terminal, TensorBoard, metrics.jsonl, plots.

Every logged step appends one JSON object to `workdir/metrics.jsonl`
({"step": 100, "split": "train", "loss": ..., ...}) and writes the same scalars to
TensorBoard under "<split>/<name>". Only process 0 writes. The workdir may be remote
(`gs://bucket/run`): files go through `etils.epath`, TensorBoard gets the URI itself.
"""

import json
import os
import sys
import time
from typing import Any

import jax
import numpy as np
import tqdm
from absl import logging
from etils import epath

from cnnjax.train import checkpoint

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CURVES_FILE = "curves.png"
EMBEDDINGS_FILE = "embeddings.png"


class MetricsWriter:
  """Progress bar (or periodic lines), TensorBoard and JSON-lines output for one run."""

  def __init__(self, workdir: str | os.PathLike, num_steps: int, initial_step: int = 0,
               progress: bool | None = None):
    self.workdir = checkpoint.workdir_path(workdir)
    self.num_steps = num_steps
    self.active = jax.process_index() == 0
    self.progress = sys.stderr.isatty() if progress is None else progress
    self._bar = None
    self._tensorboard = None
    self._last_time = time.perf_counter()
    self._last_step = initial_step
    if not self.active:
      return
    from tensorboardX import SummaryWriter  # Imported here: only process 0 writes events.
    self._tensorboard = SummaryWriter(os.fspath(self.workdir / "tensorboard"))
    self._jsonl = _JsonLines(self.workdir / METRICS_FILE)
    if self.progress:
      self._bar = tqdm.tqdm(total=num_steps, initial=initial_step, dynamic_ncols=True,
                            unit="step", file=sys.stderr)

  def write(self, step: int, split: str, metrics: dict[str, Any]) -> None:
    """Records scalar `metrics` of `split` ("train" or "eval") at `step`."""
    scalars = {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0}
    now = time.perf_counter()
    if split == "train":
      scalars["steps_per_second"] = (step - self._last_step) / max(now - self._last_time, 1e-9)
      self._last_time, self._last_step = now, step
    if not self.active:
      return
    self._jsonl.append(json.dumps({"step": step, "split": split, **scalars}))
    for name, value in scalars.items():
      self._tensorboard.add_scalar(f"{split}/{name}", value, step)
    self._tensorboard.flush()
    self._report(step, split, scalars)

  def _report(self, step: int, split: str, scalars: dict[str, float]) -> None:
    if self._bar is not None and split == "train":
      self._bar.update(step - self._bar.n)
      self._bar.set_postfix(loss=f"{scalars['loss']:.4f}",
                            steps_s=f"{scalars['steps_per_second']:.1f}", refresh=False)
      return
    shown = ", ".join(f"{k}={v:.4g}" for k, v in scalars.items()
                      if k in ("loss", "accuracy", "steps_per_second", "learning_rate")
                      or split != "train")
    line = f"[{split}] step {step}/{self.num_steps}: {shown}"
    if split == "train" and scalars.get("steps_per_second"):
      eta = (self.num_steps - step) / scalars["steps_per_second"]
      line += f", eta {eta:.0f}s"
    self.message(line)

  def message(self, text: str) -> None:
    """Prints a line (above the progress bar when there is one) on process 0."""
    if not self.active:
      return
    if self._bar is not None:
      self._bar.write(text, file=sys.stderr)
    else:
      print(text, file=sys.stderr, flush=True)
    logging.info(text)

  def close(self) -> None:
    """Closes the progress bar and the output files."""
    if not self.active:
      return
    if self._bar is not None:
      self._bar.close()
    self._tensorboard.close()
    self._jsonl.close()


class _JsonLines:
  """An append-only file of JSON lines, flushed after every line.

  Object stores (gs://, s3://) cannot append to a file, so there the whole file is
  rewritten with each line; metrics files are small.
  """

  def __init__(self, path: epath.Path):
    self._path = path
    self._remote = "://" in os.fspath(path)
    if self._remote:
      self._text = path.read_text() if path.exists() else ""
    else:
      self._file = path.open("a")

  def append(self, line: str) -> None:
    if self._remote:
      self._text += line + "\n"
      self._path.write_text(self._text)
    else:
      self._file.write(line + "\n")
      self._file.flush()

  def close(self) -> None:
    if not self._remote:
      self._file.close()


def read_metrics(workdir: str | os.PathLike) -> list[dict[str, Any]]:
  """All records of `workdir/metrics.jsonl`, in order."""
  text = (checkpoint.workdir_path(workdir) / METRICS_FILE).read_text()
  return [json.loads(line) for line in text.splitlines() if line.strip()]


def write_summary(workdir: str | os.PathLike, metrics: dict[str, Any]) -> None:
  """`workdir/summary.json` with the final metrics (process 0 only)."""
  if jax.process_index() == 0:
    (checkpoint.workdir_path(workdir) / SUMMARY_FILE).write_text(
        json.dumps(metrics, indent=2, sort_keys=True))


def _save_figure(fig: Any, path: epath.Path) -> None:
  """Saves a matplotlib figure as PNG through epath (matplotlib only writes local files)."""
  with path.open("wb") as f:
    fig.savefig(f, format="png", dpi=100)


def plot_curves(workdir: str | os.PathLike) -> str:
  """Training loss and every eval metric against the step, as `workdir/curves.png`."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  records = read_metrics(workdir)
  train = [r for r in records if r["split"] == "train"]
  evals = [r for r in records if r["split"] == "eval"]
  eval_names = sorted({k for r in evals for k in r if k not in ("step", "split", "count")})
  panels = [("train", "loss")] + [("train", "learning_rate")] + [("eval", n) for n in eval_names]
  fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
  for ax, (split, name) in zip(axes[0], panels):
    rows = [r for r in (train if split == "train" else evals) if name in r]
    ax.plot([r["step"] for r in rows], [r[name] for r in rows], marker="." if split == "eval"
            else None)
    ax.set_title(f"{split} {name}")
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  fig.tight_layout()
  path = checkpoint.workdir_path(workdir) / CURVES_FILE
  _save_figure(fig, path)
  plt.close(fig)
  return os.fspath(path)


def plot_embeddings(workdir: str | os.PathLike, embeddings: np.ndarray,
                    labels: np.ndarray) -> str:
  """A 2-D PCA projection of embeddings [N, D] coloured by labels [N], as embeddings.png."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from sklearn.decomposition import PCA

  points = PCA(n_components=2).fit_transform(np.asarray(embeddings, np.float64))
  fig, ax = plt.subplots(figsize=(5, 5))
  scatter = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10", s=6)
  ax.legend(*scatter.legend_elements(), fontsize=7, loc="best", title="class")
  ax.set_title("test embeddings (PCA)")
  fig.tight_layout()
  path = checkpoint.workdir_path(workdir) / EMBEDDINGS_FILE
  _save_figure(fig, path)
  plt.close(fig)
  return os.fspath(path)
