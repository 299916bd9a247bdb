"""Input pipeline throughput on this machine, printed as one markdown table.

Host rows time `cnnjax.data.train_iterator` end to end (read array_record, decode, shuffle,
batch) for digits, shapes and an ImageNet-shaped dataset: 224x224 JPEGs of 1,000 classes,
written once by a throwaway TFDS builder into a temporary directory (real ImageNet cannot
be downloaded here, and tfds.testing.mock_data bypasses reading and decoding). The device
row times `cnnjax.data.augment.simclr_views` (both views of each image) on the default backend.

  python experiments/benchmarks/input_pipeline.py [--batch_size=256] [--batches=20]
"""

import functools
import tempfile
import time
from typing import Iterator

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
import tensorflow_datasets as tfds

from cnnjax import data
from cnnjax.data import augment
import _script  # experiments/benchmarks/_script.py: absl flags with cnnjax's --help.

Row = dict[str, str]

flags.DEFINE_integer("batch_size", 256, "examples per host batch")
flags.DEFINE_integer("batches", 20, "timed batches")
flags.DEFINE_integer("worker_count", 0, "Grain worker processes")
flags.DEFINE_integer("read_threads", 2, "Grain read threads")
flags.DEFINE_string(
  "data_dir", None, "where digits and shapes are prepared (default: TFDS default)"
)
flags.DEFINE_integer("augment_batch_size", 64, "images per SimCLR augmentation call")
flags.DEFINE_integer("augment_batches", 5, "timed SimCLR augmentation calls")


class ImagenetShaped(tfds.core.GeneratorBasedBuilder):
  """Smooth random 224x224 RGB JPEGs (about ImageNet's size after its usual resize)."""

  VERSION = tfds.core.Version("1.0.0")
  NUM_EXAMPLES = 2_048

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(224, 224, 3), encoding_format="jpeg"),
          "label": tfds.features.ClassLabel(num_classes=1000),
        }
      ),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Generated.
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    rng = np.random.default_rng(0)
    for index in range(self.NUM_EXAMPLES):
      coarse = rng.integers(0, 256, (14, 14, 3), dtype=np.uint8)
      image = PIL.Image.fromarray(coarse).resize((224, 224), PIL.Image.BICUBIC)
      noisy = np.asarray(image, np.int16) + rng.integers(-12, 13, (224, 224, 3))
      yield (
        index,
        {
          "image": PIL.Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)),
          "label": int(rng.integers(0, 1000)),
        },
      )


def _examples_per_second(iterator: Iterator[dict], batch_size: int, batches: int) -> float:
  for _ in range(2):  # Warm up: threads start, first files open.
    next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batches * batch_size / (time.perf_counter() - start)


def _host_row(dataset: str, label: str, args: flags.FlagValues, data_dir: str | None) -> Row:
  info = data.dataset_info(dataset, data_dir)
  iterator = data.train_iterator(
    dataset,
    split="train",
    batch_size=args.batch_size,
    seed=0,
    data_dir=data_dir,
    worker_count=args.worker_count,
    read_threads=args.read_threads,
  )
  rate = _examples_per_second(iterator, args.batch_size, args.batches)
  return {
    "input": label,
    "image": "x".join(map(str, info.image_shape)),
    "batch": str(args.batch_size),
    "examples/s": f"{rate:,.0f}",
  }


def digits_row(args: flags.FlagValues) -> Row:
  """Host: digits (8x8x1 PNG)."""
  return _host_row("digits", "host: digits", args, args.data_dir)


def shapes_row(args: flags.FlagValues) -> Row:
  """Host: shapes default config (64x64x3 PNG + mask + boxes)."""
  return _host_row("shapes", "host: shapes (image, mask, boxes)", args, args.data_dir)


def imagenet_shaped_row(args: flags.FlagValues) -> Row:
  """Host: 224x224x3 JPEGs, as ImageNet is read after an offline resize."""
  with tempfile.TemporaryDirectory() as data_dir:
    ImagenetShaped(data_dir=data_dir).download_and_prepare(file_format="array_record")
    return _host_row("imagenet_shaped", "host: ImageNet-shaped JPEG", args, data_dir)


def simclr_augment_row(args: flags.FlagValues) -> Row:
  """Device: SimCLR's two-view recipe at 224x224, jit-compiled and vmapped over the batch."""
  images = jax.random.randint(jax.random.key(0), (args.augment_batch_size, 224, 224, 3), 0, 256)
  images = images.astype(jnp.uint8)
  views = jax.jit(functools.partial(augment.simclr_views, size=224))
  jax.block_until_ready(views(jax.random.key(1), images))  # Compile.
  start = time.perf_counter()
  for step in range(args.augment_batches):
    jax.block_until_ready(views(jax.random.key(2 + step), images))
  rate = args.augment_batches * args.augment_batch_size / (time.perf_counter() - start)
  return {
    "input": f"device ({jax.default_backend()}): SimCLR two views, jit + vmap",
    "image": "224x224x3",
    "batch": str(args.augment_batch_size),
    "examples/s": f"{rate:,.0f}",
  }


def markdown_table(rows: list[Row]) -> str:
  header = list(rows[0])
  lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
  lines += ["| " + " | ".join(row[k] for k in header) + " |" for row in rows]
  return "\n".join(lines)


def main() -> None:
  args = flags.FLAGS
  rows = [digits_row(args), shapes_row(args), imagenet_shaped_row(args), simclr_augment_row(args)]
  print(markdown_table(rows))


if __name__ == "__main__":
  _script.run(main)
