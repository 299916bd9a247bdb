"""Checkpoints: fallback past an unreadable or corrupted one, no silent restart over
unrestorable ones, a changed model or optimizer, the best checkpoint across a resume, one
trainer per workdir, a full disk, refusal of another experiment's workdir, NaN guard, the
fingerprint file written whole, and remote workdirs kept remote."""

import errno
import functools
import glob
import json
import os
import signal
import subprocess
import sys
import time
import types
from typing import Any

import flax.struct
import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import fake_gcs
import train_helpers as helpers
from cnnjax.errors import UsageError
from cnnjax.train import checkpoint
from cnnjax.train import parallel
from cnnjax.train import state as state_lib


def _state(value: float):
  params = {"dense": {"kernel": np.full((3, 2), value, np.float32)}}
  return state_lib.create_state(
    {"params": params, "batch_stats": {}}, optax.sgd(0.1), optax.contrib.reduce_on_plateau()
  )


def _abstract(state):
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype, sharding=sharding), state
  )


def test_unreadable_latest_checkpoint_falls_back(tmp_path, caplog):
  checkpointer = checkpoint.Checkpointer(str(tmp_path), keep=3, async_save=False)
  for step in (1, 2):
    checkpointer.save(step, _state(float(step)), {"iterator": {"position": step}})
  checkpointer.close()
  for path in glob.glob(str(tmp_path / "checkpoints" / "2" / "state" / "**" / "*"), recursive=True):
    if os.path.isfile(path):
      with open(path, "wb") as f:
        f.write(b"garbage")
  checkpointer = checkpoint.Checkpointer(str(tmp_path), keep=3, async_save=False)
  step, state, data, new_optimizer = checkpointer.restore_latest(_abstract(_state(0.0)))
  checkpointer.close()
  assert step == 1 and data == {"iterator": {"position": 1}} and not new_optimizer
  np.testing.assert_array_equal(state.params["dense"]["kernel"], np.full((3, 2), 1.0))
  assert "unreadable" in caplog.text


def test_workdir_of_another_experiment_is_refused(tmp_path):
  checkpoint.check_fingerprint(str(tmp_path), {"model": "lenet5", "params": {"w": [3, 2]}})
  (tmp_path / "checkpoints" / "1").mkdir(parents=True)
  checkpoint.check_fingerprint(str(tmp_path), {"model": "lenet5", "params": {"w": [3, 2]}})
  with pytest.raises(UsageError, match="another experiment.*model"):
    checkpoint.check_fingerprint(str(tmp_path), {"model": "resnet18", "params": {"w": [3, 2]}})


def test_workdirs_fingerprinted_with_old_model_field_names_still_match(tmp_path):
  old = {"model": "unet_same", "model_kwargs": {"depth": 3, "base_width": 16}}
  checkpoint.check_fingerprint(str(tmp_path), old)
  (tmp_path / "checkpoints" / "1").mkdir(parents=True)
  checkpoint.check_fingerprint(
    str(tmp_path), {"model": "unet_same", "model_kwargs": {"depth": 3, "width": 16}}
  )
  with pytest.raises(UsageError, match="another experiment.*model_kwargs"):
    checkpoint.check_fingerprint(
      str(tmp_path), {"model": "unet_same", "model_kwargs": {"depth": 3, "width": 8}}
    )


def test_nonfinite_loss_freezes_state_and_names_the_step():
  config = helpers.tiny_config(
    "classification", **{"schedule.learning_rate": 1e12, "optimizer.weight_decay": 0.0}
  )
  task, tx, schedule, rng, state = helpers.initial_state(config)
  runner = parallel.Runner("shard_map", jax.devices()[:1])
  step = runner.compile(
    state_lib.make_train_step(task, tx, schedule, rng),
    in_specs=(parallel.REPLICATED, parallel.SHARDED),
    out_specs=(parallel.REPLICATED, parallel.REPLICATED),
  )
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
  (tmp_path / "checkpoints" / "1").mkdir(parents=True)
  checkpoint.check_fingerprint(str(tmp_path), {"model": "lenet5", "params": {}})
  with pytest.raises(UsageError, match=r"differs in model\)"):
    checkpoint.check_fingerprint(str(tmp_path), {"model": "vgg11", "params": {}})


