"""The FaceNet config on LFW: P x K batches that LFW can fill, two steps on mock LFW data."""

import importlib.util
import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.core import splits as splits_lib

from cnnjax import train
from cnnjax.train import tasks

CONFIGS = pathlib.Path(__file__).parents[2] / "experiments" / "configs"


def _facenet(arg: str | None = None):
  spec = importlib.util.spec_from_file_location("facenet_lfw", CONFIGS / "facenet_lfw.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module, module.get_config(arg)


def test_facenet_batches_are_p_x_k_on_its_devices():
  module, config = _facenet()
  task = tasks.create(config, tasks.DataInfo(5749, (250, 250, 3), {"train": 13233}))
  # Only about 19 LFW identities have 40 faces; far more than P = 56 have 4.
  assert task.sampler_kwargs_for(module.DEVICES) == {
    "classes_per_group": module.IDENTITIES_PER_DEVICE,
    "examples_per_class": 4,
  }
  assert config.batch_size == 1792


def _mock_lfw_source(builder, split, **kwargs):
  """40 LFW-like examples: identities 0-8 with 4 faces each, then two of 0 and two of 1."""
  del kwargs
  rng = np.random.default_rng(0)
  people = [p for p in range(9) for _ in range(4)] + [0, 0, 1, 1]
  examples = [
    {"image": rng.integers(0, 256, (250, 250, 3), np.uint8), "label": f"person_{p}".encode()}
    for p in people
  ]
  split_info = {
    "train": splits_lib.SplitInfo(name="train", shard_lengths=[len(examples)], num_bytes=0)
  }
  return [
    example
    for part in tfds.core.ReadInstruction.from_spec(split).to_absolute(split_info)
    for example in examples[part.from_ : part.to]
  ]


@pytest.mark.slow
def test_facenet_config_runs_two_steps_on_mock_lfw(tmp_path):
  _, config = _facenet()
  # The config's data, splits, K and loss; a narrow ResNet-50 on small crops, and one
  # identity per device (8 x 1 x 4) so that 9 mock identities fill the batches.
  config.model_kwargs = {"width": 4, "stage_sizes": (1, 1, 1, 1)}
  config.input.size = 32
  config.batch_size = 32
  config.num_steps = 2
  config.schedule.warmup_steps = 1
  config.log_every = 1
  config.checkpoint_every = 2
  config.async_checkpoints = False
  config.progress = "lines"
  with tfds.testing.mock_data(as_data_source_fn=_mock_lfw_source):
    summary = train.run(config, str(tmp_path))
  assert summary["step"] == 2 and summary["test/count"] == 4
  assert 0.0 <= summary["test/verification_accuracy"] <= 1.0
