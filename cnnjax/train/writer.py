"""Where training reports go: progress on the terminal, TensorBoard, metrics.jsonl, plots.

Every logged step appends one JSON object to `workdir/metrics.jsonl`
({"step": 100, "split": "train", "loss": ..., ...}) and writes the same scalars to
TensorBoard under "<split>/<name>"; the pictures drawn at the end of a run
(`config.show_at_end`) go to its images as "show/<kind>". Only process 0 writes. The
workdir may be remote (`gs://bucket/run`): files go through `etils.epath`, TensorBoard gets
the URI itself.
"""

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
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
CONFIG_FILE = "config.json"
CONFIG_HISTORY_FILE = "config_history.jsonl"
TENSORBOARD_DIR = "tensorboard"
PER_CLASS_FILE = "per_class.png"
EMBEDDINGS_FILE = "embeddings.png"
MAX_COLUMNS = 3  # Panels per row of curves.png: about 1300 px wide at most.
EMA_WEIGHT = 0.9
# At EMA 0.9 the average spans about 10 points; shorter series are drawn raw.
MIN_POINTS_TO_SMOOTH = 50


class MetricsWriter:
  """Progress bar (or periodic lines), TensorBoard and JSON-lines output for one run."""

  def __init__(
    self,
    workdir: str | os.PathLike,
    num_steps: int,
    initial_step: int = 0,
    progress: bool | None = None,
  ):
    self.workdir = checkpoint.workdir_path(workdir)
    self.num_steps = num_steps
    self.active = jax.process_index() == 0
    self.progress = sys.stderr.isatty() if progress is None else progress
    self._bar = None
    self._tensorboard = None
    if not self.active:
      return
    from tensorboardX import SummaryWriter  # Imported here: only process 0 writes events.

    # A resumed run repeats the steps after its checkpoint: TensorBoard drops the earlier
    # events of those steps instead of drawing both.
    self._tensorboard = SummaryWriter(
      os.fspath(self.workdir / TENSORBOARD_DIR),
      purge_step=initial_step + 1 if initial_step else None,
    )
    self._jsonl = _JsonLines(self.workdir / METRICS_FILE)
    if self.progress:
      self._bar = tqdm.tqdm(
        total=num_steps, initial=initial_step, dynamic_ncols=True, unit="step", file=sys.stderr
      )

  def write(self, step: int, split: str, metrics: dict[str, Any]) -> None:
    """Records scalar `metrics` of `split` ("train", or an evaluator's name) at `step`.

    Train metrics carry "steps_per_second" (of training alone), from which the ETA follows.
    """
    scalars = {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0}
    if not self.active:
      return
    self._jsonl.append(json.dumps({"step": step, "split": split, **scalars}))
    for name, value in scalars.items():
      self._tensorboard.add_scalar(f"{split}/{name}", value, step)
    self._tensorboard.flush()
    self._report(step, split, scalars)

  def _report(self, step: int, split: str, scalars: dict[str, float]) -> None:
    if self._bar is not None and split == "train":
      # The postfix first: `update` redraws, so the bar shows this interval, not the last.
      self._bar.set_postfix(
        loss=f"{scalars['loss']:.4f}", steps_s=f"{scalars['steps_per_second']:.1f}", refresh=False
      )
      self._bar.update(step - self._bar.n)
      return
    shown = ", ".join(
      f"{k}={v:.4g}"
      for k, v in scalars.items()
      if k in ("loss", "accuracy", "steps_per_second", "learning_rate") or split != "train"
    )
    line = f"[{split}] step {step}/{self.num_steps}: {shown}"
    if split == "train" and scalars.get("steps_per_second", 0) > 0:
      eta = (self.num_steps - step) / scalars["steps_per_second"]
      line += f", eta {eta:.0f}s"
    self.message(line)

  def write_image(self, step: int, tag: str, png: str | os.PathLike) -> None:
    """Puts the picture of the PNG file `png` into TensorBoard's Images tab as `tag` at `step`."""
    if not self.active:
      return
    import PIL.Image

    with epath.Path(png).open("rb") as f:
      image = np.asarray(PIL.Image.open(f).convert("RGB"))  # [H, W, 3] uint8.
    self._tensorboard.add_image(tag, image, step, dataformats="HWC")
    self._tensorboard.flush()

  def message(self, text: str) -> None:
    """Prints a line (above the progress bar when there is one) on process 0."""
    if not self.active:
      return
    if self._bar is not None:
      self._bar.write(text, file=sys.stderr)
    else:
      print(text, file=sys.stderr, flush=True)
    logging.info(text)

  def write_config(
    self, config: Mapping[str, Any], commit: str | None = None, step: int = 0
  ) -> None:
    """Records how the run was made in TensorBoard (process 0 only).

    The values, "commit" first, go to the text tag "config" as a markdown table (the Text
    tab) and to this run's hparams (the HParams tab, with the run's scalars as metrics).

    Args:
      config: flat config, dotted keys -> JSON-able values (`ConfigDict.to_dict` flattened).
      commit: the code's git commit (`git_commit()`); None shows as "unknown".
      step: the step the run starts from, so a resumed run's record stands apart.
    """
    if not self.active:
      return
    from tensorboardX import summary  # Imported here, as SummaryWriter is.

    values = {
      "commit": commit or "unknown",
      **{k: _hparam_value(v) for k, v in sorted(config.items())},
    }
    self._tensorboard.add_text("config", _markdown_table(values), step)
    # add_hparams would write to a new sub-run; the session-start summary alone puts the
    # values on this run, and TensorBoard then offers this run's scalars as its metrics.
    _, session_start, _ = summary.hparams(values, {})
    self._tensorboard.file_writer.add_summary(session_start, step)
    self._tensorboard.flush()

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
    self._remote = checkpoint.is_remote(path)
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