def test_fingerprint_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
  path_type = type(checkpoint.workdir_path(tmp_path))
  write_text = path_type.write_text

  def crash_half_way(self, text, *args, **kwargs):
    write_text(self, text[: len(text) // 2])
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
  assert (
    str(checkpoint.Checkpointer("gs://bucket/runs/a").directory) == "gs://bucket/runs/a/checkpoints"
  )
  assert str(checkpoint.Checkpointer("runs/b").directory) == str(
    tmp_path / "runs" / "b" / "checkpoints"
  )
  assert [str(d) for d in opened] == [
    "gs://bucket/runs/a/checkpoints",
    str(tmp_path / "runs" / "b" / "checkpoints"),
  ]
  assert list(tmp_path.iterdir()) == []


def test_remote_fingerprint_is_written_remotely(tmp_path, monkeypatch):
  store = fake_gcs.install(monkeypatch)
  monkeypatch.chdir(tmp_path)
  checkpoint.check_fingerprint("gs://bucket/run", {"model": "lenet5"})
  assert [key for key in store if key.endswith(checkpoint.FINGERPRINT_FILE)] == [
    "gs://bucket/run/experiment.json"
  ]
  (checkpoint.workdir_path("gs://bucket/run") / "checkpoints" / "1" / "state").write_text("")
  with pytest.raises(UsageError, match="another experiment"):
    checkpoint.check_fingerprint("gs://bucket/run", {"model": "vgg11"})
  assert list(tmp_path.iterdir()) == []


@functools.cache
def _tiny_state(optimizer: str):
  """The host train state of a tiny ResNet with `optimizer`: sgd, adamw or sgd+clip."""
  overrides = {
    "sgd": {},
    "adamw": {"optimizer.name": "adamw"},
    "sgd+clip": {"optimizer.clip_norm": 1.0},
  }[optimizer]
  return helpers.initial_state(helpers.tiny_config(**overrides))[-1]


def _shifted(state, by: float):
  """`state` with `by` added to every float leaf, and its step set to 7."""

  def shift(x):
    x = np.asarray(x)
    return (x + by).astype(x.dtype) if np.issubdtype(x.dtype, np.floating) else x

  return jax.tree.map(shift, state).replace(step=np.asarray(7, np.int32))


def _corrupt_state_files(workdir, step: int) -> None:
  for path in glob.glob(
    str(workdir / "checkpoints" / str(step) / "state" / "**" / "*"), recursive=True
  ):
    if os.path.isfile(path):
      with open(path, "wb") as f:
        f.write(b"garbage")


def test_unrestorable_checkpoints_raise_and_are_only_set_aside_on_request(tmp_path):
  checkpointer = checkpoint.Checkpointer(str(tmp_path), keep=3, async_save=False)
  for step in (1, 2):
    checkpointer.save(step, _state(float(step)), {"iterator": {}})
  checkpointer.close()
  for step in (1, 2):
    _corrupt_state_files(tmp_path, step)
  checkpointer = checkpoint.Checkpointer(str(tmp_path), keep=3, async_save=False)
  with pytest.raises(checkpoint.NothingRestorable) as raised:
    checkpointer.restore_latest(_abstract(_state(0.0)))
  checkpointer.close()
  message = str(raised.value)
  assert "\n" not in message and isinstance(raised.value, UsageError)
  assert message.startswith(
    f"no checkpoint in {tmp_path / 'checkpoints'} can be restored (step 2 "
    "is unreadable (JSONDecodeError"
  )
  assert "; step 1 is unreadable (" in message
  assert message.endswith(
    "set --config.restart=True to set them aside and start over, or choose "
    "a new --workdir; nothing was deleted."
  )
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]

  aside = checkpoint.set_aside(str(tmp_path))
  assert aside.name.startswith("checkpoints.set-aside-") and aside.name.endswith("Z")
  assert sorted(n for n in os.listdir(aside) if n.isdigit()) == ["1", "2"]
  assert not (tmp_path / "checkpoints").exists()
  assert checkpoint.set_aside(str(tmp_path)) is None
  checkpointer = checkpoint.Checkpointer(str(tmp_path), async_save=False)
  assert checkpointer.restore_latest(_abstract(_state(0.0))) is None
  checkpointer.close()


@pytest.mark.parametrize(
  "stored, target", [("sgd", "adamw"), ("sgd", "sgd+clip"), ("adamw", "sgd")]
)
def test_a_changed_optimizer_is_refused_from_metadata_or_started_afresh(
  tmp_path, monkeypatch, stored, target
):
  saved = _shifted(_tiny_state(stored), 0.5)
  checkpointer = checkpoint.Checkpointer(str(tmp_path), async_save=False)
  checkpointer.save(7, saved, {"iterator": {"position": 7}})
  checkpointer.close()
  initial = _tiny_state(target)

  checkpointer = checkpoint.Checkpointer(str(tmp_path), async_save=False)
  # The refusal comes from the metadata alone: no array is read.
  with monkeypatch.context() as patch:
    patch.setattr(checkpointer.manager, "restore", lambda *args, **kwargs: 1 / 0)
    with pytest.raises(
      UsageError,
      match=r"hold another optimizer's state \(differs in "
      r"opt_state/.*: the optimizer changed; set --config.new_optimizer=True to "
      r"keep the parameters and BatchNorm statistics and start a fresh "
      r"optimizer state\.$",
    ) as raised:
      checkpointer.restore_latest(_abstract(initial))
  assert "params/" not in str(raised.value)

  restored = checkpointer.restore_latest(_abstract(initial), initial, new_optimizer=True)
  checkpointer.close()
  assert restored.new_optimizer and restored.step == 7
  assert restored.data == {"iterator": {"position": 7}}
  assert int(restored.state.step) == 7
  for name in ("params", "batch_stats", "plateau"):
    jax.tree.map(np.testing.assert_array_equal, getattr(restored.state, name), getattr(saved, name))
  assert jax.tree.structure(restored.state.opt_state) == jax.tree.structure(initial.opt_state)
  jax.tree.map(np.testing.assert_array_equal, restored.state.opt_state, initial.opt_state)


def test_new_optimizer_keeps_a_fitting_optimizer_state(tmp_path):
  saved = _shifted(_tiny_state("sgd"), 0.25)  # Momentum traces of 0.25, not the initial 0.
  checkpointer = checkpoint.Checkpointer(str(tmp_path), async_save=False)
  checkpointer.save(7, saved, {"iterator": {}})
  checkpointer.close()
  initial = _tiny_state("sgd")
  checkpointer = checkpoint.Checkpointer(str(tmp_path), async_save=False)
  restored = checkpointer.restore_latest(_abstract(initial), initial, new_optimizer=True)
  checkpointer.close()
  assert not restored.new_optimizer
  jax.tree.map(np.testing.assert_array_equal, restored.state.opt_state, saved.opt_state)


def test_another_model_is_refused_even_with_a_new_optimizer(tmp_path):
  checkpointer = checkpoint.Checkpointer(str(tmp_path), async_save=False)
  checkpointer.save(1, _state(1.0), {"iterator": {}})
  checkpointer.close()
  params = {"dense": {"kernel": np.zeros((3, 4), np.float32)}}
  other = state_lib.create_state(
    {"params": params, "batch_stats": {}}, optax.adam(0.1), optax.contrib.reduce_on_plateau()
  )
  checkpointer = checkpoint.Checkpointer(str(tmp_path), async_save=False)
  with pytest.raises(
    UsageError,
    match=r"^checkpoints in .* do not fit this model \(differs in "
    r"params/dense/kernel \(stored float32\[3,2\], here float32\[3,4\]\)\); "
    r"choose a new --workdir\.$",
  ):
    checkpointer.restore_latest(_abstract(other), other, new_optimizer=True)
  checkpointer.close()


def _save_with_accuracy(workdir, steps, accuracy, reopen_after=None):
  """Saves `steps` with the metrics in `accuracy` (None: no eval), optionally reopening."""

  def open_checkpointer():
    return checkpoint.Checkpointer(str(workdir), keep=2, best_metric="accuracy", async_save=False)

  checkpointer = open_checkpointer()
  for step in steps:
    metrics = None if accuracy[step] is None else {"accuracy": accuracy[step]}
    checkpointer.save(step, _state(float(step)), {"iterator": {}}, metrics)
    if step == reopen_after:
      checkpointer.close()
      checkpointer = open_checkpointer()
  steps = checkpointer.all_steps()
  checkpointer.close()
  return steps


def test_the_best_checkpoint_survives_a_resume(tmp_path, caplog):
  accuracy = {1: 0.1, 2: 0.9, 3: 0.2, 4: 0.3, 5: 0.4, 6: None, 7: 0.5}
  uninterrupted = _save_with_accuracy(tmp_path / "a", range(1, 8), accuracy)
  resumed = _save_with_accuracy(tmp_path / "b", range(1, 8), accuracy, reopen_after=5)
  assert uninterrupted == resumed == [2, 6, 7]
  assert sorted(n for n in os.listdir(tmp_path / "b" / "checkpoints") if n.isdigit()) == [
    "2",
    "6",
    "7",
  ]
  assert "tracked_metric" not in caplog.text  # The saves without an eval warn of nothing.


def _flip_bit(path: str, position: int) -> None:
  with open(path, "r+b") as f:
    f.seek(position)
    byte = f.read(1)[0]
    f.seek(position)
    f.write(bytes([byte ^ 0x10]))


def test_a_flipped_bit_fails_the_checksum_and_falls_back(tmp_path, caplog):
  first, second = _shifted(_tiny_state("sgd"), 1.0), _shifted(_tiny_state("sgd"), 2.0)
  checkpointer = checkpoint.Checkpointer(str(tmp_path), keep=3)
  checkpointer.save(1, first, {"iterator": {"position": 1}})
  checkpointer.save(2, second, {"iterator": {"position": 2}})
  checkpointer.close()
  abstract = _abstract(_tiny_state("sgd"))

  def read_unverified():
    manager = ocp.CheckpointManager(
      tmp_path / "checkpoints", item_handlers={"state": ocp.StandardCheckpointHandler()}
    )
    try:
      return manager.restore(2, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))[
        "state"
      ]
    finally:
      manager.close()

  # Array chunks live zstd-compressed in OCDBT data files whose number, sizes and layout
  # vary between saves: flip bits in each data file, biggest first, from the middle
  # outwards, until one reads back changed with no error (most flips the decoder notices).
  data_files = sorted(
    glob.glob(str(tmp_path / "checkpoints" / "2" / "state" / "ocdbt.process_0" / "d" / "*")),
    key=os.path.getsize,
    reverse=True,
  )

  def changed(unverified) -> bool:
    pairs = zip(jax.tree.leaves(unverified), jax.tree.leaves(second))
    return not all(np.array_equal(a, b) for a, b in pairs)

  def flip_until_changed() -> bool:
    for data_file in data_files:
      size = os.path.getsize(data_file)
      for position in sorted(range(size), key=lambda p: abs(p - size // 2))[:128]:
        _flip_bit(data_file, position)
        try:
          if changed(read_unverified()):
            return True
        except Exception:  # noqa: BLE001 -- a flip the decoder notices: not the case tested.
          pass
        _flip_bit(data_file, position)
    return False

  assert flip_until_changed()

  checkpointer = checkpoint.Checkpointer(str(tmp_path), keep=3)
  caplog.clear()
  restored = checkpointer.restore_latest(abstract)
  assert restored.step == 1 and restored.data == {"iterator": {"position": 1}}
  jax.tree.map(np.testing.assert_array_equal, restored.state, first)
  assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
    "checkpoint at step 2 fails its checksum; trying step 1"
  ]
  # Training on from step 1 saves step 2 again: the corrupted one is moved aside first.
  checkpointer.save(2, second, {"iterator": {"position": 2}})
  checkpointer.close()
  aside = glob.glob(str(tmp_path / "checkpoints.set-aside-*" / "2"))
  assert len(aside) == 1
  checkpointer = checkpoint.Checkpointer(str(tmp_path), keep=3)
  restored = checkpointer.restore_latest(abstract)
  checkpointer.close()
  assert restored.step == 2
  jax.tree.map(np.testing.assert_array_equal, restored.state, second)


def test_event_loop_noise_of_a_failed_restore_is_dropped_while_open(monkeypatch):
  seen = []
  monkeypatch.setattr(sys, "unraisablehook", seen.append)
  checkpointer = checkpoint.Checkpointer("unused", create=False)
  closed = types.SimpleNamespace(exc_value=RuntimeError("Event loop is closed"))
  other = types.SimpleNamespace(exc_value=RuntimeError("something else"))
  sys.unraisablehook(closed)
  sys.unraisablehook(other)
  checkpointer.close()
  assert seen == [other]
  assert sys.unraisablehook == seen.append  # pylint: disable=comparison-with-callable


def _hold_lock(workdir) -> subprocess.Popen:
  """A process that takes the lock of `workdir` and sleeps, once it holds it."""
  code = (
    "import sys, time; from cnnjax.train import checkpoint; "
    "checkpoint.WorkdirLock(sys.argv[1]).__enter__(); print('locked', flush=True); "
    "time.sleep(600)"
  )
  process = subprocess.Popen(
    [sys.executable, "-c", code, str(workdir)], stdout=subprocess.PIPE, text=True
  )
  assert process.stdout.readline() == "locked\n"
  return process


def test_a_second_trainer_is_refused_until_the_first_dies(tmp_path):
  process = _hold_lock(tmp_path)
  try:
    refused = (
      rf"^workdir {tmp_path} is in use by pid {process.pid} on host .+ \(since "
      r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\); wait for that run to end or stop it, or "
      r"choose another --workdir\.$"
    )
    with pytest.raises(UsageError, match=refused), checkpoint.WorkdirLock(str(tmp_path)):
      pass
  finally:
    process.send_signal(signal.SIGKILL)
    process.wait()
  with (
    checkpoint.WorkdirLock(str(tmp_path)),
    pytest.raises(UsageError, match=f"in use by pid {os.getpid()} "),
    checkpoint.WorkdirLock(str(tmp_path)),
  ):
    pass
  with checkpoint.WorkdirLock(str(tmp_path)):  # Released at the end of the block.
    pass


