"""The host input pipeline: Grain over `tfds.data_source`, sharded per process, resumable.

Training iterators are infinite: the process's shard of the split, shuffled with a seed and
reshuffled every epoch (or drawn as P x K class-balanced chunks), batched to the
per-process batch size. Their `get_state()` is a small JSON-serialisable dict; an iterator
given that state with `set_state()` yields exactly the batches the original would have
yielded next. Evaluation iterators pass over the split once and pad the last batch, with
'valid' marking the real examples, so every example is counted exactly once.

Only decoding happens here (uint8 images, int labels); resizing, cropping, flips, colour
and normalisation happen on the device (`cnnjax.data.augment`).
"""

import dataclasses
import math
import os
import re
from typing import Any, Iterator, Sequence

from absl import flags
import filelock
import grain
import numpy as np
import tensorflow_datasets as tfds

from cnnjax.data import adapters
from cnnjax.data import builders
from cnnjax.data import samplers
from cnnjax.errors import UsageError

DEFAULT_DATA_DIR = "~/tensorflow_datasets"
Batch = dict[str, np.ndarray]
_LABEL_NAMES: dict[tuple[str, str, int], tuple[str, ...]] = {}


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What a model and trainer need to know about a dataset.

  Attributes:
    name: the TFDS name (with config, if any), e.g. 'shapes/small'.
    num_classes: number of image-level classes ('label' lies in [0, num_classes)).
    image_shape: (H, W, C) of the 'image' the pipeline yields.
    splits: split name -> number of examples (empty when TFDS does not know them).
    features: names of the arrays in every batch (eval batches add 'valid').
  """

  name: str
  num_classes: int
  image_shape: tuple[int, int, int]
  splits: dict[str, int]
  features: tuple[str, ...]


def resolve_data_dir(data_dir: str | None = None) -> str:
  """`data_dir`, else $TFDS_DATA_DIR, else ~/tensorflow_datasets (gs:// paths pass through)."""
  data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or DEFAULT_DATA_DIR
  return data_dir if "://" in data_dir else os.path.expanduser(data_dir)


def dataset_info(
  dataset: str, data_dir: str | None = None, *, image_size: int | None = None
) -> DatasetInfo:
  """Describes `dataset` as the pipeline yields it; prepares cnnjax's own builders."""
  builder = _builder(dataset, data_dir)
  adapter = _adapter(builder, image_size)
  features = builder.info.features
  if adapter.label_names is not None:
    num_classes = len(adapter.label_names)
  elif adapter.kind == "voc":
    num_classes = features["objects"]["label"].num_classes
  else:
    num_classes = features["label"].num_classes
  if adapter.image_size is not None:
    height = width = adapter.image_size
  else:
    height, width = features["image"].shape[:2]
  return DatasetInfo(
    name=dataset,
    num_classes=num_classes,
    image_shape=(height, width, features["image"].shape[-1]),
    splits={name: split.num_examples for name, split in builder.info.splits.items()},
    features=adapter.features,
  )


def class_names(dataset: str, data_dir: str | None = None) -> tuple[str, ...]:
  """The name of each class of `dataset`, where TFDS or cnnjax's builders know them; else ()."""
  if dataset.split("/")[0].split(":")[0] == "shapes":
    return tuple(builders.shapes.CLASS_NAMES)
  try:
    label = tfds.builder(dataset, data_dir=resolve_data_dir(data_dir)).info.features["label"]
    return tuple(label.names)
  except Exception:  # noqa: BLE001 -- names only label pictures; indices will do.
    return ()


def train_iterator(
  dataset: str,
  *,
  split: str,
  batch_size: int,
  seed: int,
  data_dir: str | None = None,
  process_index: int = 0,
  process_count: int = 1,
  classes_per_group: int | None = None,
  examples_per_class: int | None = None,
  worker_count: int = 0,
  image_size: int | None = None,
  read_threads: int = 4,
) -> grain.DatasetIterator:
  """Infinite, shuffled, per-process batches of `split`.

  Args:
    dataset: TFDS name, e.g. 'digits', 'shapes/small', 'cifar10'.
    split: TFDS split, slicing allowed ('train[:90%]').
    batch_size: B, examples per batch in THIS process.
    seed: shuffle (or P x K) seed; the same seed gives the same batches.
    data_dir: where prepared datasets live (see `resolve_data_dir`).
    process_index, process_count: this process reads examples
      process_index, process_index + process_count, ... of the split.
    classes_per_group, examples_per_class: P and K. When set, every consecutive P*K
      examples of a batch hold P distinct classes with K examples each (classes in blocks
      of K); B must be a multiple of P*K (pass P*K = the per-device batch).
    worker_count: Grain worker processes (0 reads in this process with threads). Batches
      are formed before the iterator, so they and their order do not depend on it; the
      iterator state's form does, so resume with the same worker_count.
    image_size: square side for datasets whose images vary in size (see `adapters`).
    read_threads: threads reading and decoding examples in each process.

  Returns:
    A Grain iterator of dicts: 'image' uint8 [B, H, W, C], 'label' int32 [B], and the
    dataset's extra features (`dataset_info(...).features`). `get_state()` and
    `set_state(state)` save and restore its position.
  """
  source, adapter = _open(
    dataset, split, data_dir, batch_size, process_index, process_count, image_size
  )
  examples = _shard(source, process_index, process_count, dataset)
  if classes_per_group is None and examples_per_class is None:
    ds = examples.shuffle(seed=seed % 2**32).repeat().map(adapter)
  else:
    _check_pk(classes_per_group, examples_per_class, batch_size)
    labels = np.array([adapter.label(examples[i]) for i in range(len(examples))])
    indices = samplers.PKIndexDataset(labels, classes_per_group, examples_per_class, seed=seed)
    ds = indices.map(_Gather(examples, adapter))
  return _batched_iterator(ds, batch_size, worker_count, read_threads)


def check_readable(dataset: str, splits: Sequence[str], data_dir: str | None = None) -> None:
  """UsageError unless every split is prepared, non-empty and its first and last examples read.

  Training reads the train split for hours before it first evaluates; reading one example
  at each end of every split it will use finds a missing or corrupt file before the run
  starts, not at its first evaluation.
  """
  data_dir = resolve_data_dir(data_dir)
  builder = _builder(dataset, data_dir)
  for split in dict.fromkeys(splits):
    source = _source(builder, dataset, split, data_dir)
    if not len(source):
      raise UsageError(f"split {split!r} of {dataset} is empty: choose another split")
    try:
      for index in (0, len(source) - 1):
        source[index]
    except Exception as error:  # noqa: BLE001 -- any read failure is a damaged file.
      reason = (
        str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
      )
      remedy = (
        f"delete {builder.data_dir} and cnnjax prepares it again"
        if isinstance(builder, builders.BUILDERS)
        else f"prepare it again with `tfds build {dataset} --data_dir={data_dir} "
        "--file_format=array_record`"
      )
      raise UsageError(
        f"cannot read split {split!r} of {dataset} under {builder.data_dir} ({reason}); {remedy}"
      ) from None


def eval_iterator(
  dataset: str,
  *,
  split: str,
  batch_size: int,
  data_dir: str | None = None,
  process_index: int = 0,
  process_count: int = 1,
  image_size: int | None = None,
  worker_count: int = 0,
  read_threads: int = 4,
) -> Iterator[Batch]:
  """One pass over this process's shard of `split`, the last batch padded.

  Every process yields the same number of batches (multi-host steps stay in lockstep);
  padding examples are zeros with 'valid' False.

  Returns:
    An iterator of dicts like `train_iterator`'s plus 'valid': bool [B].
  """
  source, adapter = _open(
    dataset, split, data_dir, batch_size, process_index, process_count, image_size
  )
  if not len(source):
    raise UsageError(f"split {split!r} of {dataset} is empty: evaluate on another split")
  examples = grain.MapDataset.source(source)[process_index::process_count].map(adapter)
  num_batches = math.ceil(math.ceil(len(source) / process_count) / batch_size)
  padding = _padding_example(adapter(source[0]))
  ds = grain.MapDataset.range(num_batches * batch_size).map(_Padded(examples, padding))
  return _batched_iterator(ds, batch_size, worker_count, read_threads)


class _Gather:
  """Index -> adapted example (a class, not a lambda, so worker processes can pickle it)."""

  def __init__(self, examples: grain.MapDataset, adapter: adapters.Adapter):
    self._examples = examples
    self._adapter = adapter

  def __call__(self, index: int) -> Batch:
    return self._adapter(self._examples[index])


class _Padded:
  """Position -> the shard's example with 'valid' True, or padding past the shard's end."""

  def __init__(self, examples: grain.MapDataset, padding: Batch):
    self._examples = examples
    self._padding = padding

  def __call__(self, position: int) -> Batch:
    if position < len(self._examples):
      return {**self._examples[position], "valid": np.True_}
    return self._padding


def _padding_example(example: Batch) -> Batch:
  return {**{k: np.zeros_like(v) for k, v in example.items()}, "valid": np.False_}


def _batched_iterator(
  ds: grain.MapDataset, batch_size: int, worker_count: int, read_threads: int
) -> grain.DatasetIterator:
  # Batching before the iterator makes a batch the unit of work of both read threads and
  # worker processes, so batches (and saved states) do not depend on worker_count.
  read_options = grain.ReadOptions(
    num_threads=read_threads, prefetch_buffer_size=2 * max(read_threads, 1)
  )
  iter_ds = ds.batch(batch_size, drop_remainder=True).to_iter_dataset(read_options)
  if worker_count > 0:
    # Grain's worker processes read an absl flag, which fails unless flags were parsed
    # (google/grain#1355); scripts that do not use absl.app get the flags' defaults.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return iter(iter_ds)


def _open(
  dataset: str,
  split: str,
  data_dir: str | None,
  batch_size: int,
  process_index: int,
  process_count: int,
  image_size: int | None,
) -> tuple[Any, adapters.Adapter]:
  """Checks the arguments shared by both iterators; (the split's data source, its adapter)."""
  if not 0 <= process_index < process_count:
    raise UsageError(f"process_index {process_index} is not in [0, {process_count})")
  if batch_size <= 0:
    raise UsageError(f"batch size must be positive, got {batch_size}")
  data_dir = resolve_data_dir(data_dir)
  builder = _builder(dataset, data_dir)
  return _source(builder, dataset, split, data_dir), _adapter(builder, image_size)


def _check_pk(
  classes_per_group: int | None, examples_per_class: int | None, batch_size: int
) -> None:
  if not classes_per_group or not examples_per_class:
    raise UsageError("P x K batches need both classes_per_group and examples_per_class >= 1")
  chunk = classes_per_group * examples_per_class
  if chunk > batch_size:
    raise UsageError(
      f"P x K = {classes_per_group} x {examples_per_class} = {chunk} is larger "
      f"than the batch of {batch_size}: lower P or K, or raise the batch"
    )
  if batch_size % chunk:
    raise UsageError(
      f"the batch of {batch_size} is not a multiple of P x K = {chunk}: "
      "make the per-device batch equal to P x K"
    )


def _shard(source: Any, process_index: int, process_count: int, dataset: str) -> grain.MapDataset:
  examples = grain.MapDataset.source(source)[process_index::process_count]
  if not len(examples):
    raise UsageError(
      f"{dataset} has no examples for process {process_index} of "
      f"{process_count}: use a larger split or fewer processes"
    )
  return examples


def _builder(dataset: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  """The TFDS builder; cnnjax's own datasets are prepared on first use."""
  data_dir = resolve_data_dir(data_dir)  # Idempotent.
  if "://" not in data_dir and os.path.exists(data_dir) and not os.path.isdir(data_dir):
    raise UsageError(
      f"data_dir {data_dir} is a file: set --config.data_dir (or $TFDS_DATA_DIR) to a directory"
    )
  try:
    builder = tfds.builder(dataset, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise UsageError(
      f"unknown dataset {dataset!r}: use a TFDS name (mnist, cifar10, ...) or "
      f"one of cnnjax's builders: {', '.join(builders.NAMES)}"
    ) from None
  if isinstance(builder, builders.BUILDERS) and not builder.is_prepared():
    try:
      builder = _prepare_once(dataset, data_dir)
    except OSError as error:  # E.g. a read-only data_dir: nowhere to write the dataset.
      raise UsageError(
        f"cannot prepare {dataset} in {data_dir} ({error.strerror or error}): "
        "set --config.data_dir to a writable directory"
      ) from None
  return builder


def _prepare_once(dataset: str, data_dir: str) -> tfds.core.DatasetBuilder:
  """Prepares one of cnnjax's builders, once even when processes race to it.

  Processes that share a local data dir (the processes of a multi-host run on one machine,
  pytest-xdist workers) take a file lock; the ones that waited find the data prepared.
  """
  if "://" in data_dir:  # Remote storage has no file locks; prepare it from one process.
    builder = tfds.builder(dataset, data_dir=data_dir)
    builder.download_and_prepare(file_format="array_record")
    return builder
  os.makedirs(data_dir, exist_ok=True)
  with filelock.FileLock(os.path.join(data_dir, f".{dataset.replace('/', '_')}.lock")):
    builder = tfds.builder(dataset, data_dir=data_dir)
    if not builder.is_prepared():
      builder.download_and_prepare(file_format="array_record")
  return builder


def _source(builder: tfds.core.DatasetBuilder, dataset: str, split: str, data_dir: str) -> Any:
  """The split as a random-access source; one-line errors for what the user can fix."""
  known = builder.info.splits
  if known:
    for part in split.split("+"):
      name = re.sub(r"\[.*\]$", "", part.strip())
      if name not in known:
        raise UsageError(
          f"unknown split {split!r} of {dataset}: use one of "
          f"{', '.join(sorted(known))} (TFDS slices like 'train[:90%]' work)"
        )
  try:
    # Never downloads: cnnjax's builders were prepared above, and the others are prepared
    # once, elsewhere, with TensorFlow and a network.
    return builder.as_data_source(split=split)
  except (NotImplementedError, ValueError, AssertionError, FileNotFoundError) as error:
    if builder.is_prepared():
      raise UsageError(
        f"{dataset} in {data_dir} is stored as {builder.info.file_format.value}, but cnnjax "
        f"reads array_record: rebuild with `tfds build {dataset} --data_dir={data_dir} "
        f"--file_format=array_record` ({error.__class__.__name__})"
      ) from None
    raise UsageError(
      f"dataset {dataset} is not prepared in {data_dir} and cnnjax does not download: on a "
      f"machine with internet and tensorflow run `tfds build {dataset} --data_dir=DIR "
      f"--file_format=array_record`, then copy DIR/{builder.name} into {data_dir} "
      "(or set --config.data_dir)"
    ) from None


def _adapter(builder: tfds.core.DatasetBuilder, image_size: int | None) -> adapters.Adapter:
  """Chooses the feature adapter from the dataset's TFDS features."""
  features = builder.info.features
  if isinstance(builder, builders.Shapes):
    return adapters.Adapter(kind="shapes")
  kind = "classification"
  if builder.name == "voc":
    kind = "voc"
  elif "segmentation_mask" in features:
    kind = "pet"
  if image_size is None and None in features["image"].shape[:2]:
    image_size = adapters.DEFAULT_IMAGE_SIZE.get(builder.name, adapters.FALLBACK_IMAGE_SIZE)
  label_names = None
  if kind != "voc" and not isinstance(features["label"], tfds.features.ClassLabel):
    label_names = _label_names(builder)
  return adapters.Adapter(
    kind=kind,
    image_size=image_size,
    label_names=label_names,
    max_objects=adapters.MAX_OBJECTS.get(builder.name, 0),
  )


def _label_names(builder: tfds.core.DatasetBuilder) -> tuple[str, ...]:
  """Sorted distinct string labels over all splits (lfw names people, not class ids).

  Reading them decodes every example once (lfw: about 13k images), so they are cached per
  dataset directory and size.
  """
  splits = "+".join(builder.info.splits) or "train"
  source = builder.as_data_source(split=splits)
  key = (str(builder.data_dir), splits, len(source))
  if key not in _LABEL_NAMES:
    names = {source[i]["label"] for i in range(len(source))}
    _LABEL_NAMES[key] = tuple(sorted(n.decode() if isinstance(n, bytes) else str(n) for n in names))
  return _LABEL_NAMES[key]
