"""`cnnjax show KIND --workdir=D`: pictures of a trained model, one PNG per call.

  cnnjax show filters --workdir=workdirs/lenet_digits  # -> workdirs/lenet_digits/show/filters.png
  cnnjax show gradcam --workdir=D --stage=layer3 --n=8 --out=gradcam.png

The command line (`cnnjax.main`) restores the newest checkpoint of the workdir into a `Run`
(the trainer's task, the variables, a reader of the dataset's splits) and calls `render`,
which computes arrays with the rest of `cnnjax.inspect` and draws them with
`cnnjax.inspect.plots`. This module does not import the trainer: a Run is all it sees.

Kinds, and the tasks they work for (`kinds_for`):

  filters          every task: the first convolution's kernels as images (RGB or grey)
                   and each layer's filter norms.
  features         every task: for n test images, each stage's strongest channels (the
                   spatial network's maps, `cnnjax.inspect.network`; at most 6 stages,
                   spread from first to deepest, or --stage).
  receptive-field  every task: for each stage (or --stage), one unit's theoretical field
                   (size and jump from `cnnjax.inspect.summary`) drawn as a box on a test
                   image, and its effective field (Luo et al. 2016) over the n images, as
                   heat. The unit: the middle one, or the one centred nearest --unit=ROW,COL
                   (input pixels).
  gradcam          classifiers: Grad-CAM of the predicted class at --stage (default: the
                   deepest), over each image, with predicted and true class.
  saliency         classifiers: SmoothGrad of the predicted class, likewise.
  predictions      classifiers: top-5 per image and the confusion matrix of the split;
                   detectors: the highest-scoring detections (class, score; as many as
                   the image has objects) beside the ground truth boxes;
                   segmentation: true and predicted masks over each image.
  neighbours       metric learning and SimCLR: n queries of the split, each with its k
                   nearest neighbours in the split (cosine), same-class ones framed green.
  augment          every task: n training images as stored and as the model sees them
                   after the task's on-device augmentation (SimCLR: both views).
"""

import dataclasses
import os
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.axis import AXIS
from cnnjax.errors import UsageError
from cnnjax.inspect import filters as filters_lib
from cnnjax.inspect import gradients
from cnnjax.inspect import network as network_lib
from cnnjax.inspect import outputs
from cnnjax.inspect import plots
from cnnjax.inspect import receptive_field as rf_lib

KINDS = (
  "filters",
  "features",
  "receptive-field",
  "gradcam",
  "saliency",
  "predictions",
  "neighbours",
  "augment",
)
CLASSIFIER, EMBEDDING, SEGMENTATION, DETECTION, OTHER = (
  "classifier",
  "embedding",
  "segmentation",
  "detection",
  "other",
)
_EVERY_TASK = ("filters", "features", "receptive-field", "augment")
_KINDS_FOR = {
  CLASSIFIER: (
    "filters",
    "features",
    "receptive-field",
    "gradcam",
    "saliency",
    "predictions",
    "augment",
  ),
  EMBEDDING: ("filters", "features", "receptive-field", "neighbours", "augment"),
  SEGMENTATION: ("filters", "features", "receptive-field", "predictions", "augment"),
  DETECTION: ("filters", "features", "receptive-field", "predictions", "augment"),
  OTHER: _EVERY_TASK,
}
# What the kinds that not every task draws need.
NEEDS = {
  "gradcam": "a classifier (task classification)",
  "saliency": "a classifier (task classification)",
  "predictions": "a classifier, detector or segmentation model",
  "neighbours": "embeddings (task metric_learning or simclr)",
}
MAX_STAGES = 6  # Stages drawn by `features` and `receptive-field` without --stage.
FEATURE_CHANNELS = 3  # Strongest channels drawn per stage.


