"""The digits and shapes TFDS builders: sizes, ranges, a fixed split, consistent targets."""

import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from cnnjax.data import builders
from cnnjax.data.builders import shapes


def _build(name: str, data_dir) -> tfds.core.DatasetBuilder:
  builder = tfds.builder(name, data_dir=str(data_dir))
  builder.download_and_prepare(file_format="array_record")
  return builder


def _read(name: str, split: str, data_dir) -> list[dict]:
  source = tfds.data_source(name, split=split, data_dir=str(data_dir), download=False)
  return [source[i] for i in range(len(source))]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("tfds")
  _build("digits", path)
  _build("shapes/tiny", path)
  return path


def test_digits_splits_sizes_and_ranges(data_dir):
  builder = tfds.builder("digits", data_dir=str(data_dir))
  assert (
    builder.info.splits["train"].num_examples + builder.info.splits["test"].num_examples == 1797
  )
  test = _read("digits", "test", data_dir)
  assert len(test) == 359
  images = np.stack([ex["image"] for ex in test])
  labels = np.array([ex["label"] for ex in test])
  assert images.shape == (359, 8, 8, 1) and images.dtype == np.uint8
  assert images.max() == 255 and images.min() == 0
  counts = np.bincount(labels, minlength=10)
  # Stratified: every class puts 20% of its ~180 examples in test.
  assert counts.min() >= 35 and counts.max() <= 37


def test_digits_split_is_identical_across_fresh_builds(data_dir, tmp_path):
  _build("digits", tmp_path)
  for split in ("train", "test"):
    first, second = _read("digits", split, data_dir), _read("digits", split, tmp_path)
    assert [ex["label"] for ex in first] == [ex["label"] for ex in second]
    np.testing.assert_array_equal(
      np.stack([ex["image"] for ex in first]), np.stack([ex["image"] for ex in second])
    )


def test_digits_split_indices_are_disjoint_and_cover():
  labels = np.repeat(np.arange(10), 20)
  split = builders.digits.split_indices(labels)
  assert len(np.intersect1d(split["train"], split["test"])) == 0
  assert len(split["train"]) + len(split["test"]) == 200
  np.testing.assert_array_equal(np.bincount(labels[split["test"]]), np.full(10, 4))


def test_shapes_split_sizes_and_ranges(data_dir):
  builder = tfds.builder("shapes/tiny", data_dir=str(data_dir))
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {"train": 64, "test": 32}
  for ex in _read("shapes/tiny", "test", data_dir):
    assert ex["image"].shape == (32, 32, 3) and ex["image"].dtype == np.uint8
    assert 0 <= ex["label"] < 3
    assert ex["mask"].shape == (32, 32) and ex["mask"].max() <= 3
    assert ex["boxes"].shape == (4, 4) and ex["box_valid"].any()


def test_shapes_masks_and_boxes_agree(data_dir):
  for ex in _read("shapes/tiny", "train", data_dir):
    valid = ex["box_valid"]
    boxes, box_labels = ex["boxes"][valid].astype(int), ex["box_labels"][valid]
    np.testing.assert_array_equal(ex["boxes"][~valid], 0)
    assert ex["label"] in box_labels
    covered = np.zeros((4, 32, 32), bool)
    for (x1, y1, x2, y2), label in zip(boxes, box_labels):
      assert 0 <= x1 < x2 <= 32 and 0 <= y1 < y2 <= 32
      inside = ex["mask"][y1:y2, x1:x2] == label + 1
      # Tight: the box's first and last rows and columns each touch its class.
      assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
      covered[label + 1, y1:y2, x1:x2] = True
    for c in (1, 2, 3):
      assert covered[c][ex["mask"] == c].all()


@pytest.mark.parametrize("seed", range(20))
def test_render_objects_boxes_label_and_mask(seed):
  example = shapes.render(np.random.default_rng(seed), image_size=32, max_objects=4)
  instances, valid = example["instances"], example["box_valid"]
  areas = np.bincount(instances.ravel(), minlength=valid.sum() + 1)[1:]
  assert (areas > 0).all() and len(areas) == valid.sum()
  for i, (x1, y1, x2, y2) in enumerate(example["boxes"][valid].astype(int)):
    ys, xs = np.nonzero(instances == i + 1)
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x1, y1, x2, y2)
  assert example["label"] == example["box_labels"][np.argmax(areas)]
  expected_mask = np.where(instances > 0, example["box_labels"][instances - 1] + 1, 0)
  np.testing.assert_array_equal(example["mask"], expected_mask)


def test_render_is_deterministic():
  first = shapes.render(np.random.default_rng((0, 1, 2)), 32, 4)
  second = shapes.render(np.random.default_rng((0, 1, 2)), 32, 4)
  for key in first:
    np.testing.assert_array_equal(first[key], second[key])


def test_processes_racing_to_prepare_share_one_build(tmp_path):
  # Without the pipeline's file lock the losers of this race fail renaming their build.
  script = (
    "import sys; from cnnjax import data; "
    "print(data.dataset_info('digits', sys.argv[1]).splits['test'])"
  )
  runs = [
    subprocess.Popen(
      [sys.executable, "-c", script, str(tmp_path)],
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for _ in range(3)
  ]
  outputs = [run.communicate(timeout=300) for run in runs]
  for run, (stdout, stderr) in zip(runs, outputs):
    assert run.returncode == 0, stderr.splitlines()[-1]
    assert stdout.split()[-1] == "359"
  assert sorted(p.name for p in (tmp_path / "digits").iterdir()) == ["1.0.0"]