def truncate_metrics(workdir: str | os.PathLike, step: int) -> None:
  """Drops the records after `step` from metrics.jsonl (process 0 only).

  A run resumed from the checkpoint of `step` trains the later steps again; their old
  records describe training that the checkpoint no longer holds.
  """
  path = checkpoint.workdir_path(workdir) / METRICS_FILE
  if jax.process_index() != 0 or not path.exists():
    return
  lines = [line for line in path.read_text().splitlines() if line.strip()]
  kept = [line for line in lines if json.loads(line)["step"] <= step]
  if len(kept) < len(lines):
    checkpoint.write_atomically(path, "".join(line + "\n" for line in kept))


def set_aside_metrics(workdir: str | os.PathLike, aside: epath.Path) -> None:
  """Moves metrics.jsonl, summary.json and the plots beside checkpoints set aside in `aside`."""
  directory = checkpoint.workdir_path(workdir)
  if jax.process_index() != 0:
    return
  for name in (METRICS_FILE, SUMMARY_FILE, CURVES_FILE, EMBEDDINGS_FILE):
    if (directory / name).exists():
      (directory / name).rename(aside / name)


def read_summary(workdir: str | os.PathLike) -> dict[str, Any] | None:
  """The final metrics of summary.json, or None when the run has not finished."""
  path = checkpoint.workdir_path(workdir) / SUMMARY_FILE
  return json.loads(path.read_text()) if path.exists() else None


def eval_record(workdir: str | os.PathLike, step: int) -> dict[str, float] | None:
  """The evaluators' metrics logged at `step` in metrics.jsonl, as {"NAME/metric": value}.

  None when no evaluator logged at `step`.
  """
  if not (checkpoint.workdir_path(workdir) / METRICS_FILE).exists():
    return None
  found = {}
  for record in read_metrics(workdir):
    if record["split"] != "train" and record["step"] == step:
      found.update(
        {f"{record['split']}/{k}": v for k, v in record.items() if k not in ("step", "split")}
      )
  return found or None


def write_summary(workdir: str | os.PathLike, metrics: dict[str, Any]) -> None:
  """`workdir/summary.json` with the final metrics (process 0 only)."""
  if jax.process_index() == 0:
    checkpoint.write_atomically(
      checkpoint.workdir_path(workdir) / SUMMARY_FILE, json.dumps(metrics, indent=2, sort_keys=True)
    )


