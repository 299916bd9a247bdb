"""Evaluators: the metrics a run reports, named in `config.evals`, several per run.

    config.evals.test = ConfigDict(dict(kind="accuracy", split="test", every=500))
    config.evals.probe = ConfigDict(dict(kind="linear_probe", split="test", every=0))

Each evaluator has a `kind` (a key of `KINDS`), a `split` of `config.dataset` and `every`
(steps between its evaluations; 0: at the end only; every evaluator runs at the end of
training), plus its kind's own `options`. Its metrics are logged as "NAME/metric": the
TensorBoard tags, the metrics.jsonl records of split NAME, the keys of summary.json, and
what `config.best_metric` names.

An evaluator turns what the task's compiled eval step gives over whole splits into
metrics, on the host: for each split it reads, the eval step's `sums` summed over the
split and its per-example `outputs` concatenated (see `cnnjax.train.tasks`). `requires`
names what it reads, so `cnnjax.train.config.validate` refuses a kind the task cannot
feed before anything compiles. A new kind plugs in with `register(kind, EvaluatorClass)`.
"""

import abc
from typing import Any, ClassVar

import ml_collections
import numpy as np

from cnnjax.evaluate import detection as det_metrics
from cnnjax.evaluate import linear_probe
from cnnjax.evaluate import retrieval
from cnnjax.evaluate import segmentation as seg_metrics

# (summed sums, concatenated outputs) of one split, as `Experiment.extractor` returns them.
SplitResult = tuple[dict[str, np.ndarray], dict[str, np.ndarray]]
# The keys every evaluator section has; the rest are its kind's `options`.
COMMON_KEYS = ("kind", "split", "every")


class Evaluator(abc.ABC):
  """One named evaluation; see the module docstring.

  Class attributes:
    requires: names of the eval step's sums and outputs it reads.
    metrics: the metric names it reports (per-class ones, "iou/3", aside).
    options: its kind-specific config keys and their defaults.
  """

  requires: ClassVar[frozenset[str]] = frozenset()
  metrics: ClassVar[tuple[str, ...]] = ()
  options: ClassVar[dict[str, Any]] = {}

  def __init__(self, name: str, section: ml_collections.ConfigDict, task: Any, train_split: str):
    self.name = name
    self.split = section.split
    self.every = int(section.every)
    self.task = task
    self.settings = {
      key: section[key] if key in section else default for key, default in self.options.items()
    }
    if self.settings.get("train_split") == "":
      self.settings["train_split"] = train_split

  def due(self, step: int, last: bool) -> bool:
    """Whether it evaluates after `step`: every `every` steps, and at the end."""
    return last or bool(self.every and step % self.every == 0)

  def splits(self) -> tuple[str, ...]:
    """The splits it reads."""
    return (self.split,)

  @abc.abstractmethod
  def __call__(self, results: dict[str, SplitResult]) -> dict[str, float]:
    """Its metrics from the results of `splits()`, by split."""


class Accuracy(Evaluator):
  """Top-1 (and top-5 with more than 5 classes) accuracy and mean loss of a classifier."""

  requires = frozenset({"count", "loss", "top1"})
  metrics = ("accuracy", "top5_accuracy", "loss", "count")

  def __call__(self, results):
    sums, _ = results[self.split]
    count = max(float(sums["count"]), 1.0)
    metrics = {
      "accuracy": float(sums["top1"]) / count,
      "loss": float(sums["loss"]) / count,
      "count": float(sums["count"]),
    }
    if "top5" in sums:
      metrics["top5_accuracy"] = float(sums["top5"]) / count
    return metrics


class Retrieval(Evaluator):
  """Within one split: leave-one-out kNN accuracy, recall@1/5, pair verification accuracy."""

  requires = frozenset({"embedding", "label"})
  metrics = (
    "knn_accuracy",
    "recall_at_1",
    "recall_at_5",
    "verification_accuracy",
    "verification_threshold",
    "count",
  )
  options = {"k": 1}

  def __call__(self, results):
    _, outputs = results[self.split]
    embeddings, labels = outputs["embedding"], outputs["label"]
    recall = retrieval.recall_at_k(embeddings, labels, (1, 5))
    verification, threshold = retrieval.verification_accuracy(embeddings, labels)
    return {
      "knn_accuracy": retrieval.knn_accuracy(
        embeddings, labels, embeddings, labels, self.settings["k"], exclude_self=True
      ),
      "recall_at_1": recall[1],
      "recall_at_5": recall[5],
      "verification_accuracy": verification,
      "verification_threshold": threshold,
      "count": float(len(labels)),
    }


class KNN(Evaluator):
  """Accuracy of a k-nearest-neighbour vote of `train_split`'s embeddings on `split`'s."""

  requires = frozenset({"embedding", "label"})
  metrics = ("accuracy", "count")
  options = {"k": 5, "train_split": ""}  # "": config.train_split.

  def splits(self):
    return (self.settings["train_split"], self.split)

  def __call__(self, results):
    _, train = results[self.settings["train_split"]]
    _, test = results[self.split]
    return {
      "accuracy": retrieval.knn_accuracy(
        train["embedding"], train["label"], test["embedding"], test["label"], self.settings["k"]
      ),
      "count": float(len(test["label"])),
    }


