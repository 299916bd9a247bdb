"""Figures of what `cnnjax.inspect` computes: the one module of cnnjax.inspect that plots.

Every function takes host arrays (numpy or jax) and returns a matplotlib Figure on the
file-only Agg backend; `save(fig, path)` writes it as PNG (local or remote path) and closes
it. Images to draw are [H, W, C] floats in [0, 1] (C = 1 or 3); heat maps are [H, W] >= 0.
"""

import math
import os
from typing import Any, Sequence

import numpy as np
from etils import epath

GOOD, BAD = "#1a9850", "#d73027"  # Correct and wrong, in titles and frames.
TILE = 1.6  # Inches per image tile.


def _pyplot() -> Any:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def save(fig: Any, path: str | os.PathLike) -> str:
  """Writes `fig` as PNG to `path` (parent folders created) and closes it; returns the path."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open("wb") as f:
    fig.savefig(f, format="png", dpi=100)
  _pyplot().close(fig)
  return os.fspath(path)


def _title(fig: Any, text: str, fontsize: float = 10) -> None:
  """The figure's title, each line wrapped to the figure's width."""
  import textwrap

  width = max(30, int(fig.get_figwidth() * 72 / (0.6 * fontsize)))
  lines = [wrapped for line in text.splitlines() for wrapped in textwrap.wrap(line, width)]
  fig.suptitle("\n".join(lines), fontsize=fontsize)


def _image(ax: Any, image: np.ndarray) -> None:
  image = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
  if image.ndim == 3 and image.shape[-1] == 1:
    ax.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
  else:
    ax.imshow(image, interpolation="nearest")
  ax.set_xticks([])
  ax.set_yticks([])


def _heat(ax: Any, heat: np.ndarray, alpha: float = 0.5, cmap: str = "jet") -> None:
  heat = np.asarray(heat, np.float32)
  top = float(heat.max())
  ax.imshow(
    heat / top if top > 0 else heat,
    cmap=cmap,
    alpha=alpha,
    vmin=0.0,
    vmax=1.0,
    interpolation="bilinear",
  )


def _frame(ax: Any, colour: str, width: float = 3.0) -> None:
  for spine in ax.spines.values():
    spine.set_edgecolor(colour)
    spine.set_linewidth(width)


def _axes_grid(
  plt: Any, rows: int, columns: int, tile: float = TILE, extra_height: float = 0.0
) -> tuple[Any, np.ndarray]:
  fig, axes = plt.subplots(
    rows,
    columns,
    figsize=(tile * columns, tile * rows + extra_height),
    squeeze=False,
    layout="constrained",
  )
  for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
  return fig, axes


def _columns(count: int, most: int = 8) -> tuple[int, int]:
  columns = max(1, min(most, count))
  return math.ceil(count / columns), columns


def filters(tiles: np.ndarray, layer: str, norms: dict[str, np.ndarray], title: str) -> Any:
  """The first conv's kernels as a grid, and each layer's filter norms (median, range).

  Args:
    tiles: [C_out, kh, kw, 3 or 1] in [0, 1] (`cnnjax.inspect.filters.kernel_images`).
    layer: the first conv's name.
    norms: {layer: [C_out]} (`kernel_norms`), in network order.
    title: the figure's title.
  """
  plt = _pyplot()
  tiles = np.asarray(tiles)
  rows, columns = _columns(len(tiles), 12)
  tile = 0.6 if columns > 6 else 0.9
  grid_width = max(3.5, tile * columns)
  norm_height = 0.2 * len(norms) + 1.5
  fig = plt.figure(
    figsize=(grid_width + 6.0, max(tile * rows + 1.2, norm_height, 3.0)), layout="constrained"
  )
  left, right = fig.subfigures(1, 2, width_ratios=[grid_width, 6.0])
  axes = left.subplots(rows, columns, squeeze=False)
  for ax in axes.flat:
    ax.axis("off")
  for ax, kernel in zip(axes.flat, tiles):
    _image(ax, kernel)
  kh, kw = tiles.shape[1:3]
  left.suptitle(
    f"{layer}: {len(tiles)} kernels {kh}x{kw}, "
    f"{'RGB' if tiles.shape[-1] == 3 else 'grey (mean over inputs)'}\n"
    "one scale for all, mid-grey = 0",
    fontsize=9,
  )
  ax = right.subplots()
  names = list(norms)
  values = [np.asarray(norms[name], np.float64) for name in names]
  positions = np.arange(len(names))[::-1]
  ax.hlines(positions, [v.min() for v in values], [v.max() for v in values], color="0.6")
  ax.plot([np.median(v) for v in values], positions, "o", color="C0", markersize=4)
  ax.set_yticks(positions)
  ax.set_yticklabels(
    [f"{n} ({len(v)})" for n, v in zip(names, values)], fontsize=7 if len(names) < 60 else 4
  )
  ax.set_xlabel("L2 norm of each output filter: median (dot) and range", fontsize=8)
  if min(v.min() for v in values) > 0:
    ax.set_xscale("log")
  ax.grid(axis="x", alpha=0.3)
  right.suptitle("kernel norms per layer, in network order (filters)", fontsize=9)
  _title(fig, title, fontsize=10)
  return fig


def features(
  images: np.ndarray, stages: Sequence[tuple[str, np.ndarray, np.ndarray]], title: str
) -> Any:
  """Each image with its strongest channels at each stage.

  Args:
    images: [n, H, W, C] in [0, 1].
    stages: (stage name, channel indices [k], maps [n, h, w, k]) per stage, in order.
    title: the figure's title.
  """
  plt = _pyplot()
  n = len(images)
  columns = 1 + sum(len(channels) for _, channels, _ in stages)
  fig, axes = _axes_grid(plt, n, columns, tile=1.1, extra_height=0.6)
  for row in range(n):
    _image(axes[row, 0], images[row])
    column = 1
    for stage, channels, maps in stages:
      for j, channel in enumerate(channels):
        ax = axes[row, column]
        ax.imshow(np.asarray(maps[row, :, :, j]), cmap="viridis", interpolation="nearest")
        if row == 0:
          ax.set_title(
            f"{stage}\nch {int(channel)}" if j == 0 else f"\nch {int(channel)}", fontsize=7
          )
        column += 1
  axes[0, 0].set_title("input", fontsize=7)
  _title(fig, title, fontsize=10)
  return fig


def receptive_fields(image: np.ndarray, panels: Sequence[dict[str, Any]], title: str) -> Any:
  """One panel per stage: the image, the unit's theoretical field (box) and its ERF (heat).

  Args:
    image: [H, W, C] in [0, 1].
    panels: per stage {"stage", "erf" [H, W], "box" (top, left, bottom, right),
      "centre" (row, col), "size", "jump", "unit"}.
    title: the figure's title.
  """
  plt = _pyplot()
  from matplotlib import patches

  rows, columns = _columns(len(panels), 4)
  fig, axes = _axes_grid(plt, rows, columns, tile=2.6, extra_height=0.6)
  for ax in axes.flat[len(panels) :]:
    ax.axis("off")
  height, width = image.shape[:2]
  for ax, panel in zip(axes.flat, panels):
    _image(ax, image)
    _heat(ax, panel["erf"], alpha=0.6, cmap="inferno")
    top, left, bottom, right = panel["box"]
    ax.add_patch(
      patches.Rectangle(
        (left - 0.5, top - 0.5),
        right - left + 1,
        bottom - top + 1,
        fill=False,
        edgecolor="cyan",
        linewidth=1.5,
      )
    )
    ax.plot(panel["centre"][1], panel["centre"][0], "+", color="cyan", markersize=8)
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    size, jump = panel["size"], panel["jump"]
    ax.set_title(
      f"{panel['stage']} unit {tuple(int(u) for u in panel['unit'])}\n"
      f"RF {_number(size[0])}x{_number(size[1])}, jump {_number(jump[0])}",
      fontsize=8,
    )
  _title(fig, title, fontsize=10)
  return fig


def _number(value: float) -> str:
  return str(int(value)) if float(value).is_integer() else f"{value:.3g}"


def heat_maps(
  images: np.ndarray,
  heats: np.ndarray,
  captions: Sequence[str],
  correct: Sequence[bool],
  title: str,
) -> Any:
  """Each image with its heat map over it (Grad-CAM, saliency) and a caption.

  Args:
    images: [n, H, W, C] in [0, 1].
    heats: [n, H, W] >= 0 (each scaled to its own maximum).
    captions: one line or two per image ("pred circle 0.97 / true circle").
    correct: per image, whether the prediction was right (caption colour).
    title: the figure's title.
  """
  plt = _pyplot()
  rows, columns = _columns(len(images))
  fig, axes = _axes_grid(plt, rows, 2 * columns, extra_height=0.6)
  for i, (image, heat) in enumerate(zip(images, heats)):
    row, column = divmod(i, columns)
    plain, over = axes[row, 2 * column], axes[row, 2 * column + 1]
    _image(plain, image)
    _image(over, image)
    _heat(over, heat)
    plain.set_title(captions[i], fontsize=7, color=GOOD if correct[i] else BAD, loc="left")
  for ax in axes.flat[2 * len(images) :]:
    ax.axis("off")
  _title(fig, title, fontsize=10)
  return fig


def classifications(
  images: np.ndarray,
  probs: np.ndarray,
  classes: np.ndarray,
  labels: np.ndarray,
  names: Sequence[str],
  confusion: np.ndarray,
  title: str,
) -> Any:
  """Each image with its top-k probabilities, then the split's confusion matrix.

  Args:
    images: [n, H, W, C] in [0, 1].
    probs, classes: [n, k] from `cnnjax.inspect.outputs.top_k`.
    labels: [n] true classes.
    names: class names.
    confusion: [K, K] counts, rows true, columns predicted.
    title: the figure's title.
  """
  plt = _pyplot()
  n = len(images)
  rows, columns = _columns(n, 4)
  k = probs.shape[1]
  fig = plt.figure(figsize=(3.2 * columns + 5.5, max(1.5 * rows, 5.0) + 0.6), layout="constrained")
  left, right = fig.subfigures(1, 2, width_ratios=[3.2 * columns, 5.5])
  grid = left.add_gridspec(rows, 2 * columns, width_ratios=[1.0, 1.2] * columns)
  for i in range(n):
    row, column = divmod(i, columns)
    ax = left.add_subplot(grid[row, 2 * column])
    _image(ax, images[i])
    right_class = int(classes[i, 0]) == int(labels[i])
    _frame(ax, GOOD if right_class else BAD)
    ax.set_title(f"true {names[int(labels[i])]}", fontsize=7)
    bars = left.add_subplot(grid[row, 2 * column + 1])
    colours = [GOOD if int(c) == int(labels[i]) else "0.6" for c in classes[i]]
    bars.barh(np.arange(k)[::-1], probs[i], color=colours)
    bars.set_yticks(np.arange(k)[::-1])
    bars.set_yticklabels([names[int(c)] for c in classes[i]], fontsize=6)
    bars.set_xlim(0, 1)
    bars.tick_params(axis="x", labelsize=6)
  left.suptitle(f"top-{k} (green: the true class)", fontsize=9)
  ax = right.subplots()
  confusion = np.asarray(confusion)
  ax.imshow(confusion, cmap="Blues")
  count = len(confusion)
  if count <= 20:
    for i in range(count):
      for j in range(count):
        ax.text(
          j,
          i,
          str(int(confusion[i, j])),
          ha="center",
          va="center",
          fontsize=7,
          color="white" if confusion[i, j] > confusion.max() / 2 else "black",
        )
  if count <= 30:
    ax.set_xticks(range(count))
    ax.set_yticks(range(count))
    ax.set_xticklabels(names[:count], rotation=90, fontsize=7)
    ax.set_yticklabels(names[:count], fontsize=7)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  accuracy = np.trace(confusion) / max(1, confusion.sum())
  ax.set_title(f"confusion over {int(confusion.sum())} images: accuracy {accuracy:.3f}", fontsize=9)
  _title(fig, title, fontsize=10)
  return fig


def _boxes(
  ax: Any,
  boxes: np.ndarray,
  labels: Sequence[str],
  colour: str,
  scores: Sequence[float] | None = None,
) -> None:
  from matplotlib import patches

  for i, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, np.float64)):
    ax.add_patch(
      patches.Rectangle(
        (x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=1.2
      )
    )
    text = labels[i] if scores is None else f"{labels[i]} {scores[i]:.2f}"
    ax.text(
      x1,
      y1 - 1,
      text,
      color=colour,
      fontsize=5,
      va="bottom",
      bbox={"facecolor": "black", "alpha": 0.4, "pad": 0.5, "linewidth": 0},
    )


def detections(
  images: np.ndarray,
  predicted: Sequence[dict[str, np.ndarray]],
  truth: Sequence[dict[str, np.ndarray]],
  names: Sequence[str],
  title: str,
) -> Any:
  """Each image twice: the detections (class, score) and the ground truth boxes.

  Args:
    images: [n, H, W, C] in [0, 1].
    predicted: per image {"boxes" [m, 4] xyxy pixels, "classes" [m], "scores" [m]}.
    truth: per image {"boxes" [g, 4], "classes" [g]}.
    names: class names.
    title: the figure's title.
  """
  plt = _pyplot()
  rows, columns = _columns(len(images), 4)
  fig, axes = _axes_grid(plt, rows, 2 * columns, tile=2.0, extra_height=0.6)
  for i, image in enumerate(images):
    row, column = divmod(i, columns)
    found, real = axes[row, 2 * column], axes[row, 2 * column + 1]
    for ax in (found, real):
      _image(ax, image)
    _boxes(
      found,
      predicted[i]["boxes"],
      [names[int(c)] for c in predicted[i]["classes"]],
      "yellow",
      predicted[i]["scores"],
    )
    _boxes(real, truth[i]["boxes"], [names[int(c)] for c in truth[i]["classes"]], "lime")
    found.set_title("detected", fontsize=7)
    real.set_title(f"truth ({len(truth[i]['boxes'])})", fontsize=7)
  for ax in axes.flat[2 * len(images) :]:
    ax.axis("off")
  _title(fig, title, fontsize=10)
  return fig


def segmentations(
  images: np.ndarray, truth: np.ndarray, predicted: np.ndarray, names: Sequence[str], title: str
) -> Any:
  """Each image, its true mask and the predicted mask over it (0 = background, clear).

  Args:
    images: [n, H, W, C] in [0, 1].
    truth, predicted: int [n, H, W] class per pixel.
    names: names of the mask classes (background first).
    title: the figure's title.
  """
  plt = _pyplot()
  from matplotlib import colors

  count = len(names)
  palette = plt.get_cmap("tab10")
  cmap = colors.ListedColormap([(0, 0, 0, 0)] + [palette(i % 10) for i in range(count - 1)])
  rows, columns = _columns(len(images), 4)
  fig, axes = _axes_grid(plt, rows, 3 * columns, extra_height=0.9)
  for i, image in enumerate(images):
    row, column = divmod(i, columns)
    trio = axes[row, 3 * column : 3 * column + 3]
    for ax in trio:
      _image(ax, image)
    for ax, mask, what in ((trio[1], truth[i], "truth"), (trio[2], predicted[i], "predicted")):
      ax.imshow(
        np.asarray(mask), cmap=cmap, vmin=0, vmax=count - 1, alpha=0.9, interpolation="nearest"
      )
      ax.set_title(what, fontsize=7)
    agree = float(np.mean(np.asarray(truth[i]) == np.asarray(predicted[i])))
    trio[0].set_title(f"pixels right {agree:.2f}", fontsize=7)
  for ax in axes.flat[3 * len(images) :]:
    ax.axis("off")
  handles = [plt.Rectangle((0, 0), 1, 1, color=palette(i % 10)) for i in range(count - 1)]
  fig.legend(
    handles, list(names[1:]), loc="outside lower center", ncol=min(8, count - 1), fontsize=8
  )
  _title(fig, title, fontsize=10)
  return fig


def neighbours(
  queries: np.ndarray,
  query_labels: np.ndarray,
  found: np.ndarray,
  found_labels: np.ndarray,
  similarity: np.ndarray,
  names: Sequence[str],
  title: str,
) -> Any:
  """Each query (first column) with its nearest neighbours, framed green when same-class.

  Args:
    queries: [Q, H, W, C] in [0, 1].
    query_labels: [Q].
    found: [Q, k, H, W, C] in [0, 1], nearest first.
    found_labels: [Q, k].
    similarity: [Q, k] cosine similarities.
    names: class names.
    title: the figure's title.
  """
  plt = _pyplot()
  q, k = found_labels.shape
  fig, axes = _axes_grid(plt, q, k + 1, tile=1.2, extra_height=0.6)
  for i in range(q):
    _image(axes[i, 0], queries[i])
    _frame(axes[i, 0], "black")
    axes[i, 0].set_ylabel(f"query\n{names[int(query_labels[i])]}", fontsize=7)
    for j in range(k):
      ax = axes[i, j + 1]
      _image(ax, found[i, j])
      same = int(found_labels[i, j]) == int(query_labels[i])
      _frame(ax, GOOD if same else BAD)
      ax.set_title(f"{names[int(found_labels[i, j])]} {similarity[i, j]:.2f}", fontsize=6)
  right = float(np.mean(found_labels == query_labels[:, None]))
  _title(
    fig,
    f"{title}\n{right:.0%} of the neighbours share the query's class "
    "(green frame; red: another class)",
    fontsize=9,
  )
  return fig


def augmentations(
  columns: Sequence[tuple[str, np.ndarray]], title: str, boxes: Sequence[np.ndarray] | None = None
) -> Any:
  """Training inputs side by side: e.g. ("stored", images), ("augmented", images).

  Args:
    columns: (heading, images [n, H, W, C] in [0, 1]) per column group, equal n.
    title: the figure's title.
    boxes: per image [m, 4] xyxy boxes to draw on the last column group (detection).
  """
  plt = _pyplot()
  n = len(columns[0][1])
  per_row = max(1, 8 // len(columns))
  rows = math.ceil(n / per_row)
  width = len(columns) * min(per_row, n)
  fig, axes = _axes_grid(plt, rows, width, tile=1.3, extra_height=0.6)
  for i in range(n):
    row, slot = divmod(i, per_row)
    for c, (heading, images) in enumerate(columns):
      ax = axes[row, slot * len(columns) + c]
      _image(ax, images[i])
      if row == 0:
        ax.set_title(heading, fontsize=7)
      if boxes is not None and c == len(columns) - 1:
        _boxes(ax, boxes[i], [""] * len(boxes[i]), "lime")
  for ax in axes.flat:
    if not ax.images:
      ax.axis("off")
  _title(fig, title, fontsize=10)
  return fig
