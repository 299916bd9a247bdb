"""The task interface: what a kind of experiment adds to the generic training loop.

A task owns everything that depends on the kind of experiment: its model, on-device
preprocessing, loss, and the predictions its eval step makes. The loop in
`cnnjax.train.loop` owns everything else (devices, optimizer, checkpoints, logging), and
the evaluators of `config.evals` (`cnnjax.train.evaluators`) turn the eval step's results
into metrics. New tasks plug in by subclassing `Task` and calling `register("name",
TaskClass)`, in a module that `cnnjax.train.tasks` imports at the bottom of this file or
in the user's own code; a config selects one with `config.task = "name"`. A task imports
neither the loop nor the trainer's other parts.

Contract. All `Task` methods that take arrays are traced inside the jit-compiled,
per-device step, in the pmap style: `batch` holds this device's shard, and collectives
over the named axis `cnnjax.axis.AXIS` ("batch") are available. The loop itself averages
the loss gradients and the returned train metrics with `lax.pmean`, and sums the eval
`sums` with `lax.psum`; a task only adds collectives its loss needs (e.g. an `all_gather`
of embeddings, or BatchNorm with `axis_name=AXIS`).

    task = tasks.create(config, data_info)
    variables = task.init_variables(rng)             # {"params": ..., "batch_stats": ...}
    batch = task.preprocess(batch, rng, train=True)  # uint8 images -> model inputs
    loss, (metrics, new_batch_stats) = task.loss_fn(params, batch_stats, batch, rng, train=True)
    sums, outputs = task.eval_step(variables, batch)  # batch has a "valid" mask [B]

Shapes: `batch["image"]` arrives as uint8 [B, H, W, C] and `batch["label"]` int32 [B]
(plus any features the dataset has, such as masks or boxes); `preprocess` returns
float images [B, h, w, c] in `config.dtype`. Train metrics are scalars. Eval `sums`
are scalars summed over the valid examples of the shard (e.g. correct predictions,
confusion matrices), `outputs` are per-example arrays [B, ...] that the loop gathers
to the host, drops where `valid` is false, and concatenates over the split (e.g.
embeddings for kNN, detections for mAP). `produces` names them all, and `default_evals`
says which evaluators a config of this task starts with.

Gradient caching (`config.micro_batch_size`, `cnnjax.train.gradients.cached`): a task
whose loss couples the examples of the global batch through their embeddings offers it by
splitting `loss_fn` into `embed(params, batch_stats, batch, rng, train) -> (embeddings
[n, ...], batch_stats)`, applied chunk by chunk, and `embedding_loss(embeddings, batch) ->
(loss, metrics)` on the whole shard; `loss_fn` is then their composition.

`loss_fn`'s `train` is the model's mode: True but in a linear probe, where the train step
runs the model as evaluation does (BatchNorm on running statistics, no dropout; see
`cnnjax.train.freezing`). `loss_fn` is called in training only.

Randomness: the `rng` given to `preprocess` and `loss_fn` is the same on every device
(it depends on the step only). Derive per-example keys with `example_keys(rng, n)`
(keyed by the example's position in the global batch, so augmentations do not depend on
the number of devices) and per-device keys (dropout) with `device_key(rng)`.

Optional hooks: `config_defaults()` adds the task's own config sections (so that
`cnnjax.train.config.defaults(task)` knows them and the CLI can override them),
`choices()` the allowed values of its keys (checked by `validate`), `state_keys` the
config keys besides the generic ones that identify its train state (a workdir trained
with other values is refused), `sampler_kwargs_for(num_devices)` asks the input pipeline
for e.g. P x K batches, `has_embeddings` plus outputs "embedding" and "label" draw a 2-D
projection at the end, and `apply(variables, *inputs, train=..., rng=...)` runs the model
with the dropout key and mutable batch_stats handled.
"""

import abc
import difflib
from typing import Any, Callable, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from cnnjax.axis import AXIS
from cnnjax.errors import UsageError

PyTree = Any
Metrics = dict[str, jax.Array]
Batch = dict[str, jax.Array]


