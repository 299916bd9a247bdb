"""The Grain host pipeline: determinism, exact resume, sharding, eval coverage, P x K, errors."""

import collections
import json

import numpy as np
import pytest
import tensorflow_datasets as tfds

from cnnjax import data
from cnnjax.data import adapters
from cnnjax.errors import UsageError


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tfds"))
  data.dataset_info("digits", path)  # Prepares on first use.
  data.dataset_info("shapes/tiny", path)
  return path


def _take(iterator, count: int) -> list[dict]:
  return [next(iterator) for _ in range(count)]


def _assert_batches_equal(first: list[dict], second: list[dict]) -> None:
  assert len(first) == len(second)
  for a, b in zip(first, second):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def _fingerprints(batches: list[dict]) -> collections.Counter:
  """Multiset of examples (image bytes + label), counting only valid ones in eval batches."""
  counts = collections.Counter()
  for batch in batches:
    valid = batch.get("valid", np.ones(len(batch["label"]), bool))
    for image, label in zip(batch["image"][valid], batch["label"][valid]):
      counts[(image.tobytes(), int(label))] += 1
  return counts


def test_dataset_info(data_dir):
  info = data.dataset_info("digits", data_dir)
  assert (info.num_classes, info.image_shape) == (10, (8, 8, 1))
  assert info.splits == {"train": 1438, "test": 359}
  assert info.features == ("image", "label")
  shapes = data.dataset_info("shapes/tiny", data_dir)
  assert shapes.features == ("image", "label", "mask", "boxes", "box_labels", "box_valid")
  assert (shapes.num_classes, shapes.image_shape) == (3, (32, 32, 3))


def test_train_batches_shapes_and_dtypes(data_dir):
  batch = next(
    data.train_iterator("shapes/tiny", split="train", batch_size=8, seed=0, data_dir=data_dir)
  )
  assert batch["image"].shape == (8, 32, 32, 3) and batch["image"].dtype == np.uint8
  assert batch["label"].dtype == np.int32 and batch["mask"].shape == (8, 32, 32)
  assert batch["boxes"].shape == (8, 4, 4) and batch["box_valid"].dtype == bool


def test_same_seed_same_batches(data_dir):
  def make(seed):
    return data.train_iterator("digits", split="train", batch_size=64, seed=seed, data_dir=data_dir)

  _assert_batches_equal(_take(make(3), 3), _take(make(3), 3))
  assert not np.array_equal(next(make(3))["label"], next(make(4))["label"])


@pytest.mark.parametrize("pk", [False, True])
def test_resume_from_state_yields_the_same_batches(data_dir, pk):
  kwargs = dict(split="train", batch_size=200, seed=7, data_dir=data_dir)
  if pk:
    kwargs.update(batch_size=40, classes_per_group=5, examples_per_class=4)
  original = data.train_iterator("digits", **kwargs)
  _take(original, 6)  # 1,200 of 1,438 examples: the next batches cross an epoch.
  state = json.loads(json.dumps(original.get_state()))
  expected = _take(original, 3)
  restored = data.train_iterator("digits", **kwargs)
  restored.set_state(state)
  _assert_batches_equal(_take(restored, 3), expected)


def test_worker_processes_yield_the_same_batches_and_resume(data_dir):
  kwargs = dict(split="train", batch_size=100, seed=5, data_dir=data_dir)
  expected = _take(data.train_iterator("digits", **kwargs), 5)
  with_workers = data.train_iterator("digits", worker_count=2, **kwargs)
  _assert_batches_equal(_take(with_workers, 3), expected[:3])
  state = json.loads(json.dumps(with_workers.get_state()))
  restored = data.train_iterator("digits", worker_count=2, **kwargs)
  restored.set_state(state)
  _assert_batches_equal(_take(restored, 2), expected[3:])


