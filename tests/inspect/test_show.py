"""`cnnjax show KIND`: every kind on real workdirs trained for two or three steps (LeNet-5
classifier, U-Net segmentation, YOLO detection, triplet metric learning), and on SimCLR at
its initialisation, each writing a PNG with something on it; bad input as one-line errors
with exit status 2. The kinds of `config.show_at_end` drawn once at the end of a run, into
show/ and TensorBoard, and checked before it starts."""

import importlib.util
import io
import json
import pathlib
import struct

import numpy as np
import PIL.Image
import pytest
from tensorboardX.proto import event_pb2

from cnnjax import main
from cnnjax import train
from cnnjax.data import pipeline
from cnnjax.errors import UsageError
from cnnjax.inspect import show
from cnnjax.train import loop
from cnnjax.train.tasks import inputs

CONFIGS = pathlib.Path(__file__).parents[2] / "experiments" / "configs"
# What each workdir's task draws, and what it refuses.
EXPECTED = {
  "classifier": (
    "filters",
    "features",
    "receptive-field",
    "gradcam",
    "saliency",
    "predictions",
    "augment",
  ),
  "segmentation": ("filters", "features", "receptive-field", "predictions", "augment"),
  "detection": ("filters", "features", "receptive-field", "predictions", "augment"),
  "metric": ("filters", "features", "receptive-field", "neighbours", "augment"),
  "simclr": ("filters", "features", "receptive-field", "neighbours", "augment"),
}


def _config(name: str):
  spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _tiny(config, data_dir: str | None = None, **overrides):
  """`config` for a few steps, evaluated and checkpointed once, at the end."""
  config.num_epochs = 0.0
  config.num_steps = 2
  config.log_every = 1
  config.checkpoint_every = 2
  config.async_checkpoints = False
  config.progress = "lines"
  config.schedule.warmup_steps = 0
  for section in config.evals.values():
    section.every = 0
  if data_dir:
    config.data_dir = data_dir
  config.update_from_flattened_dict(overrides)
  return config


CLASSIFIER_AT_END = ("filters", "predictions", "gradcam")


def _classifier(data_dir):
  config = _tiny(_config("lenet_digits"), num_steps=3, checkpoint_every=3)
  config.show_at_end = CLASSIFIER_AT_END
  return config


def _segmentation(data_dir):
  config = _tiny(_config("unet_shapes"), data_dir, dataset="shapes/tiny", batch_size=16)
  config.model_kwargs = {"depth": 2, "width": 4}
  return config


def _detection(data_dir):
  config = _tiny(_config("yolo_shapes"), data_dir, dataset="shapes/tiny", batch_size=16)
  config.model_kwargs = {
    "backbone": "conv",
    "backbone_widths": (4, 8),
    "grid_size": 4,
    "num_boxes": 2,
    "head_width": 8,
    "hidden": 16,
    "dropout_rate": 0.0,
  }
  return config


def _metric(data_dir):
  config = _tiny(_config("triplet_digits"))
  config.metric.embedding_dim = 8
  return config


def _simclr(data_dir):
  config = _tiny(_config("simclr_digits"), batch_size=64)
  config.simclr.projection_dim = 8
  del config.evals["probe"]  # Its 100 epochs at the end are not what is tested here.
  config.best_metric = "knn/accuracy"
  return config


BUILD = {
  "classifier": _classifier,
  "segmentation": _segmentation,
  "detection": _detection,
  "metric": _metric,
  "simclr": _simclr,
}


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="session")
def workdirs(tmp_path_factory, data_dir):
  """Task -> its trained workdir, each trained on first use."""
  root = tmp_path_factory.mktemp("show")
  trained = {}

  def get(task: str) -> str:
    if task not in trained:
      workdir = str(root / task)
      train.run(BUILD[task](data_dir), workdir)
      trained[task] = workdir
    return trained[task]

  return get


def _untrained(config, workdir: str) -> show.Run:
  """A Run of `config` at its initialisation: what `load_run` builds, without training."""
  experiment = loop.Experiment(config, workdir)
  state = experiment.initial_state
  mean, std = inputs.normalization(config.input, config.dataset)
  return show.Run(
    task=experiment.task,
    variables={"params": state.params, "batch_stats": state.batch_stats},
    step=0,
    batches=lambda split, size: pipeline.eval_iterator(
      config.dataset, split=split, batch_size=size, data_dir=config.data_dir or None
    ),
    class_names=tuple(map(str, range(10))),
    mean=mean,
    std=std,
    workdir=workdir,
  )