@dataclasses.dataclass
class Run:
  """A trained experiment, as `render` needs it.

  Attributes:
    task: the trainer's task (`cnnjax.train.tasks.Task`): its `model`, `config`,
      `input_shape`, `preprocess(batch, rng, train)`, `eval_step(variables, batch)`.
    variables: {"params", "batch_stats"} of the checkpoint, on the host.
    step: the checkpoint's step.
    batches: (split, batch size) -> an iterator over the split's host batches in order,
      uint8 images and the dataset's features, plus 'valid' [B] (the last one padded).
    class_names: name of each image class.
    mean, std: per channel, the normalisation of the model's inputs.
    workdir: where pictures go by default (workdir/show/KIND.png).
    compiled: the compiled task functions, filled as `render` needs them.
  """

  task: Any
  variables: dict[str, Any]
  step: int
  batches: Callable[[str, int], Iterator[dict[str, np.ndarray]]]
  class_names: tuple[str, ...]
  mean: tuple[float, ...]
  std: tuple[float, ...]
  workdir: str
  compiled: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)

  @property
  def model(self) -> Any:
    return self.task.model

  @property
  def config(self) -> Any:
    return self.task.config

  @property
  def title(self) -> str:
    config = self.config
    return f"{config.model} on {config.dataset} ({config.task}), step {self.step}"


def family(task: Any) -> str:
  """What kind of model a task trains: CLASSIFIER, EMBEDDING, SEGMENTATION, DETECTION, OTHER."""
  produces = set(getattr(task, "produces", ()))
  if "embedding" in produces:
    return EMBEDDING
  if "det_boxes" in produces:
    return DETECTION
  if "confusion" in produces:
    return SEGMENTATION
  if "top1" in produces:
    return CLASSIFIER
  return OTHER


def kinds_for(task: Any) -> tuple[str, ...]:
  """The kinds `render` draws for `task`."""
  return _KINDS_FOR[family(task)]