def test_epochs_are_reshuffled_and_cover_the_split(data_dir):
  first, second = _take(
    data.train_iterator("digits", split="train", batch_size=719, seed=0, data_dir=data_dir), 2
  )  # batch 719 = half.
  epoch = _take(
    data.train_iterator("digits", split="train", batch_size=1438, seed=0, data_dir=data_dir), 2
  )
  assert _fingerprints([first, second]) == _fingerprints(epoch[:1]) == _fingerprints(epoch[1:])
  assert not np.array_equal(epoch[0]["label"], epoch[1]["label"])


def test_processes_read_disjoint_shards_covering_the_split(data_dir):
  whole = _fingerprints(
    _take(
      data.train_iterator("digits", split="train", batch_size=1438, seed=0, data_dir=data_dir), 1
    )
  )
  shards = [
    _fingerprints(
      _take(
        data.train_iterator(
          "digits",
          split="train",
          batch_size=719,
          seed=0,
          data_dir=data_dir,
          process_index=index,
          process_count=2,
        ),
        1,
      )
    )
    for index in range(2)
  ]
  assert shards[0] + shards[1] == whole
  assert not set(shards[0]) & set(shards[1])


@pytest.mark.parametrize("process_count", [1, 3])
def test_eval_counts_every_example_exactly_once(data_dir, process_count):
  source = tfds.data_source("digits", split="test", data_dir=data_dir)
  expected = collections.Counter(
    (source[i]["image"].tobytes(), int(source[i]["label"])) for i in range(len(source))
  )
  per_process = [
    list(
      data.eval_iterator(
        "digits",
        split="test",
        batch_size=64,
        data_dir=data_dir,
        process_index=index,
        process_count=process_count,
      )
    )
    for index in range(process_count)
  ]
  # Every process runs the same number of steps, so multi-host eval stays in lockstep.
  assert len({len(batches) for batches in per_process}) == 1
  total = collections.Counter()
  for batches in per_process:
    assert all(b["image"].shape == (64, 8, 8, 1) for b in batches)
    total += _fingerprints(batches)
  assert total == expected
  assert sum(int(b["valid"].sum()) for bs in per_process for b in bs) == 359


def test_pk_batches_hold_p_classes_with_k_each(data_dir):
  def make():
    return data.train_iterator(
      "digits",
      split="train",
      batch_size=48,
      seed=1,
      data_dir=data_dir,
      classes_per_group=4,
      examples_per_class=3,
    )

  batches = _take(make(), 4)
  for batch in batches:
    for chunk in batch["label"].reshape(4, 4, 3):
      assert len(set(chunk[:, 0].tolist())) == 4
      assert (chunk == chunk[:, :1]).all()
  _assert_batches_equal(_take(make(), 4), batches)


@pytest.mark.parametrize(
  "kwargs, message",
  [
    (dict(split="validation"), "unknown split"),
    (dict(classes_per_group=8, examples_per_class=8), "larger than the batch"),
    (dict(classes_per_group=3, examples_per_class=3), "not a multiple"),
    (dict(classes_per_group=11, examples_per_class=2, batch_size=22), "need 11 classes"),
  ],
)
def test_bad_arguments_raise_one_line(data_dir, kwargs, message):
  kwargs = dict(dict(split="train", batch_size=32, seed=0, data_dir=data_dir), **kwargs)
  with pytest.raises(UsageError, match=message) as error:
    data.train_iterator("digits", **kwargs)
  assert "\n" not in str(error.value)


def test_unprepared_dataset_names_dataset_dir_and_remedy(tmp_path):
  with pytest.raises(UsageError) as error:
    data.train_iterator("mnist", split="train", batch_size=8, seed=0, data_dir=str(tmp_path))
  message = str(error.value)
  assert "mnist" in message and str(tmp_path) in message and "tfds build" in message
  assert "\n" not in message
  with pytest.raises(UsageError, match="unknown dataset"):
    data.dataset_info("no_such_dataset", str(tmp_path))