@pytest.fixture(scope="session")
def runs(workdirs, data_dir, tmp_path_factory):
  """Task -> the show.Run of its workdir (restored once); SimCLR's is untrained."""
  loaded = {}

  def get(task: str) -> show.Run:
    if task not in loaded:
      if task == "simclr":  # Its two-view training step costs more to compile than it shows.
        loaded[task] = _untrained(_simclr(data_dir), str(tmp_path_factory.mktemp("simclr")))
      else:
        loaded[task] = main.load_run(workdirs(task))
    return loaded[task]

  return get


def _assert_picture(path: str) -> None:
  image = np.asarray(PIL.Image.open(path).convert("RGB"), np.float32)
  assert min(image.shape[:2]) >= 100, image.shape
  # Not blank: many distinct colours, and pixels that differ from the background.
  assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50, path
  assert np.mean(np.abs(image - np.median(image, axis=(0, 1)))) > 2.0, path


@pytest.mark.slow
@pytest.mark.parametrize("task", list(EXPECTED))
def test_every_kind_draws_a_picture_and_the_rest_are_refused(runs, tmp_path, task):
  run = runs(task)
  assert show.kinds_for(run.task) == EXPECTED[task]
  deepest = show._network(run).names(run.task.input_shape)[-1]
  for kind in show.KINDS:
    out = str(tmp_path / f"{kind}.png")
    if kind in EXPECTED[task]:
      # Every stage is drawn by default; one is enough beyond LeNet's four.
      stage = deepest if kind == "receptive-field" and task != "classifier" else None
      path = show.render(kind, run, out=out, n=4, k=3, stage=stage)
      assert path == out
      _assert_picture(path)
    else:
      with pytest.raises(UsageError) as error:
        show.render(kind, run, out=out, n=4)
      message = str(error.value)
      assert "\n" not in message and f"show {kind} needs" in message
      assert ", ".join(EXPECTED[task]) in message
      assert not pathlib.Path(out).exists()


def _cli(argv: list[str]) -> int:
  with pytest.raises(SystemExit) as exit_info:
    main.run_cli(["cnnjax", *argv])
  return exit_info.value.code


def _error(capsys, argv: list[str]) -> str:
  assert _cli(argv) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "Traceback" not in err, err
  return err


@pytest.mark.slow
def test_command_line_writes_the_default_path_from_config_json(capsys, workdirs):
  workdir = workdirs("classifier")
  assert (
    _cli(["show", "receptive-field", f"--workdir={workdir}", "--n=2", "--unit=4,28", "--stage=c3"])
    == 0
  )
  path = pathlib.Path(workdir) / "show" / "receptive-field.png"
  assert capsys.readouterr().out.strip() == str(path)
  _assert_picture(str(path))
  # --config gives the same experiment as the workdir's config.json.
  config = json.loads((pathlib.Path(workdir) / "config.json").read_text())
  assert config["model"] == "lenet5"
  out = pathlib.Path(workdir) / "mine.png"
  assert (
    _cli(
      [
        "show",
        "gradcam",
        f"--workdir={workdir}",
        "--n=2",
        f"--out={out}",
        f"--config={CONFIGS / 'lenet_digits.py'}",
      ]
    )
    == 0
  )
  _assert_picture(str(out))


def test_bad_input_is_one_line_naming_what_works(capsys, tmp_path, workdirs):
  metric = workdirs("metric")
  err = _error(capsys, ["show", "gradcam", f"--workdir={metric}"])
  assert "show gradcam needs a classifier" in err and "metric_learning run" in err
  assert "filters, features, receptive-field, neighbours, augment work there" in err
  classifier = workdirs("classifier")
  err = _error(capsys, ["show", "gradcam", f"--workdir={classifier}", "--stage=layer4"])
  assert "LeNet5 has no feature map 'layer4'; its feature maps are c1, s2, c3, s4" in err
  empty = tmp_path / "empty"
  empty.mkdir()
  err = _error(capsys, ["show", "filters", f"--workdir={empty}"])
  assert f"no checkpoint in --workdir {empty}; train it first" in err
  assert list(empty.iterdir()) == []
  err = _error(capsys, ["show", "gradcams", f"--workdir={classifier}"])
  assert "unknown show kind 'gradcams'; did you mean 'gradcam'?" in err
  err = _error(capsys, ["show", f"--workdir={classifier}"])
  assert "name one kind to show (filters, features, receptive-field" in err
  err = _error(capsys, ["show", "receptive-field", f"--workdir={classifier}", "--unit=3"])
  assert "--unit=3 is not ROW,COL" in err