def git_commit(path: str | os.PathLike | None = None) -> str | None:
  """The commit of the git checkout that holds directory `path` (default: the cnnjax package).

  Ends in "-dirty" when tracked files of the checkout differ from it. Never raises.

  Args:
    path: a directory of the checkout.
  Returns:
    The 40-digit hash (plus "-dirty"); None when `path` has no tracked files in a git
    checkout (an installed package), or git is missing, fails or takes over 5 s.
  """
  directory = (
    os.fspath(path)
    if path is not None
    else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  )

  def git(*args: str) -> str:
    return subprocess.run(
      ["git", "-C", directory, *args], capture_output=True, text=True, timeout=5, check=True
    ).stdout.strip()

  try:
    # A package installed inside some other checkout (a venv in a repo) is not its code.
    if not git("ls-files", "--", "."):
      return None
    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
  except (OSError, subprocess.SubprocessError, UnicodeDecodeError):
    return None
  return commit + ("-dirty" if dirty else "")


def _hparam_value(value: Any) -> bool | int | float | str:
  """`value` as an hparam: booleans, numbers and strings as they are, anything else as JSON."""
  if isinstance(value, (bool, int, float, str)):
    return value
  return json.dumps(value, default=str)


def _markdown_table(values: Mapping[str, Any]) -> str:
  """A key | value markdown table; a "|" in a value is escaped to stay in its cell."""
  rows = ["| key | value |", "|---|---|"]
  for key, value in values.items():
    cell = str(value).replace("|", r"\|")
    rows.append(f"| {key} | {cell} |")
  return "\n".join(rows) + "\n"


def _pyplot() -> Any:
  """matplotlib.pyplot on the file-only Agg backend (runs have no display)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def _grid(plt: Any, count: int, width: float, height: float) -> tuple[Any, list[Any]]:
  """A figure of `count` panels of `width` x `height` inches, MAX_COLUMNS to a row."""
  columns = max(1, min(MAX_COLUMNS, count))
  rows = max(1, math.ceil(count / columns))
  fig, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows), squeeze=False)
  for ax in axes.flat[count:]:
    fig.delaxes(ax)
  return fig, list(axes.flat[:count])


def _save_figure(fig: Any, path: epath.Path) -> None:
  """Saves a matplotlib figure as PNG through epath (matplotlib only writes local files)."""
  with path.open("wb") as f:
    fig.savefig(f, format="png", dpi=100)


def _is_per_class(name: str) -> bool:
  """Whether metric `name` is one class's value, "<metric>/<class>" ("ap/3", "iou/0")."""
  return "/" in name


def _series(
  records: Sequence[Mapping[str, Any]], split: str, name: str
) -> tuple[np.ndarray, np.ndarray]:
  """Steps and values of `name` in `split` by step; a step logged again (resumed) keeps its last."""
  by_step = {r["step"]: r[name] for r in records if r["split"] == split and name in r}
  steps = sorted(by_step)
  return np.asarray(steps), np.asarray([by_step[s] for s in steps], np.float64)


def _ema(values: np.ndarray, weight: float) -> np.ndarray:
  """Exponential moving average, debiased (as TensorBoard's smoothing) to start at values[0]."""
  smoothed, average = np.empty(len(values)), 0.0
  for i, value in enumerate(values):
    average = weight * average + (1 - weight) * value
    smoothed[i] = average / (1 - weight ** (i + 1))
  return smoothed


# Not learning curves: throughput and the eval set's size (both stay in TensorBoard).
_NOT_CURVES = ("step", "split", "steps_per_second", "count")


