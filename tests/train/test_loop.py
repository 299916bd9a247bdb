"""The training loop on LeNet-5 and digits: step counts of sliced splits, bad input and
workdirs refused in one line without losing or creating anything, the NaN guard's step,
reduce-on-plateau for a metric to maximise, and the experiment fingerprint."""

import json
import os
import sys

import jax
import ml_collections
import numpy as np
import pytest

import fake_gcs
from cnnjax import main
from cnnjax.errors import UsageError
from cnnjax.train import loop
from cnnjax.train import transfer

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "configs"))
import lenet_digits  # noqa: E402
import simclr_digits  # noqa: E402
import triplet_digits  # noqa: E402

LENET = os.path.join(os.path.dirname(lenet_digits.__file__), "lenet_digits.py")
DIGITS = {"train": 1438, "test": 359}


def _lenet(**overrides):
  """LeNet-5 on digits for a few steps, evaluated and checkpointed only when asked."""
  config = lenet_digits.get_config()
  config.num_epochs = 0.0
  config.num_steps = 3
  config.batch_size = 64
  config.log_every = 1
  config.async_checkpoints = False
  config.progress = "lines"
  config.update_from_flattened_dict(overrides)
  return config


def _records(workdir) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def _cli_error(capsys, argv: list[str]) -> str:
  with pytest.raises(SystemExit) as exit_info:
    main.run_cli(["cnnjax", *argv])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "Traceback" not in err, err
  return err