class DataInfo:
  """What a task needs to know about its dataset.

  Attributes:
    num_classes: number of labels.
    image_shape: stored (H, W, C) of the images.
    splits: split name -> number of examples.
    features: names of the features in a batch.
  """

  def __init__(
    self,
    num_classes: int,
    image_shape: tuple[int, int, int],
    splits: dict[str, int],
    features: tuple[str, ...] = ("image", "label"),
  ):
    self.num_classes = num_classes
    self.image_shape = tuple(image_shape)
    self.splits = dict(splits)
    self.features = tuple(features)


class Task(abc.ABC):
  """Base class of every task; see the module docstring for the contract.

  Attributes:
    config: the experiment's ConfigDict.
    data: its dataset's `DataInfo`.
    model: the Flax module, built with `axis_name=AXIS` when `config.global_bn`.
    input_shape: (h, w, c) of the preprocessed images the model sees.
  """

  # Whether the eval outputs hold embeddings worth projecting to 2-D at the end of a run.
  has_embeddings: ClassVar[bool] = False
  # Names of the eval step's sums and outputs, which evaluators may require.
  produces: ClassVar[frozenset[str]] = frozenset()
  # Config keys of the task's own sections that identify its train state.
  state_keys: ClassVar[tuple[str, ...]] = ()

  @classmethod
  def config_defaults(cls) -> dict[str, ml_collections.ConfigDict]:
    """The task's own config sections with their defaults, e.g. {"metric": ...}."""
    return {}

  @classmethod
  def caches_gradients(cls) -> bool:
    """Whether the task offers gradient caching (defines `embed` and `embedding_loss`)."""
    return hasattr(cls, "embed") and hasattr(cls, "embedding_loss")

  @classmethod
  def choices(cls) -> dict[str, tuple[Any, ...]]:
    """Allowed values of the task's own keys, by dotted key, for `config.validate`."""
    return {}

  @classmethod
  @abc.abstractmethod
  def default_evals(cls) -> dict[str, ml_collections.ConfigDict]:
    """The evaluators (`config.evals`, by name) a config of this task starts with."""

  def __init__(self, config: ml_collections.ConfigDict, data: DataInfo):
    self.config = config
    self.data = data
    self.dtype = jnp.dtype(config.dtype)
    self.input_shape = self.model_input_shape()
    self.model = self.create_model()

  def sampler_kwargs_for(self, num_devices: int) -> dict[str, Any]:
    """Extra arguments for `cnnjax.data.pipeline.train_iterator` (e.g. P x K sampling)."""
    del num_devices
    return {}

  def model_input_shape(self) -> tuple[int, int, int]:
    """(h, w, c) of `preprocess`'s output: `config.input.size` square, else the stored size."""
    h, w, c = self.data.image_shape
    size = self.config.input.size
    return (size, size, c) if size else (h, w, c)

  def backbone_kwargs(self, num_classes: int | None) -> dict[str, Any]:
    """Keyword arguments for `cnnjax.models.create` from the config."""
    kwargs = dict(self.config.model_kwargs)
    kwargs.update(
      num_classes=num_classes, dtype=self.dtype, axis_name=AXIS if self.config.global_bn else None
    )
    return kwargs

  @abc.abstractmethod
  def create_model(self) -> nn.Module:
    """Builds the task's Flax module (backbone plus any head)."""

  def init_variables(self, rng: jax.Array) -> dict[str, PyTree]:
    """Initial {"params", "batch_stats"} for one example of `input_shape`."""
    dummy = jnp.zeros((1, *self.input_shape), self.dtype)
    variables = self.model.init({"params": rng, "dropout": rng}, dummy, train=False)
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}

  @abc.abstractmethod
  def preprocess(self, batch: Batch, rng: jax.Array, train: bool) -> Batch:
    """On-device decoding and augmentation: uint8 [B, H, W, C] -> float [B, h, w, c]."""

  @abc.abstractmethod
  def loss_fn(
    self, params: PyTree, batch_stats: PyTree, batch: Batch, rng: jax.Array, train: bool
  ) -> tuple[jax.Array, tuple[Metrics, PyTree]]:
    """Scalar loss of this device's shard, with (metrics, updated batch_stats)."""

  @abc.abstractmethod
  def eval_step(self, variables: dict[str, PyTree], batch: Batch) -> tuple[Metrics, Metrics]:
    """(sums over valid examples, per-example outputs [B, ...]) of a preprocessed batch."""

  def apply(
    self,
    variables: dict[str, PyTree],
    *inputs: jax.Array,
    train: bool,
    rng: jax.Array | None = None,
  ) -> tuple[Any, PyTree]:
    """Runs the model on `inputs` (images [B, h, w, c], then any other model arguments).

    In training mode BatchNorm normalises with batch statistics and dropout is keyed by
    `device_key(rng)`; otherwise the model runs as in evaluation.

    Returns:
      (the model's outputs, batch_stats after the call: updated in training mode).
    """
    if not train:
      return self.model.apply(variables, *inputs, train=False), variables.get("batch_stats", {})
    outputs, updates = self.model.apply(
      variables, *inputs, train=True, mutable=["batch_stats"], rngs={"dropout": device_key(rng)}
    )
    return outputs, updates.get("batch_stats", {})


