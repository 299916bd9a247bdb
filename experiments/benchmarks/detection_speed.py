"""R-CNN versus Fast R-CNN: test time per image, as a markdown table.

Both detectors take the models of experiments/configs/{rcnn,fast_rcnn}_shapes.py, the
same images and the same R proposals per image; timed is the compiled forward pass plus
box decoding and per-class NMS (`detect`), after one warm-up call. Selective search runs on
the host before either and costs the same for both; its time per image is a separate row.
Weights are random: the cost does not depend on them.

    .venv/bin/python experiments/benchmarks/detection_speed.py --proposals 64 --batch 8
"""

import importlib.util
import pathlib
import time

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from cnnjax import models
from cnnjax.data.builders import shapes
from cnnjax.models import rcnn
from cnnjax.data.proposals import selective_search
import _script  # experiments/benchmarks/_script.py: absl flags with cnnjax's --help.

CONFIGS = pathlib.Path(__file__).parents[1] / "configs"

flags.DEFINE_integer("proposals", 64, "R, proposals per image")
flags.DEFINE_integer("batch", 8, "images per call")
flags.DEFINE_integer("size", 32, "image side (shapes/small: 32)")
flags.DEFINE_integer("repeats", 5, "timed calls")


def _model_kwargs(config_name: str) -> dict:
  spec = importlib.util.spec_from_file_location(config_name, CONFIGS / f"{config_name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return dict(module.get_config().model_kwargs)


def _images_and_proposals(batch: int, size: int, num_proposals: int):
  """Generated shapes images [B, S, S, 3] and their selective-search proposals [B, R, 4]."""
  rng = np.random.default_rng(0)
  images, proposals, valid = [], [], []
  start = time.perf_counter()
  for _ in range(batch):
    image = shapes.render(rng, size, 4)["image"]
    found = selective_search(image, max_proposals=num_proposals)
    padded = np.zeros((num_proposals, 4), np.float32)
    padded[: len(found)] = found
    images.append(image)
    proposals.append(padded)
    valid.append(np.arange(num_proposals) < len(found))
  search_seconds = (time.perf_counter() - start) / batch
  images = (np.stack(images).astype(np.float32) / 255.0 - 0.5) / 0.5
  return (
    jnp.asarray(images),
    jnp.asarray(np.stack(proposals)),
    jnp.asarray(np.stack(valid)),
    search_seconds,
  )


def _seconds_per_image(name: str, kwargs: dict, images, proposals, valid, repeats: int) -> float:
  model = models.create(name, num_classes=3, **kwargs)
  variables = jax.jit(model.init)(jax.random.key(0), images[:1], proposals[:1])
  size = images.shape[1]

  @jax.jit
  def detect(variables, images, proposals, valid):
    logits, deltas = model.apply(variables, images, proposals, train=False)
    return rcnn.detect(logits, deltas, proposals, valid, (size, size))

  jax.block_until_ready(detect(variables, images, proposals, valid))
  start = time.perf_counter()
  for _ in range(repeats):
    jax.block_until_ready(detect(variables, images, proposals, valid))
  return (time.perf_counter() - start) / (repeats * images.shape[0])


def main() -> None:
  args = flags.FLAGS
  images, proposals, valid, search = _images_and_proposals(args.batch, args.size, args.proposals)
  fast = _seconds_per_image(
    "fast_rcnn", _model_kwargs("fast_rcnn_shapes"), images, proposals, valid, args.repeats
  )
  slow = _seconds_per_image(
    "rcnn", _model_kwargs("rcnn_shapes"), images, proposals, valid, args.repeats
  )
  print(
    f"{args.proposals} proposals per image, batch {args.batch}, {args.size}x{args.size} "
    f"images, {jax.devices()[0].platform} ({len(jax.devices())} devices visible)\n"
  )
  print("| stage | ms per image | relative |")
  print("| --- | --- | --- |")
  print(f"| selective search (host, both) | {1e3 * search:.2f} | |")
  print(f"| Fast R-CNN forward + detect | {1e3 * fast:.2f} | 1.0x |")
  print(f"| R-CNN forward + detect | {1e3 * slow:.2f} | {slow / fast:.1f}x |")


if __name__ == "__main__":
  _script.run(main)