def check_kind(kind: str) -> None:
  """UsageError naming the kinds unless `kind` is one."""
  if kind not in KINDS:
    import difflib

    close = difflib.get_close_matches(kind, KINDS, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UsageError(f"unknown show kind {kind!r}; {hint}choose one of {', '.join(KINDS)}.")


def default_path(workdir: str, kind: str) -> str:
  return os.path.join(workdir, "show", f"{kind}.png")


def render(
  kind: str,
  run: Run,
  out: str | None = None,
  n: int = 16,
  split: str = "test",
  stage: str | None = None,
  unit: Sequence[float] | None = None,
  k: int = 5,
  seed: int = 0,
) -> str:
  """Draws `kind` for `run` into the PNG `out` (default workdir/show/KIND.png).

  Args:
    kind: one of KINDS, one that `kinds_for(run.task)` allows.
    run: the restored experiment.
    out: the PNG's path.
    n: images (queries for neighbours) to draw.
    split: the split they come from (augment: always config.train_split).
    stage: the feature map of gradcam, features and receptive-field.
    unit: (row, column) in input pixels: receptive-field's unit is the one centred
      nearest it.
    k: neighbours per query.
    seed: of augment's and SmoothGrad's randomness.

  Returns:
    The path written.

  Raises:
    UsageError: a kind the task has no picture of, a stage the model lacks, n < 1.
  """
  check_kind(kind)
  allowed = kinds_for(run.task)
  if kind not in allowed:
    raise UsageError(
      f"show {kind} needs {NEEDS[kind]}; {run.workdir} holds a "
      f"{run.config.task} run ({run.config.model}): show "
      f"{', '.join(allowed)} work there."
    )
  if n < 1:
    raise UsageError(f"--n={n}: show at least one image.")
  if k < 1:
    raise UsageError(f"--k={k}: show at least one neighbour.")
  draw = _DRAW[kind]
  fig = draw(run, n=n, split=split, stage=stage, unit=unit, k=k, seed=seed)
  return plots.save(fig, out or default_path(run.workdir, kind))


# --- Batches ---------------------------------------------------------------------------------


def _first(run: Run, split: str, n: int) -> dict[str, np.ndarray]:
  """The first n valid examples of `split` (fewer if it is smaller), as one host batch."""
  batch = next(iter(run.batches(split, n)))
  valid = np.asarray(batch["valid"], bool)
  if not valid.any():
    raise UsageError(f"split {split!r} of {run.config.dataset} is empty; choose another --split.")
  return {name: np.asarray(value)[valid] for name, value in batch.items()}


def _per_device(run: Run, what: str, function: Callable[..., Any], *args: Any) -> Any:
  """`function(*args)` (its last argument a batch) run as one device of the trainer's step.

  Task functions are written per device, in the pmap style; here the device axis has one
  member, so collectives over AXIS and per-example keys behave as on one device. Compiled
  once per `what` and run.
  """
  if what not in run.compiled:

    def call(fixed, batch):
      return jax.vmap(lambda b: function(*fixed, b), axis_name=AXIS)(
        jax.tree.map(lambda x: x[None], batch)
      )

    run.compiled[what] = jax.jit(call)
  *fixed, batch = args
  return jax.tree.map(lambda x: np.asarray(x[0]), run.compiled[what](tuple(fixed), batch))


def _prepared(
  run: Run, batch: dict[str, np.ndarray], train: bool = False, seed: int = 0
) -> dict[str, np.ndarray]:
  """The batch as the model sees it (`task.preprocess`)."""
  return _per_device(
    run,
    f"preprocess/{train}",
    lambda rng, b: run.task.preprocess(b, rng, train),
    jax.random.key(seed),
    batch,
  )


def _display(run: Run, images: np.ndarray) -> np.ndarray:
  """Model inputs [n, H, W, C] back in [0, 1]."""
  mean = np.asarray(run.mean, np.float32)
  std = np.asarray(run.std, np.float32)
  return np.clip(np.asarray(images, np.float32) * std + mean, 0.0, 1.0)


def _names(run: Run, count: int) -> list[str]:
  names = list(run.class_names)
  return names + [str(i) for i in range(len(names), count)]


def _network(run: Run) -> network_lib.Network:
  return network_lib.network(run.model)


def _stages(run: Run, stage: str | None) -> tuple[str, ...]:
  """--stage, checked, or at most MAX_STAGES of the network's maps from first to deepest."""
  net = _network(run)
  shape = run.task.input_shape
  if stage is not None:
    return net.check(stage, shape)
  names = net.names(shape)
  if len(names) <= MAX_STAGES:
    return names
  picks = np.linspace(0, len(names) - 1, MAX_STAGES).round().astype(int)
  return tuple(names[i] for i in sorted(set(picks)))


# --- Kinds -----------------------------------------------------------------------------------


def _draw_filters(run: Run, **_) -> Any:
  params = run.variables["params"]
  order = filters_lib.layer_order(run.model, run.task.input_shape)
  name, kernel = filters_lib.first_conv(params, order)
  tiles = np.asarray(filters_lib.kernel_images(kernel))
  norms = {layer: np.asarray(v) for layer, v in filters_lib.kernel_norms(params, order).items()}
  kh, kw, c_in, c_out = kernel.shape
  return plots.filters(
    tiles, name, norms, f"{run.title}: first convolution {name} ({kh}x{kw}x{c_in} -> {c_out})"
  )


def _draw_features(run: Run, n: int, split: str, stage: str | None, **_) -> Any:
  batch = _prepared(run, _first(run, split, n))
  stages = _stages(run, stage)
  net = _network(run)
  maps = jax.jit(lambda v, x: net.maps(v, x, stages))(run.variables, batch["image"])
  drawn = []
  for name in stages:
    channels, chosen = outputs.strongest_channels(maps[name], FEATURE_CHANNELS)
    drawn.append((name, np.asarray(channels), np.asarray(chosen)))
  return plots.features(
    _display(run, batch["image"]),
    drawn,
    f"{run.title}: strongest channels (mean |activation|) of each stage, {split} images",
  )


def _draw_receptive_field(
  run: Run, n: int, split: str, stage: str | None, unit: Sequence[float] | None, **_
) -> Any:
  batch = _prepared(run, _first(run, split, n))
  images = batch["image"]
  shape = images.shape[1:]
  stages = _stages(run, stage)
  fields = rf_lib.stage_fields(run.model, shape, stages)
  panels = []
  for name, field in fields.items():
    chosen = rf_lib.centre_unit(field) if unit is None else rf_lib.unit_at(field, unit, shape)
    erf = gradients.effective_receptive_field(
      run.model, run.variables, jnp.asarray(images), name, chosen
    )
    panels.append(
      {
        "stage": name,
        "erf": np.asarray(erf).mean(0),
        "unit": chosen,
        "box": rf_lib.unit_box(field, chosen, shape),
        "centre": rf_lib.unit_centre(field, chosen, shape),
        "size": field.size,
        "jump": field.jump,
      }
    )
  return plots.receptive_fields(
    _display(run, images[0]),
    panels,
    f"{run.title}\ntheoretical field of one unit (box) and its effective field (heat: "
    f"|d unit / d input| over {len(images)} {split} images)",
  )


def _classified(
  run: Run, n: int, split: str
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
  """(prepared batch, top-1 probabilities [n], predicted classes [n])."""
  batch = _prepared(run, _first(run, split, n))
  logits = gradients.logits(run.model, run.variables, jnp.asarray(batch["image"]))
  probs, classes = outputs.top_k(logits, 1)
  return batch, np.asarray(probs[:, 0]), np.asarray(classes[:, 0])


def _captions(
  run: Run, batch: dict[str, np.ndarray], probs: np.ndarray, classes: np.ndarray
) -> tuple[list[str], list[bool]]:
  names = _names(run, run.task.data.num_classes)
  labels = np.asarray(batch["label"])
  captions = [
    f"pred {names[int(c)]} {p:.2f}\ntrue {names[int(t)]}" for c, p, t in zip(classes, probs, labels)
  ]
  return captions, list(classes == labels)


def _draw_gradcam(run: Run, n: int, split: str, stage: str | None, **_) -> Any:
  net = _network(run)
  shape = run.task.input_shape
  stage = net.check(stage, shape)[0] if stage else net.names(shape)[-1]
  batch, probs, classes = _classified(run, n, split)
  images = jnp.asarray(batch["image"])
  cams = gradients.grad_cam(run.model, run.variables, images, jnp.asarray(classes), stage)
  heats = gradients.upsample(cams, images.shape[1:3])
  captions, correct = _captions(run, batch, probs, classes)
  return plots.heat_maps(
    _display(run, images),
    np.asarray(heats),
    captions,
    correct,
    f"{run.title}: Grad-CAM of the predicted class at {stage} "
    f"({cams.shape[1]}x{cams.shape[2]}), {split} images",
  )


def _draw_saliency(run: Run, n: int, split: str, seed: int, **_) -> Any:
  batch, probs, classes = _classified(run, n, split)
  images = jnp.asarray(batch["image"])
  heats = gradients.smoothgrad(
    run.model, run.variables, images, jnp.asarray(classes), jax.random.key(seed)
  )
  captions, correct = _captions(run, batch, probs, classes)
  return plots.heat_maps(
    _display(run, images),
    np.asarray(heats),
    captions,
    correct,
    f"{run.title}: SmoothGrad of the predicted class (16 samples, noise 15%), {split} images",
  )


def _draw_predictions(run: Run, n: int, split: str, **_) -> Any:
  kind = family(run.task)
  if kind == DETECTION:
    return _draw_detections(run, n, split)
  if kind == SEGMENTATION:
    return _draw_segmentations(run, n, split)
  return _draw_classifications(run, n, split)


def _draw_classifications(run: Run, n: int, split: str) -> Any:
  count = run.task.data.num_classes
  names = _names(run, count)
  batch = _prepared(run, _first(run, split, n))
  logits = gradients.logits(run.model, run.variables, jnp.asarray(batch["image"]))
  probs, classes = outputs.top_k(logits, 5)
  confusion = np.zeros((count, count), np.int64)

  def split_confusion(variables, batch):
    prepared = run.task.preprocess(batch, jax.random.key(0), False)
    scores = run.model.apply(variables, prepared["image"], train=False)
    return outputs.confusion_matrix(batch["label"], jnp.argmax(scores, -1), count, batch["valid"])

  for whole in run.batches(split, max(64, n)):
    confusion += np.asarray(_per_device(run, "confusion", split_confusion, run.variables, whole))
  return plots.classifications(
    _display(run, batch["image"]),
    np.asarray(probs),
    np.asarray(classes),
    batch["label"],
    names,
    confusion,
    f"{run.title}, {split} split",
  )


def _draw_detections(run: Run, n: int, split: str) -> Any:
  names = _names(run, run.task.data.num_classes)
  batch = _prepared(run, _first(run, split, n))
  _, found = _per_device(run, "eval_step", run.task.eval_step, run.variables, batch)
  predicted, truth = [], []
  for i in range(len(batch["image"])):
    real = np.asarray(found["gt_valid"][i], bool)
    truth.append({"boxes": found["gt_boxes"][i][real], "classes": found["gt_labels"][i][real]})
    # As many detections as the image has objects, the highest-scoring first.
    valid = np.nonzero(np.asarray(found["det_valid"][i], bool))[0]
    order = valid[np.argsort(-np.asarray(found["det_scores"][i])[valid], kind="stable")]
    keep = order[: max(1, int(real.sum()))]
    predicted.append(
      {
        "boxes": found["det_boxes"][i][keep],
        "classes": found["det_classes"][i][keep],
        "scores": found["det_scores"][i][keep],
      }
    )
  threshold = run.config.detection.score_threshold
  return plots.detections(
    _display(run, batch["image"]),
    predicted,
    truth,
    names,
    f"{run.title}: the highest-scoring detections (after NMS, score >= "
    f"{threshold}), as many as the image has objects, and the truth; "
    f"{split} images",
  )


def _draw_segmentations(run: Run, n: int, split: str) -> Any:
  batch = _prepared(run, _first(run, split, n))
  images = jnp.asarray(batch["image"])
  scores = jax.jit(lambda v, x: run.model.apply(v, x, train=False))(run.variables, images)
  predicted = np.asarray(jnp.argmax(scores, -1))
  h, w = predicted.shape[1:3]
  top, left = (images.shape[1] - h) // 2, (images.shape[2] - w) // 2  # Valid-padded U-Nets.
  shown = _display(run, images[:, top : top + h, left : left + w])
  truth = np.asarray(batch["mask"])[:, top : top + h, left : left + w]
  count = scores.shape[-1]
  names = ["background", *_names(run, count - 1)][:count]
  return plots.segmentations(
    shown, truth, predicted, names, f"{run.title}: true and predicted masks, {split} images"
  )


def _draw_neighbours(run: Run, n: int, split: str, k: int, **_) -> Any:
  embeddings, labels, raw = [], [], []
  for batch in run.batches(split, 64):
    prepared = _prepared(run, batch)
    _, found = _per_device(run, "eval_step", run.task.eval_step, run.variables, prepared)
    valid = np.asarray(batch["valid"], bool)
    embeddings.append(np.asarray(found["embedding"])[valid])
    labels.append(np.asarray(found["label"])[valid])
    raw.append(np.asarray(batch["image"])[valid])
  embeddings, labels, raw = (np.concatenate(a) for a in (embeddings, labels, raw))
  if len(labels) < 2:
    raise UsageError(f"split {split!r} has {len(labels)} example; neighbours need two or more.")
  queries = np.arange(min(n, len(labels)))
  index, similarity = outputs.nearest_neighbours(
    embeddings[queries], embeddings, k, jnp.asarray(queries)
  )
  index = np.asarray(index)
  images = raw.astype(np.float32) / 255.0
  names = _names(run, run.task.data.num_classes)
  space = "backbone features" if run.config.task == "simclr" else "embeddings"
  return plots.neighbours(
    images[queries],
    labels[queries],
    images[index],
    labels[index],
    np.asarray(similarity),
    names,
    f"{run.title}: {len(queries)} {split} queries and their "
    f"{index.shape[1]} nearest of {len(labels)} (cosine of the {space})",
  )


def _draw_augment(run: Run, n: int, seed: int, **_) -> Any:
  split = run.config.train_split
  batch = _first(run, split, n)
  stored = _display(run, _prepared(run, batch)["image"])
  augmented = _prepared(run, batch, train=True, seed=seed)
  recipe = run.config.input.augment
  if "view1" in augmented:
    columns = [
      ("stored", stored),
      ("view 1", _display(run, augmented["view1"])),
      ("view 2", _display(run, augmented["view2"])),
    ]
    what = "SimCLR's two views"
  else:
    columns = [("stored", stored), ("augmented", _display(run, augmented["image"]))]
    flips = [
      section
      for section in ("segmentation", "detection")
      if section in run.config and run.config[section].get("random_flip")
    ]
    what = f"input.augment={recipe!r}" + (", random flips" if flips else "")
  boxes = None
  if "boxes" in augmented and "box_valid" in augmented:
    boxes = [
      np.asarray(b)[np.asarray(v, bool)] for b, v in zip(augmented["boxes"], augmented["box_valid"])
    ]
  return plots.augmentations(
    columns,
    f"{run.title}: {split} images before and after the "
    f"on-device augmentation ({what}), seed {seed}",
    boxes,
  )


_DRAW = {
  "filters": _draw_filters,
  "features": _draw_features,
  "receptive-field": _draw_receptive_field,
  "gradcam": _draw_gradcam,
  "saliency": _draw_saliency,
  "predictions": _draw_predictions,
  "neighbours": _draw_neighbours,
  "augment": _draw_augment,
}