def _curve_panels(
  records: Sequence[Mapping[str, Any]],
) -> list[tuple[str, dict[str, tuple[np.ndarray, np.ndarray]]]]:
  """(metric, {split: (steps, values)}) for each panel.

  Loss comes first, then the evaluated metrics, then train-only ones, learning rate last.
  A train series equal to one already shown (main_loss is loss without auxiliary heads) is
  left out. Eval series are all kept: a few equal points (0 mAP early on) are a coincidence.
  """
  names = {k for r in records for k in r if k not in _NOT_CURVES and not _is_per_class(k)}
  evaluated = {k for r in records if r["split"] != "train" for k in r}
  splits = ["train", *dict.fromkeys(r["split"] for r in records if r["split"] != "train")]
  panels, shown = [], []
  # In panel order, so that of two equal series the one shown is the earlier panel's.
  for name in sorted(
    names, key=lambda n: (n != "loss", n not in evaluated, n == "learning_rate", n)
  ):
    series = {}
    for split in splits:
      steps, values = _series(records, split, name)
      if not len(steps):
        continue
      if split == "train":
        if any(np.array_equal(steps, s) and np.array_equal(values, v) for s, v in shown):
          continue
        shown.append((steps, values))
      series[split] = (steps, values)
    if series:
      panels.append((name, series))
  return panels


def _draw_curve(
  ax: Any, name: str, split: str, steps: np.ndarray, values: np.ndarray, colour: str
) -> None:
  """One split's series of metric `name` on `ax`, labelled with its last value."""
  last = f"last {values[-1]:.4g}"
  if split != "train":
    # Evaluations are few (often one or two): markers keep each one visible.
    ax.plot(steps, values, "o-", color=colour, markersize=5, label=f"{split} ({last})")
  elif len(values) >= MIN_POINTS_TO_SMOOTH and name != "learning_rate":
    # Single-batch train values are noisy; the raw ones stay, faint, under the average.
    ax.plot(steps, values, color="C0", alpha=0.25, linewidth=0.8, label="train, raw")
    ax.plot(
      steps, _ema(values, EMA_WEIGHT), color="C0", label=f"train, EMA {EMA_WEIGHT} ({last} raw)"
    )
  else:
    ax.plot(
      steps,
      values,
      color="C0",
      marker="." if len(values) < MIN_POINTS_TO_SMOOTH else None,
      label=f"train ({last})",
    )


def plot_curves(workdir: str | os.PathLike, notes: Mapping[str, str] | None = None) -> str:
  """Every metric of metrics.jsonl against the step, as `workdir/curves.png`.

  One panel per metric, MAX_COLUMNS to a row, with its train series and each evaluator's
  (by its name) together.
  Per-class metrics ("ap/<class>") are left to `plot_per_class`.

  Args:
    workdir: the run's directory, holding metrics.jsonl.
    notes: text for a series' panel title, by "<split>/<metric>" (TensorBoard's tag), such
      as {"train/loss": "label smoothing 0.1"}; tags without a series are ignored.
  Returns:
    The path of curves.png.
  """
  plt = _pyplot()
  notes = notes or {}
  panels = _curve_panels(read_metrics(workdir))
  fig, axes = _grid(plt, len(panels), 4.3, 3.2)
  evaluators = list(
    dict.fromkeys(split for _, series in panels for split in series if split != "train")
  )
  for ax, (name, series) in zip(axes, panels):
    for split, (steps, values) in series.items():
      colour = "C0" if split == "train" else f"C{1 + evaluators.index(split)}"
      _draw_curve(ax, name, split, steps, values, colour)
    noted = [f"{split}: {notes[tag]}" for split in series if (tag := f"{split}/{name}") in notes]
    ax.set_title("\n".join([name, *noted]), fontsize=10)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  path = checkpoint.workdir_path(workdir) / CURVES_FILE
  _save_figure(fig, path)
  plt.close(fig)
  return os.fspath(path)


def _class_order(label: str) -> tuple[int, int, str]:
  """Sort key of class labels: ids by number, then any names."""
  return (0, int(label), "") if label.isdigit() else (1, 0, label)