def test_a_remote_lock_is_refreshed_and_taken_over_once_stale(tmp_path, monkeypatch):
  store = fake_gcs.install(monkeypatch)
  monkeypatch.chdir(tmp_path)
  with checkpoint.WorkdirLock("gs://bucket/run", stale_after=1.0):
    time.sleep(1.5)  # Past `stale_after`: only the heartbeat keeps the lock.
    refused = f"^workdir gs://bucket/run is in use by pid {os.getpid()} "
    with (
      pytest.raises(UsageError, match=refused),
      checkpoint.WorkdirLock("gs://bucket/run", stale_after=1.0),
    ):
      pass
  assert "gs://bucket/run/.lock" not in store
  # A run that died leaves its owner file, whose heartbeat goes stale.
  dead = {"pid": 1, "host": "elsewhere", "since": 0.0, "token": "dead", "heartbeat": 0.0}
  checkpoint.workdir_path("gs://bucket/run/.lock").write_text(json.dumps(dead))
  with checkpoint.WorkdirLock("gs://bucket/run"):
    assert (
      json.loads(checkpoint.workdir_path("gs://bucket/run/.lock").read_text())["pid"] == os.getpid()
    )
  assert list(tmp_path.iterdir()) == []


def test_a_wrapped_permission_error_names_the_step_and_what_is_intact(tmp_path, monkeypatch):
  checkpointer = checkpoint.Checkpointer(str(tmp_path), async_save=False)
  checkpointer.save(1, _state(1.0), {"iterator": {}})

  def denied(*args, **kwargs):
    try:
      raise PermissionError(13, "Permission denied")
    except PermissionError as error:
      raise RuntimeError("background save failed") from error

  monkeypatch.setattr(checkpointer.manager, "save", denied)
  with pytest.raises(
    UsageError,
    match=rf"^cannot write checkpoint step 2 to {tmp_path}/"
    r"checkpoints \(Permission denied\); make it writable and run again: "
    r"checkpoints up to step 1 are intact\.$",
  ):
    checkpointer.save(2, _state(2.0), {"iterator": {}})
  monkeypatch.setattr(checkpointer.manager, "save", lambda *args, **kwargs: 1 / 0)
  with pytest.raises(ZeroDivisionError):  # Other failures are bugs and keep their traceback.
    checkpointer.save(2, _state(2.0), {"iterator": {}})
  checkpointer.close()