@pytest.mark.parametrize(
  "split, examples",
  [
    ("train", DIGITS["train"]),
    ("train[:50%]", DIGITS["train"] // 2),
    ("train+test", DIGITS["train"] + DIGITS["test"]),
    ("train[:100]+test[:10%]", 100 + 36),
  ],
)
def test_epochs_count_the_examples_of_the_sliced_split(split, examples):
  config = _lenet(num_steps=0, num_epochs=2.0, train_split=split)
  assert loop.Experiment(config, "unused").num_steps == -(-2 * examples // 64)


def test_an_unknown_train_split_is_one_line():
  config = _lenet(num_steps=0, num_epochs=1.0, train_split="validation")
  with pytest.raises(
    UsageError, match="unknown split 'validation' of digits: use one of test, train"
  ):
    loop.Experiment(config, "unused")


@pytest.mark.parametrize("override", ["--config.num_steps=-3", "--config.num_epochs=-1"])
def test_negative_lengths_are_refused(capsys, tmp_path, override):
  err = _cli_error(capsys, ["train", f"--config={LENET}", f"--workdir={tmp_path / 'w'}", override])
  assert "must be positive" in err and override.split(".")[1].split("=")[0] in err
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("command", ["train", "eval"])
def test_workdir_under_a_file_is_one_line(capsys, tmp_path, command):
  a_file = tmp_path / "file"
  a_file.write_text("not a directory")
  err = _cli_error(capsys, [command, f"--config={LENET}", f"--workdir={a_file / 'run'}"])
  assert f"lies under {a_file}, which is a file" in err


def test_eval_of_a_workdir_without_checkpoints_creates_nothing(capsys, tmp_path):
  err = _cli_error(capsys, ["eval", f"--config={LENET}", f"--workdir={tmp_path / 'missing'}"])
  assert "no checkpoint" in err
  assert not (tmp_path / "missing").exists()
  (tmp_path / "empty").mkdir()
  assert "no checkpoint" in _cli_error(
    capsys, ["eval", f"--config={LENET}", f"--workdir={tmp_path / 'empty'}"]
  )
  assert list((tmp_path / "empty").iterdir()) == []


@pytest.mark.parametrize(
  "overrides, message",
  [
    (
      {"best_metric": "test/acc"},
      "best_metric 'test/acc' is no evaluator's metric; did you mean 'test/accuracy'",
    ),
    ({"best_metric": "accuracy"}, "choose one of test/accuracy, test/top5_accuracy"),
    (
      {"evals.test.kind": "mIoU"},
      r"kind 'mIoU' is unknown; did you mean 'miou'\? task "
      "Classification works with accuracy",
    ),
    (
      {"evals.test.kind": "retrieval"},
      "needs what task Classification's eval step does not give; choose one of accuracy",
    ),
    ({"evals.test.every": -5}, "every must be a whole number of steps >= 0"),
    ({"evals.test.k": 3}, "has no key 'k'; kind 'accuracy' takes kind, split, every"),
    (
      {"eval_every": 100},
      r"config.eval_every is now config.evals.NAME.every \(e.g. "
      r"evals.test.every\)",
    ),
  ],
)
def test_bad_evaluators_are_one_line_errors_before_anything_runs(tmp_path, overrides, message):
  config = _lenet()
  with config.unlocked():
    for key, value in overrides.items():
      section = config
      *parents, name = key.split(".")
      for parent in parents:
        section = section[parent]
      section[name] = value
  with pytest.raises(UsageError, match=message) as raised:
    loop.run(config, str(tmp_path / "run"))
  assert "\n" not in str(raised.value)
  assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_nonfinite_loss_names_the_step_as_progress_counts_it(tmp_path):
  # An infinite rate makes the first update non-finite: the loss of step 2 is NaN.
  config = _lenet(
    num_steps=4,
    **{
      "schedule.name": "constant",
      "schedule.learning_rate": float("inf"),
      "schedule.warmup_steps": 0,
      "optimizer.name": "sgd",
      "optimizer.weight_decay": 0.0,
    },
  )
  with pytest.raises(UsageError, match="NaN/Inf at step 2; no checkpoint was saved"):
    loop.run(config, str(tmp_path))
  assert [r["step"] for r in _records(tmp_path) if r["split"] == "train"] == [1]


@pytest.mark.slow
def test_plateau_decays_a_stalled_accuracy(tmp_path):
  # A learning rate too small to move the accuracy: it stalls from the first evaluation.
  config = _lenet(
    num_steps=5,
    best_metric="test/accuracy",
    best_mode="max",
    **{"evals.test.every": 1},
    **{
      "schedule.name": "plateau",
      "schedule.learning_rate": 1e-9,
      "schedule.warmup_steps": 0,
      "schedule.patience": 2,
    },
  )
  loop.run(config, str(tmp_path))
  rates = [r["learning_rate"] for r in _records(tmp_path) if r["split"] == "train"]
  accuracies = [r["accuracy"] for r in _records(tmp_path) if r["split"] == "test"]
  assert len(set(accuracies)) == 1
  # Evaluations after steps 2 and 3 do not improve: from step 4 on the rate is divided by 10.
  assert rates == pytest.approx([1e-9, 1e-9, 1e-9, 1e-10, 1e-10])


@pytest.mark.slow
def test_fingerprint_ignores_evaluation_only_settings():
  def fingerprint(module, **changes):
    config = module.get_config("local") if module is not lenet_digits else module.get_config()
    for key, value in changes.items():
      section, name = key.split(".")
      config[section][name] = ml_collections.ConfigDict(value) if isinstance(value, dict) else value
    return loop.Experiment(config, "unused").fingerprint()

  assert fingerprint(triplet_digits) == fingerprint(
    triplet_digits, **{"evals.test": {"kind": "retrieval", "split": "train", "every": 5, "k": 7}}
  )
  assert fingerprint(simclr_digits) == fingerprint(
    simclr_digits,
    **{"evals.probe": {"kind": "linear_probe", "split": "test", "every": 0, "epochs": 3}},
  )
  assert fingerprint(triplet_digits) != fingerprint(triplet_digits, **{"metric.distance": "cosine"})
  assert fingerprint(lenet_digits) != fingerprint(lenet_digits, **{"input.size": 36})


def test_remote_workdir_stays_remote(tmp_path, monkeypatch):
  store = fake_gcs.install(monkeypatch)
  monkeypatch.chdir(tmp_path)
  directory = loop._check_workdir("gs://bucket/run", train=True)
  assert str(directory) == "gs://bucket/run"
  with pytest.raises(UsageError, match="no checkpoint in --workdir gs://bucket/run"):
    loop._check_workdir("gs://bucket/run", train=False)
  assert store == {} and list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_train_scalars_are_means_over_the_log_interval(tmp_path):
  every_step = _lenet(num_steps=6, log_every=1)
  loop.run(every_step, str(tmp_path / "every"))
  per_step = [r for r in _records(tmp_path / "every") if r["split"] == "train"]
  loop.run(_lenet(num_steps=6, log_every=3), str(tmp_path / "three"))
  intervals = [r for r in _records(tmp_path / "three") if r["split"] == "train"]
  assert [r["step"] for r in intervals] == [3, 6]
  for record, steps in zip(intervals, (per_step[:3], per_step[3:])):
    for name in ("loss", "accuracy", "grad_norm"):
      assert record[name] == pytest.approx(np.mean([r[name] for r in steps]), rel=1e-6)


@pytest.mark.slow
def test_a_finished_run_rerun_appends_nothing_and_eval_names_its_checkpoint(tmp_path, capsys):
  workdir = str(tmp_path / "run")
  summary = loop.run(_lenet(), workdir)
  records = _records(workdir)
  assert loop.run(_lenet(), workdir) == summary
  assert _records(workdir) == records
  assert "already trained to step 3" in capsys.readouterr().err
  assert loop.evaluate(_lenet(), workdir)["test/accuracy"] == summary["test/accuracy"]
  assert "evaluating checkpoint 3" in capsys.readouterr().err
  assert _records(workdir) == records
  assert len(os.listdir(os.path.join(workdir, "tensorboard"))) == 1


@pytest.mark.slow
def test_config_is_recorded_and_resumed_changes_go_to_its_history(tmp_path, capsys):
  workdir = str(tmp_path / "run")
  loop.run(_lenet(num_steps=2), workdir)
  with open(os.path.join(workdir, "config.json")) as f:
    recorded = json.load(f)
  assert recorded["model"] == "lenet5" and recorded["num_steps"] == 2
  loop.run(_lenet(num_steps=3, **{"schedule.learning_rate": 0.01}), workdir)
  with open(os.path.join(workdir, "config_history.jsonl")) as f:
    history = [json.loads(line) for line in f]
  assert len(history) == 1 and history[0]["step"] == 2
  assert history[0]["changed"] == {
    "num_steps": [2, 3],
    "schedule.learning_rate": [recorded["schedule.learning_rate"], 0.01],
  }
  assert "config changed at step 2: num_steps 2 -> 3" in capsys.readouterr().err


def test_a_missing_dataset_fails_before_the_workdir_exists(capsys, tmp_path):
  err = _cli_error(
    capsys,
    [
      "train",
      "--config=experiments/configs/resnet_cifar10.py:resnet20",
      f"--workdir={tmp_path / 'w'}",
      f"--config.data_dir={tmp_path / 'd'}",
    ],
  )
  assert "not prepared" in err and "--config.data_dir" in err
  assert not (tmp_path / "w").exists()


def test_an_indivisible_eval_batch_names_its_key():
  with pytest.raises(UsageError, match="eval_batch_size 33 is not divisible"):
    loop.Experiment(_lenet(eval_batch_size=33), "unused")


def _corrupt_every_checkpoint(workdir: str) -> list[str]:
  steps = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  for step in steps:
    for root, _, files in os.walk(os.path.join(workdir, "checkpoints", step, "state")):
      for name in files:
        with open(os.path.join(root, name), "wb") as f:
          f.write(b"garbage")
  return steps


@pytest.mark.slow
def test_unrestorable_checkpoints_are_never_trained_over(tmp_path):
  workdir = str(tmp_path / "run")
  loop.run(_lenet(num_steps=4, checkpoint_every=2), workdir)
  steps = _corrupt_every_checkpoint(workdir)
  with pytest.raises(UsageError, match="config.restart=True.*nothing was deleted"):
    loop.run(_lenet(num_steps=6, checkpoint_every=2), workdir)
  with pytest.raises(UsageError, match="can be restored.*nothing to evaluate") as raised:
    loop.evaluate(_lenet(num_steps=6, checkpoint_every=2), workdir)
  assert "restart" not in str(raised.value)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == steps
  # Asked to, the run sets them aside, whole, and starts over.
  summary = loop.run(_lenet(num_steps=6, checkpoint_every=2, restart=True), workdir)
  assert summary["step"] == 6
  aside = [name for name in os.listdir(workdir) if name.startswith("checkpoints.set-aside")]
  assert len(aside) == 1
  assert sorted(n for n in os.listdir(os.path.join(workdir, aside[0])) if n.isdigit()) == steps
  assert [r["step"] for r in _records(workdir) if r["split"] == "train"] == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_a_changed_optimizer_is_refused_unless_asked_and_keeps_the_parameters(tmp_path):
  workdir = str(tmp_path / "run")
  loop.run(_lenet(num_steps=2), workdir)
  trained = transfer.load_source_workdir(workdir)
  changed = {"optimizer.clip_norm": 1.0}
  with pytest.raises(UsageError, match="new_optimizer=True"):
    loop.run(_lenet(num_steps=2, **changed), workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2"]
  # Asked to, it keeps the parameters (2 steps done: it trains none) and a fresh optimizer.
  summary = loop.run(_lenet(num_steps=2, new_optimizer=True, **changed), workdir)
  assert summary["step"] == 2
  for a, b in zip(jax.tree.leaves(trained), jax.tree.leaves(transfer.load_source_workdir(workdir))):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_profile_steps_write_a_trace_tensorboard_opens(tmp_path):
  loop.run(_lenet(num_steps=3, profile_steps=(1, 2)), str(tmp_path))
  traces = list((tmp_path / "tensorboard" / "plugins" / "profile").glob("*/*.xplane.pb"))
  assert len(traces) == 1


@pytest.mark.parametrize("steps", [(3,), (2, 1), (-1, 2)])
def test_bad_profile_steps_are_one_line_before_the_workdir_exists(tmp_path, steps):
  with pytest.raises(UsageError, match="profile_steps must be two steps A,B"):
    loop.run(_lenet(profile_steps=steps), str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()