class LinearProbe(Evaluator):
  """Accuracy on `split` of a linear classifier fit to `train_split`'s frozen embeddings."""

  requires = frozenset({"embedding", "label"})
  metrics = ("accuracy", "count")
  options = {"epochs": 100, "learning_rate": 1e-2, "train_split": ""}

  def splits(self):
    return (self.settings["train_split"], self.split)

  def __call__(self, results):
    _, train = results[self.settings["train_split"]]
    _, test = results[self.split]
    accuracy = linear_probe.linear_probe_accuracy(
      train["embedding"],
      train["label"],
      test["embedding"],
      test["label"],
      self.task.data.num_classes,
      epochs=self.settings["epochs"],
      learning_rate=self.settings["learning_rate"],
    )
    return {"accuracy": accuracy, "count": float(len(test["label"]))}


class MeanIoU(Evaluator):
  """Segmentation: mean and per-class IoU ("iou/<class>"), pixel accuracy, mean pixel loss."""

  requires = frozenset({"confusion", "loss", "pixels"})
  metrics = ("miou", "pixel_accuracy", "loss")

  def __call__(self, results):
    sums, _ = results[self.split]
    confusion, ignore_index = sums["confusion"], self.task.ignore_index
    metrics = {
      "miou": seg_metrics.mean_iou(confusion, ignore_index=ignore_index),
      "pixel_accuracy": seg_metrics.pixel_accuracy(confusion),
      "loss": float(sums["loss"]) / max(float(sums["pixels"]), 1.0),
    }
    for c, iou in enumerate(seg_metrics.per_class_iou(confusion, ignore_index=ignore_index)):
      if iou == iou:  # Classes absent from labels and predictions have no IoU (NaN).
        metrics[f"iou/{c}"] = float(iou)
    return metrics


class MeanAP(Evaluator):
  """Detection: VOC mAP@0.5 ('map50', all-point AP; per class 'ap/<class>') and COCO mAP."""

  requires = frozenset(
    {
      "count",
      "det_boxes",
      "det_scores",
      "det_classes",
      "det_valid",
      "gt_boxes",
      "gt_labels",
      "gt_valid",
    }
  )
  metrics = ("map50", "coco_map", "loss", "count")

  def __call__(self, results):
    sums, outputs = results[self.split]
    metrics = {"count": float(sums["count"])}
    if "loss" in sums:
      metrics["loss"] = float(sums["loss"]) / max(float(sums["count"]), 1.0)
    if not outputs:
      return {**metrics, "map50": 0.0, "coco_map": 0.0}
    detections, truth = [], []
    for i in range(len(outputs["det_valid"])):
      keep = outputs["det_valid"][i]
      detections.append(
        (
          outputs["det_boxes"][i][keep],
          outputs["det_scores"][i][keep],
          outputs["det_classes"][i][keep],
        )
      )
      real = outputs["gt_valid"][i]
      truth.append((outputs["gt_boxes"][i][real], outputs["gt_labels"][i][real]))
    num_classes = self.task.data.num_classes
    voc = det_metrics.mean_average_precision(detections, truth, num_classes)
    metrics["map50"] = voc.pop("map")
    metrics.update(voc)
    metrics["coco_map"] = det_metrics.coco_map(detections, truth, num_classes)
    return metrics


KINDS: dict[str, type[Evaluator]] = {}


def register(kind: str, evaluator_class: type[Evaluator]) -> None:
  """Registers `evaluator_class` as `kind` (the value of an evaluator's `kind` key)."""
  if kind in KINDS:
    raise ValueError(f"evaluator kind {kind!r} is registered twice")
  KINDS[kind] = evaluator_class


for _kind, _class in (
  ("accuracy", Accuracy),
  ("retrieval", Retrieval),
  ("knn", KNN),
  ("linear_probe", LinearProbe),
  ("miou", MeanIoU),
  ("map", MeanAP),
):
  register(_kind, _class)


def kinds_for(produces: frozenset[str]) -> list[str]:
  """The kinds whose `requires` a task producing `produces` meets, sorted."""
  return sorted(kind for kind, cls in KINDS.items() if cls.requires <= produces)


def create(evals: ml_collections.ConfigDict, task: Any, train_split: str) -> list[Evaluator]:
  """The evaluators of `config.evals` (validated), in config order."""
  return [KINDS[section.kind](name, section, task, train_split) for name, section in evals.items()]


def evaluate_all(
  evaluators: list[Evaluator], extract: Any
) -> tuple[dict[str, dict[str, float]], dict[str, SplitResult]]:
  """Runs `evaluators`, reading each split once.

  Args:
    evaluators: those due.
    extract: `extract(split) -> SplitResult` (`Experiment.extractor`).
  Returns:
    ({evaluator name: its metrics}, {split: SplitResult} of every split read).
  """
  results: dict[str, SplitResult] = {}
  metrics: dict[str, dict[str, float]] = {}
  for evaluator in evaluators:
    for split in evaluator.splits():
      if split not in results:
        results[split] = extract(split)
    metrics[evaluator.name] = evaluator(results)
  return metrics, results


def flat(metrics: dict[str, dict[str, float]]) -> dict[str, float]:
  """{"NAME/metric": value} of `evaluate_all`'s metrics: the names summaries and best_metric use."""
  return {
    f"{name}/{key}": value for name, values in metrics.items() for key, value in values.items()
  }