def _images(workdir: str) -> list[tuple[int, str, np.ndarray]]:
  """(step, tag, [H, W, 3] pixels) of every image in the TensorBoard events of `workdir`."""
  found = []
  for path in sorted((pathlib.Path(workdir) / "tensorboard").glob("events.out.tfevents.*")):
    data, offset = path.read_bytes(), 0
    while offset < len(data):  # TFRecords: length, its CRC, the event, the event's CRC.
      (length,) = struct.unpack("<Q", data[offset : offset + 8])
      event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
      offset += length + 16
      for value in event.summary.value:
        if value.HasField("image"):
          png = io.BytesIO(value.image.encoded_image_string)
          found.append((event.step, value.tag, np.asarray(PIL.Image.open(png).convert("RGB"))))
  return found


@pytest.mark.slow
@pytest.mark.parametrize(
  "task, kinds", [("classifier", CLASSIFIER_AT_END), ("segmentation", ("filters", "augment"))]
)
def test_the_end_of_a_run_draws_show_at_end_into_show_and_tensorboard(workdirs, task, kinds):
  workdir = workdirs(task)  # The classifier's kinds are set; segmentation keeps the default.
  step = json.loads((pathlib.Path(workdir) / "summary.json").read_text())["step"]
  images = _images(workdir)
  assert [(s, tag) for s, tag, _ in images] == [(step, f"show/{kind}") for kind in kinds]
  for (_, _, pixels), kind in zip(images, kinds):
    path = pathlib.Path(workdir) / "show" / f"{kind}.png"
    _assert_picture(str(path))
    assert np.array_equal(pixels, np.asarray(PIL.Image.open(path).convert("RGB")))


@pytest.mark.slow
def test_a_preempted_run_draws_once_at_its_end(tmp_path, monkeypatch):
  config = _tiny(_config("lenet_digits"), num_steps=3, checkpoint_every=3)
  config.show_at_end = ("filters",)
  workdir = str(tmp_path / "run")
  stops = iter(["SIGTERM"])  # After the first step, as a preempted VM's signal.
  monkeypatch.setattr(loop, "_stop_requested", lambda poll: next(stops, None))
  assert train.run(config, workdir) == {"preempted": "SIGTERM", "step": 1}
  assert not (tmp_path / "run" / "show").exists() and _images(workdir) == []
  assert train.run(config, workdir)["step"] == 3
  train.run(config, workdir)  # Already trained: draws nothing again.
  assert [(step, tag) for step, tag, _ in _images(workdir)] == [(3, "show/filters")]
  _assert_picture(str(tmp_path / "run" / "show" / "filters.png"))


def test_a_kind_the_task_cannot_draw_is_refused_before_training(capsys, tmp_path):
  workdir = tmp_path / "run"
  config = _config("triplet_digits")
  config.show_at_end = ("filters", "gradcam")
  with pytest.raises(UsageError) as error:
    train.run(config, str(workdir))
  assert str(error.value) == (
    "config.show_at_end: show gradcam needs a classifier (task classification); task "
    "metric_learning draws filters, features, receptive-field, neighbours, augment."
  )
  lenet = f"--config={CONFIGS / 'lenet_digits.py'}"
  err = _error(capsys, ["train", lenet, f"--workdir={workdir}", "--config.show_at_end=filtres"])
  assert "unknown kind 'filtres'; did you mean 'filters'? task classification draws" in err
  err = _error(capsys, ["train", lenet, f"--workdir={workdir}", "--config.show_at_end=a,b"])
  assert """quote each kind: --config.show_at_end="'a','b'"; """ in err
  assert not workdir.exists()
