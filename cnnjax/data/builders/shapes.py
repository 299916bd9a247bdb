"""`shapes`: generated RGB images of filled circles, squares and triangles.

Each image has a random background colour and 1 to `max_objects` shapes of random class
(0 circle, 1 square, 2 upright triangle), size (15-45% of the side), position (fully
inside the image) and colour (far from the background). Later shapes are drawn over
earlier ones, but a placement that would hide more than half of an earlier shape is
redrawn, so every object stays visible. Features:

- 'image': uint8 [S, S, 3];
- 'label': the class of the largest object (most visible pixels, first on ties);
- 'mask': uint8 [S, S], 0 background, 1 + class of the shape on top at each pixel;
- 'boxes': float32 [max_objects, 4], (x1, y1, x2, y2) pixel edges of each object's
  visible pixels (x2, y2 exclusive), so every object's mask pixels lie inside its box;
- 'box_labels': int32 [max_objects]; 'box_valid': bool [max_objects], objects first.

Example i of a split is drawn from numpy's PCG64 seeded with (seed, split, i): the data
depend only on the config, not on the machine or the order of generation. Configs:
'default' (64x64, 10,000 / 2,000), 'small' (32x32, 2,000 / 500), 'tiny' (32x32, 64 / 32,
for tests). `save_picture` draws a few examples (the README's picture):

  python -c "from cnnjax.data.builders import shapes; shapes.save_picture('shapes.png')"
"""

import dataclasses

import numpy as np
import PIL.Image
import tensorflow_datasets as tfds

CLASS_NAMES = ("circle", "square", "triangle")
_SPLIT_IDS = {"train": 0, "test": 1}
_MIN_VISIBLE = 0.5
_PLACEMENT_TRIES = 20


@dataclasses.dataclass
class ShapesConfig(tfds.core.BuilderConfig):
  """Image side, split sizes, objects per image and the generation seed."""

  image_size: int = 64
  train_size: int = 10_000
  test_size: int = 2_000
  max_objects: int = 4
  seed: int = 0


def _shape_mask(kind: int, center: np.ndarray, extent: float, size: int) -> np.ndarray:
  """bool [size, size]: pixel centres inside a shape of `extent` pixels across."""
  y, x = np.mgrid[:size, :size] + 0.5
  dy, dx = y - center[0], x - center[1]
  half = extent / 2
  if kind == 0:
    return dy**2 + dx**2 <= half**2
  if kind == 1:
    return (np.abs(dx) <= half) & (np.abs(dy) <= half)
  # Upright isosceles triangle: apex at the top, base at the bottom of its square.
  return (dy <= half) & (2 * np.abs(dx) <= dy + half)


def render(rng: np.random.Generator, image_size: int, max_objects: int) -> dict[str, np.ndarray]:
  """Draws one example; also returns 'instances': int [S, S], 0 background, object i+1."""
  background = rng.integers(0, 256, 3)
  image = np.broadcast_to(background, (image_size, image_size, 3)).astype(np.uint8)
  instances = np.zeros((image_size, image_size), np.int32)
  classes = []
  for _ in range(rng.integers(1, max_objects + 1)):
    kind = int(rng.integers(0, len(CLASS_NAMES)))
    for _ in range(_PLACEMENT_TRIES):
      extent = rng.uniform(0.15, 0.45) * image_size
      center = rng.uniform(extent / 2, image_size - extent / 2, 2)
      shape = _shape_mask(kind, center, extent, image_size)
      if not shape.any():
        continue
      before = np.bincount(instances.ravel(), minlength=len(classes) + 1)[1:]
      after = np.bincount(np.where(shape, 0, instances).ravel(), minlength=len(classes) + 1)[1:]
      if np.all(after >= _MIN_VISIBLE * before):
        break
    else:
      continue
    colour = rng.integers(0, 256, 3)
    while np.abs(colour - background).sum() < 150:
      colour = rng.integers(0, 256, 3)
    image = np.where(shape[..., None], colour, image).astype(np.uint8)
    instances = np.where(shape, len(classes) + 1, instances)
    classes.append(kind)
  classes = np.array(classes, np.int32)
  boxes = np.zeros((max_objects, 4), np.float32)
  for i in range(len(classes)):
    ys, xs = np.nonzero(instances == i + 1)
    boxes[i] = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
  areas = np.bincount(instances.ravel(), minlength=len(classes) + 1)[1:]
  box_labels = np.zeros((max_objects,), np.int32)
  box_labels[: len(classes)] = classes
  return {
    "image": image,
    "label": int(classes[np.argmax(areas)]),
    "mask": np.where(instances > 0, classes[np.maximum(instances - 1, 0)] + 1, 0).astype(np.uint8),
    "boxes": boxes,
    "box_labels": box_labels,
    "box_valid": np.arange(max_objects) < len(classes),
    "instances": instances,
  }


