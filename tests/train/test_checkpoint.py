"""Checkpoints: fallback past an unreadable one, refusal of another experiment's workdir, NaN
guard, the fingerprint file written whole, and remote workdirs kept remote."""

import glob
import json
import os

import jax
import numpy as np
import optax
import pytest

import fake_gcs
import train_helpers as helpers
from cnnjax.errors import UsageError
from cnnjax.train import checkpoint
from cnnjax.train import parallel
from cnnjax.train import state as state_lib


def _state(value: float):
  params = {"dense": {"kernel": np.full((3, 2), value, np.float32)}}
  return state_lib.create_state({"params": params, "batch_stats": {}}, optax.sgd(0.1),
                                optax.contrib.reduce_on_plateau())


def _abstract(state):
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype,
                                                     sharding=sharding), state)


def test_unreadable_latest_checkpoint_falls_back(tmp_path, caplog):
  checkpointer = checkpoint.Checkpointer(str(tmp_path), keep=3, async_save=False)
  for step in (1, 2):
    checkpointer.save(step, _state(float(step)), {"iterator": {"position": step}})
  checkpointer.close()
  for path in glob.glob(str(tmp_path / "checkpoints" / "2" / "state" / "**" / "*"),
                        recursive=True):
    if os.path.isfile(path):
      with open(path, "wb") as f:
        f.write(b"garbage")
  checkpointer = checkpoint.Checkpointer(str(tmp_path), keep=3, async_save=False)
  step, state, data = checkpointer.restore_latest(_abstract(_state(0.0)))
  checkpointer.close()
  assert step == 1 and data == {"iterator": {"position": 1}}
  np.testing.assert_array_equal(state.params["dense"]["kernel"], np.full((3, 2), 1.0))
  assert "unreadable" in caplog.text


def test_workdir_of_another_experiment_is_refused(tmp_path):
  checkpoint.check_fingerprint(str(tmp_path), {"model": "lenet5", "params": {"w": [3, 2]}})
  checkpoint.check_fingerprint(str(tmp_path), {"model": "lenet5", "params": {"w": [3, 2]}})
  with pytest.raises(UsageError, match="another experiment.*model"):
    checkpoint.check_fingerprint(str(tmp_path), {"model": "resnet18", "params": {"w": [3, 2]}})


def test_nonfinite_loss_freezes_state_and_names_the_step():
  config = helpers.tiny_config("classification", **{"schedule.learning_rate": 1e12,
                                                    "optimizer.weight_decay": 0.0})
  task, tx, schedule, rng, state = helpers.initial_state(config)
  runner = parallel.Runner("shard_map", jax.devices()[:1])
  step = runner.compile(state_lib.make_train_step(task, tx, schedule, rng),
                        in_specs=(parallel.REPLICATED, parallel.SHARDED),
                        out_specs=(parallel.REPLICATED, parallel.REPLICATED))
  state = runner.replicate(state)
  history = []
  for batch in helpers.batches(6, config.batch_size):
    history.append(runner.to_host(state.params, parallel.REPLICATED))
    state = step(state, runner.shard_batch(batch))[0]
  bad = int(runner.to_host(state.nonfinite_step, parallel.REPLICATED))
  assert 0 <= bad < 6
  final = runner.to_host(state.params, parallel.REPLICATED)
  jax.tree.map(np.testing.assert_array_equal, final, history[bad])
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(final))


def test_fingerprint_ignores_keys_only_one_side_has(tmp_path):
  # A workdir fingerprinted by an older version with more keys ("metric") stays usable.
  checkpoint.check_fingerprint(str(tmp_path), {"model": "lenet5", "metric": None, "params": {}})
  checkpoint.check_fingerprint(str(tmp_path), {"model": "lenet5", "params": {}})
  with pytest.raises(UsageError, match=r"differs in model\)"):
    checkpoint.check_fingerprint(str(tmp_path), {"model": "vgg11", "params": {}})


def test_fingerprint_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
  path_type = type(checkpoint.workdir_path(tmp_path))
  write_text = path_type.write_text

  def crash_half_way(self, text, *args, **kwargs):
    write_text(self, text[:len(text) // 2])
    raise OSError("disk full")

  monkeypatch.setattr(path_type, "write_text", crash_half_way)
  with pytest.raises(OSError, match="disk full"):
    checkpoint.check_fingerprint(str(tmp_path), {"model": "lenet5"})
  assert list(tmp_path.iterdir()) == []
  monkeypatch.undo()
  checkpoint.check_fingerprint(str(tmp_path), {"model": "lenet5"})
  assert json.loads((tmp_path / checkpoint.FINGERPRINT_FILE).read_text()) == {"model": "lenet5"}
  assert [p.name for p in tmp_path.iterdir()] == [checkpoint.FINGERPRINT_FILE]


def test_fingerprint_check_without_claim_writes_nothing(tmp_path):
  checkpoint.check_fingerprint(str(tmp_path), {"model": "lenet5"}, claim=False)
  assert list(tmp_path.iterdir()) == []


def test_reading_a_missing_checkpoint_directory_creates_nothing(tmp_path):
  workdir = tmp_path / "never_trained"
  assert not checkpoint.has_checkpoint(str(workdir))
  checkpointer = checkpoint.Checkpointer(str(workdir), create=False)
  assert checkpointer.all_steps() == []
  assert checkpointer.restore_latest(_abstract(_state(0.0))) is None
  checkpointer.close()
  assert not workdir.exists()


def test_local_workdirs_are_absolute_and_remote_ones_stay_remote(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert str(checkpoint.workdir_path("runs/a")) == str(tmp_path / "runs" / "a")
  assert str(checkpoint.workdir_path("gs://bucket/runs/a")) == "gs://bucket/runs/a"
  opened = []

  class Manager:
    def __init__(self, directory, **kwargs):
      del kwargs
      opened.append(directory)

  monkeypatch.setattr(checkpoint.ocp, "CheckpointManager", Manager)
  assert str(checkpoint.Checkpointer("gs://bucket/runs/a").directory) == \
      "gs://bucket/runs/a/checkpoints"
  assert str(checkpoint.Checkpointer("runs/b").directory) == \
      str(tmp_path / "runs" / "b" / "checkpoints")
  assert [str(d) for d in opened] == ["gs://bucket/runs/a/checkpoints",
                                      str(tmp_path / "runs" / "b" / "checkpoints")]
  assert list(tmp_path.iterdir()) == []


def test_remote_fingerprint_is_written_remotely(tmp_path, monkeypatch):
  store = fake_gcs.install(monkeypatch)
  monkeypatch.chdir(tmp_path)
  checkpoint.check_fingerprint("gs://bucket/run", {"model": "lenet5"})
  assert [key for key in store if key.endswith(checkpoint.FINGERPRINT_FILE)] == [
      "gs://bucket/run/experiment.json"]
  with pytest.raises(UsageError, match="another experiment"):
    checkpoint.check_fingerprint("gs://bucket/run", {"model": "vgg11"})
  assert list(tmp_path.iterdir()) == []