def eval_config(
  kind: str, split: str = "test", every: int = 0, **options: Any
) -> ml_collections.ConfigDict:
  """One evaluator's section of `config.evals`: its kind, split, cadence and options."""
  return ml_collections.ConfigDict({"kind": kind, "split": split, "every": every, **options})


def example_keys(rng: jax.Array, n: int) -> jax.Array:
  """One key per example [n] of this device's shard, keyed by its global batch position."""
  first = jax.lax.axis_index(AXIS) * n
  return jax.vmap(jax.random.fold_in, (None, 0))(rng, first + jnp.arange(n))


def device_key(rng: jax.Array) -> jax.Array:
  """A key of this device's own (e.g. for dropout over its shard)."""
  return jax.random.fold_in(rng, jax.lax.axis_index(AXIS))


def per_example(
  recipe: Callable[..., Any], rng: jax.Array, images: jax.Array, *args, **kwargs
) -> Any:
  """Applies a batch recipe `recipe(key, images [B, ...], ...)` one example at a time.

  Each example gets its `example_keys` key, so results do not depend on device layout.
  """

  def one(key, image):
    return jax.tree.map(lambda out: out[0], recipe(key, image[None], *args, **kwargs))

  return jax.vmap(one)(example_keys(rng, images.shape[0]), images)


_TASKS: dict[str, type[Task]] = {}


def register(name: str, task_class: type[Task]) -> None:
  """Registers `task_class` under `name` (the value of `config.task`)."""
  if name in _TASKS:
    raise ValueError(f"task {name!r} is registered twice")
  _TASKS[name] = task_class


def names() -> list[str]:
  """All registered task names, sorted."""
  return sorted(_TASKS)


def get(name: str) -> type[Task]:
  """The task class registered as `name`; UsageError naming the closest ones otherwise."""
  if name not in _TASKS:
    close = difflib.get_close_matches(name, names(), n=3, cutoff=0.4)
    hint = f"did you mean {', '.join(close)}?" if close else f"choose one of {', '.join(names())}."
    raise UsageError(f"unknown task {name!r}; {hint}")
  return _TASKS[name]


def create(config: ml_collections.ConfigDict, data: DataInfo) -> Task:
  """Builds the task named by `config.task` for a dataset."""
  return get(config.task)(config, data)


# Each task module registers itself on import; add one line per task module.
from cnnjax.train.tasks import classification  # noqa: E402,F401
from cnnjax.train.tasks import metric_learning  # noqa: E402,F401
from cnnjax.train.tasks import simclr  # noqa: E402,F401
from cnnjax.train.tasks import segmentation  # noqa: E402,F401
from cnnjax.train.tasks import detection  # noqa: E402,F401