def plot_per_class(
  workdir: str | os.PathLike, class_names: Sequence[str] | None = None
) -> str | None:
  """Bars of each class's value at the last evaluation with per-class metrics, as per_class.png.

  One panel per metric ("ap" from "ap/<class>" of detection, "iou" from "iou/<class>" of
  segmentation), with the mean over the classes shown dashed.

  Args:
    workdir: the run's directory, holding metrics.jsonl.
    class_names: names of classes 0, 1, ...; without them the bars carry the class ids.
  Returns:
    The path of per_class.png; None, writing nothing, when no evaluation has per-class metrics.
  """
  last = next(
    (
      r
      for r in reversed(read_metrics(workdir))
      if r["split"] != "train" and any(map(_is_per_class, r))
    ),
    None,
  )
  if last is None:
    return None
  groups: dict[str, dict[str, float]] = {}
  for key, value in last.items():
    if _is_per_class(key):
      metric, label = key.split("/", 1)
      groups.setdefault(metric, {})[label] = value
  plt = _pyplot()
  fig, axes = _grid(plt, len(groups), 4.5, 1.2 + 0.3 * max(map(len, groups.values())))
  for ax, (metric, by_class) in zip(axes, sorted(groups.items())):
    labels = sorted(by_class, key=_class_order)
    values = [by_class[c] for c in labels]
    names = [
      class_names[int(c)] if class_names and c.isdigit() and int(c) < len(class_names) else c
      for c in labels
    ]
    bars = ax.barh(range(len(labels)), values, color="C0")
    ax.set_yticks(range(len(labels)), names)
    ax.invert_yaxis()  # Class 0 on top.
    ax.bar_label(bars, fmt="%.3f", fontsize=8, padding=2)
    mean = float(np.mean(values))
    ax.axvline(mean, color="C1", linestyle="--", zorder=0)
    ax.set_xlim(0, 1.15 * max(1.0, *values))  # Room for the value labels.
    ax.set_title(
      f"{last['split']} {metric} per class, step {last['step']}\nmean {mean:.3f} (dashed)",
      fontsize=10,
    )
    ax.grid(axis="x", alpha=0.3)
  fig.tight_layout()
  path = checkpoint.workdir_path(workdir) / PER_CLASS_FILE
  _save_figure(fig, path)
  plt.close(fig)
  return os.fspath(path)


def plot_embeddings(workdir: str | os.PathLike, embeddings: np.ndarray, labels: np.ndarray) -> str:
  """A 2-D PCA projection of embeddings [N, D] coloured by labels [N], as embeddings.png."""
  from sklearn.decomposition import PCA

  plt = _pyplot()

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


def record_config(directory: epath.Path, config: dict[str, Any], step: int) -> list[str]:
  """Writes `config` (nested dicts) flat to config.json; a resumed run's changes are appended
  to config_history.jsonl as {"step", "time", "changed": {key: [old, new]}}.

  Returns:
    A message naming the changed keys, or nothing (and nothing on processes other than 0).
  """
  if jax.process_index() != 0:
    return []
  current = json.loads(json.dumps(flat_config(config), default=str))
  path = directory / CONFIG_FILE
  previous = json.loads(path.read_text()) if path.exists() else None
  messages = []
  if previous is not None:
    changed = {
      key: [previous.get(key), current.get(key)]
      for key in sorted(set(previous) | set(current))
      if previous.get(key) != current.get(key)
    }
    if changed:
      with (directory / CONFIG_HISTORY_FILE).open("a") as f:
        f.write(
          json.dumps(
            {
              "step": step,
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "changed": changed,
            }
          )
          + "\n"
        )
      shown = ", ".join(f"{key} {old} -> {new}" for key, (old, new) in changed.items())
      messages.append(f"config changed at step {step}: {shown} (recorded in {CONFIG_HISTORY_FILE})")
  checkpoint.write_atomically(path, json.dumps(current, indent=2, sort_keys=True))
  return messages


def flat_config(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  """{"schedule": {"name": "cosine"}} -> {"schedule.name": "cosine"}."""
  flat: dict[str, Any] = {}
  for key, value in tree.items():
    if isinstance(value, dict) and value:
      flat.update(flat_config(value, f"{prefix}{key}."))
    else:
      flat[prefix + key] = value
  return flat
