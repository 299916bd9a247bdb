"""Checkpoints: fallback past an unreadable one, refusal of another experiment's workdir, NaN guard."""

import glob
import os

import jax
import numpy as np
import optax
import pytest

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