@pytest.fixture
def tiny_disk(tmp_path):
  """A 300 KiB tmpfs (root only), unmounted afterwards."""
  disk = tmp_path / "disk"
  disk.mkdir()
  if (
    subprocess.run(
      ["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(disk)],
      capture_output=True,
      check=False,
    ).returncode
    != 0
  ):
    pytest.skip("cannot mount a tmpfs here (needs root)")
  yield disk
  subprocess.run(["umount", str(disk)], check=True)


def test_a_full_disk_names_the_step_and_what_is_intact(tiny_disk):
  checkpointer = checkpoint.Checkpointer(str(tiny_disk), keep=100)
  with pytest.raises(UsageError) as raised:
    for step in range(1, 100):
      checkpointer.save(step, _state(float(step)), {"iterator": {}})
  checkpointer.close()
  message = str(raised.value)
  failed = int(message.split("cannot write checkpoint step ")[1].split()[0])
  assert message == (
    f"cannot write checkpoint step {failed} to {tiny_disk}/checkpoints (No space "
    f"left on device); free space and run again: checkpoints up to step "
    f"{failed - 1} are intact."
  )
  checkpointer = checkpoint.Checkpointer(str(tiny_disk), create=False)
  restored = checkpointer.restore_latest(_abstract(_state(0.0)))
  checkpointer.close()
  assert restored.step == failed - 1
  np.testing.assert_array_equal(
    restored.state.params["dense"]["kernel"], np.full((3, 2), failed - 1.0)
  )


@pytest.mark.parametrize("reported", [True, False])
def test_a_write_failure_orbax_raises_again_at_close_is_named_once(tmp_path, reported):
  # Orbax re-raises a background save's error when the manager closes: after the one-line
  # error of that save it is the same failure; before it, it gets the one-line error.
  checkpointer = checkpoint.Checkpointer(str(tmp_path), keep=2)
  checkpointer.save(1, _state(1.0), {"iterator": {}})
  checkpointer.wait()
  close = checkpointer.manager.close

  def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")

  def full_disk_close():
    close()
    full_disk()

  if reported:
    checkpointer.manager.save = full_disk
    with pytest.raises(UsageError, match="cannot write checkpoint step 2"):
      checkpointer.save(2, _state(2.0), {"iterator": {}})
  checkpointer.manager.close = full_disk_close
  if reported:
    checkpointer.close()
  else:
    with pytest.raises(UsageError, match=r"\(No space left on device\); free space"):
      checkpointer.close()


def test_a_claim_without_checkpoints_is_taken_over_and_a_corrupt_one_is_one_line(tmp_path):
  checkpoint.check_fingerprint(str(tmp_path), {"model": "lenet5"})
  # No checkpoint was ever saved under the first claim: another experiment may take it.
  checkpoint.check_fingerprint(str(tmp_path), {"model": "resnet18"})
  with open(tmp_path / "experiment.json") as f:
    assert json.load(f) == {"model": "resnet18"}
  (tmp_path / "checkpoints" / "5").mkdir(parents=True)
  with pytest.raises(UsageError, match="holds another experiment's checkpoints"):
    checkpoint.check_fingerprint(str(tmp_path), {"model": "lenet5"})
  with pytest.raises(UsageError, match="trained with another config.*pass the config"):
    checkpoint.check_fingerprint(str(tmp_path), {"model": "lenet5"}, claim=False)
  (tmp_path / "experiment.json").write_text('{"model": ')
  with pytest.raises(UsageError, match="experiment.json is corrupt"):
    checkpoint.check_fingerprint(str(tmp_path), {"model": "resnet18"})


@flax.struct.dataclass
class _StateBeforeEma:
  """TrainState as checkpoints before the `ema` field hold it."""

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  plateau: Any
  nonfinite_step: jax.Array


def test_checkpoints_from_before_the_ema_field_restore(tmp_path):
  state = _state(3.0)
  old = _StateBeforeEma(
    **{
      name: getattr(state, name)
      for name in ("step", "params", "batch_stats", "opt_state", "plateau", "nonfinite_step")
    }
  )
  checkpointer = checkpoint.Checkpointer(str(tmp_path), async_save=False)
  checkpointer.save(4, old, {"iterator": {}})
  checkpointer.close()
  checkpointer = checkpoint.Checkpointer(str(tmp_path), async_save=False)
  restored = checkpointer.restore_latest(_abstract(_state(0.0)), _state(0.0))
  checkpointer.close()
  assert restored.step == 4 and restored.state.ema == {} and not restored.new_optimizer
  np.testing.assert_array_equal(restored.state.params["dense"]["kernel"], np.full((3, 2), 3.0))