def test_a_data_dir_that_is_a_file_is_one_line(tmp_path):
  (tmp_path / "file").write_text("not a directory")
  with pytest.raises(UsageError, match="is a file: set --config.data_dir"):
    data.dataset_info("digits", str(tmp_path / "file"))


def test_a_truncated_split_is_found_before_training_and_named(tmp_path):
  data.dataset_info("digits", str(tmp_path))
  data.pipeline.check_readable("digits", ("train", "test"), str(tmp_path))
  (test_file,) = tmp_path.glob("digits/*/digits-test.array_record*")
  with open(test_file, "r+b") as f:
    f.truncate(test_file.stat().st_size // 2)
  with pytest.raises(UsageError) as error:
    data.pipeline.check_readable("digits", ("train", "test"), str(tmp_path))
  message = str(error.value)
  assert "split 'test' of digits" in message and str(test_file.parent) in message
  assert "delete" in message and "\n" not in message


@pytest.mark.parametrize(
  "name, image_shape, features",
  [
    ("mnist", (28, 28, 1), ("image", "label")),
    ("cifar100", (32, 32, 3), ("image", "label")),
    ("lfw", (250, 250, 3), ("image", "label")),
    ("imagenet2012", (256, 256, 3), ("image", "label")),
    ("oxford_iiit_pet", (256, 256, 3), ("image", "label", "mask")),
    ("voc", (384, 384, 3), ("image", "label", "boxes", "box_labels", "box_valid")),
  ],
)
def test_tfds_datasets_through_the_same_pipeline(name, image_shape, features):
  # mock_data backs tfds.data_source with random examples of the dataset's real features.
  with tfds.testing.mock_data(num_examples=6):
    info = data.dataset_info(name)
    assert (info.image_shape, info.features) == (image_shape, features)
    batch = next(data.train_iterator(name, split="train", batch_size=4, seed=0))
    evaluated = list(data.eval_iterator(name, split="train", batch_size=4))
  assert set(batch) == set(features)
  assert batch["image"].shape == (4, *image_shape) and batch["image"].dtype == np.uint8
  assert batch["label"].dtype == np.int32
  assert ((0 <= batch["label"]) & (batch["label"] < info.num_classes)).all()
  assert [int(b["valid"].sum()) for b in evaluated] == [4, 2]
  if "mask" in batch:
    assert batch["mask"].shape == (4, *image_shape[:2]) and batch["mask"].max() <= 2
  if "boxes" in batch:
    boxes = batch["boxes"][batch["box_valid"]]
    assert (boxes[:, 2:] > boxes[:, :2]).all() and (boxes >= 0).all()
    assert (boxes <= image_shape[0]).all()


def test_voc_boxes_follow_the_resize_and_centre_crop():
  adapter = adapters.Adapter(kind="voc", image_size=50, max_objects=3)
  example = {
    "image": np.zeros((100, 200, 3), np.uint8),
    "objects": {
      "bbox": np.array([[0.1, 0.5, 0.9, 1.0], [0.0, 0.0, 1.0, 0.1]]),
      "label": np.array([7, 3]),
    },
  }
  out = adapter(example)
  # Shorter side 100 -> 50 (scale 0.5), width 200 -> 100, centre crop from x = 25.
  np.testing.assert_allclose(out["boxes"][0], [25, 5, 50, 45])
  # The second box falls outside the crop and is dropped.
  assert out["box_valid"].tolist() == [True, False, False] and out["label"] == 7
  assert out["image"].shape == (50, 50, 3)


def test_pet_trimap_becomes_background_pet_border():
  adapter = adapters.Adapter(kind="pet")
  trimap = np.array([[1, 2, 3]], np.uint8)[..., None]
  out = adapter({"image": np.zeros((1, 3, 3), np.uint8), "label": 5, "segmentation_mask": trimap})
  assert out["mask"].tolist() == [[1, 0, 2]] and out["label"] == 5