class Shapes(tfds.core.GeneratorBasedBuilder):
  """Generated shapes for classification, segmentation and detection (see module doc)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
    ShapesConfig(name="default", description="64x64, 10,000 train / 2,000 test."),
    ShapesConfig(
      name="small",
      description="32x32, 2,000 train / 500 test.",
      image_size=32,
      train_size=2_000,
      test_size=500,
    ),
    ShapesConfig(
      name="tiny",
      description="32x32, 64 train / 32 test, for tests.",
      image_size=32,
      train_size=64,
      test_size=32,
    ),
  ]
  DEFAULT_CONFIG_NAME = "default"

  def _info(self) -> tfds.core.DatasetInfo:
    size, objects = self.builder_config.image_size, self.builder_config.max_objects
    return self.dataset_info_from_configs(
      description=__doc__,
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(size, size, 3), dtype=np.uint8),
          "label": tfds.features.ClassLabel(names=CLASS_NAMES),
          "mask": tfds.features.Tensor(shape=(size, size), dtype=np.uint8),
          "boxes": tfds.features.Tensor(shape=(objects, 4), dtype=np.float32),
          "box_labels": tfds.features.Tensor(shape=(objects,), dtype=np.int32),
          "box_valid": tfds.features.Tensor(shape=(objects,), dtype=np.bool_),
        }
      ),
      supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    config = self.builder_config
    return {
      "train": self._generate_examples("train", config.train_size),
      "test": self._generate_examples("test", config.test_size),
    }

  def _generate_examples(self, split: str, num_examples: int):
    config = self.builder_config
    for index in range(num_examples):
      rng = np.random.default_rng((config.seed, _SPLIT_IDS[split], index))
      example = render(rng, config.image_size, config.max_objects)
      del example["instances"]
      # A PIL image, so that TFDS encodes the PNG without TensorFlow.
      example["image"] = PIL.Image.fromarray(example["image"])
      yield index, example


def save_picture(path: str, num_examples: int = 6, image_size: int = 64, seed: int = 0) -> None:
  """Writes a PNG of `num_examples` examples: images with boxes above, masks below."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  figure, axes = plt.subplots(2, num_examples, figsize=(1.6 * num_examples, 3.4))
  for column in range(num_examples):
    example = render(np.random.default_rng((seed, 0, column)), image_size, max_objects=4)
    top, bottom = axes[0, column], axes[1, column]
    top.imshow(example["image"])
    top.set_title(CLASS_NAMES[example["label"]], fontsize=9)
    for (x1, y1, x2, y2), valid in zip(example["boxes"], example["box_valid"]):
      if valid:
        top.add_patch(
          plt.Rectangle(
            (x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, edgecolor="yellow", linewidth=1
          )
        )
    bottom.imshow(example["mask"], cmap="viridis", vmin=0, vmax=3, interpolation="nearest")
    for axis in (top, bottom):
      axis.set_xticks([])
      axis.set_yticks([])
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)
