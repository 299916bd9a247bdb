"""Orbax checkpoints of the train state, with the data iterator's state beside it.

Layout: `workdir/checkpoints/<step>/{state,data,metrics}`, `workdir/experiment.json` (the
fingerprint of the experiment that owns the workdir) and `workdir/.lock` (the running
trainer). Saves are asynchronous; the last `keep` checkpoints and the best by
`best_metric` are kept, and each step's metrics are written with it, so a resumed run
keeps the same ones as an uninterrupted run would.

Each checkpoint carries checksums of its state (in its custom metadata). Restoring checks
first, from the metadata alone, that the stored state fits the one asked for; then tries
the newest checkpoint and falls back to older ones when one cannot be read or fails its
checksum. It never deletes a checkpoint it could not read: when none can be restored it
raises `NothingRestorable`, and `set_aside` moves them out of the way on request.

A workdir is a local path or a remote URI (`gs://bucket/run`): every file goes through
`etils.epath`, so remote workdirs are written remotely, never to a local `./gs:` folder.
"""

import dataclasses
import datetime
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import socket
import sys
import threading
import time
import uuid
from typing import Any, NamedTuple, Self

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers

from cnnjax.errors import UsageError
from cnnjax import param_paths

FINGERPRINT_FILE = "experiment.json"
CHECKPOINTS = "checkpoints"
LOCK_FILE = ".lock"
# The custom-metadata key of a checkpoint's {state field: blake2b hex digest}.
CHECKSUMS = "state_checksums"
# Optimizer-state leaves sit under this top-level field of the train state.
OPT_STATE = "opt_state"


def workdir_path(workdir: str | os.PathLike) -> epath.Path:
  """`workdir` as a path: remote URIs (gs://, s3://) as they are, local paths absolute."""
  if is_remote(workdir):
    return epath.Path(workdir)
  return epath.Path(os.path.abspath(workdir))


def has_checkpoint(workdir: str | os.PathLike) -> bool:
  """Whether `workdir/checkpoints` holds any step directory (readable or not)."""
  directory = workdir_path(workdir) / CHECKPOINTS
  return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


def check_fingerprint(
  workdir: str | os.PathLike, fingerprint: dict[str, Any], claim: bool = True
) -> None:
  """Claims `workdir` for this experiment, or refuses one that belongs to another.

  Only the keys both fingerprints have are compared, so a workdir written by a version
  of cnnjax that fingerprinted other keys stays usable. A workdir whose claim holds no
  checkpoint (its run failed before saving one) is claimed anew.

  Args:
    workdir: the experiment's directory (local or remote).
    fingerprint: JSON-serialisable values that identify the experiment.
    claim: write the fingerprint when the workdir has none yet, to train (False: only
      compare, to evaluate).
  Raises:
    UsageError: the workdir holds checkpoints of an experiment with a different fingerprint,
      or a corrupt fingerprint file.
  """
  path = workdir_path(workdir) / FINGERPRINT_FILE
  canonical = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))
  if path.exists() and (has_checkpoint(workdir) or not claim):
    try:
      stored = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
      raise UsageError(
        f"{path} is corrupt ({error}); restore it from a backup or copy the "
        "checkpoints to a new --workdir."
      ) from None
    stored = _renamed_model_fields(stored)
    differing = sorted(k for k in set(stored) & set(canonical) if stored[k] != canonical[k])
    if differing and claim:
      raise UsageError(
        f"workdir {workdir} holds another experiment's checkpoints (differs in "
        f"{', '.join(differing)}); choose a new --workdir."
      )
    if differing:
      raise UsageError(
        f"workdir {workdir} was trained with another config (differs in "
        f"{', '.join(differing)}); pass the config it was trained with."
      )
    return
  if claim and jax.process_index() == 0:
    write_atomically(path, json.dumps(canonical, indent=2, sort_keys=True))


# Model fields renamed since workdirs were first fingerprinted: old name -> new name.
RENAMED_MODEL_FIELDS = {"base_width": "width", "use_batch_norm": "batch_norm"}


def _renamed_model_fields(fingerprint: dict[str, Any]) -> dict[str, Any]:
  """`fingerprint` with its model_kwargs spelt as today, so older workdirs still match."""
  kwargs = fingerprint.get("model_kwargs")
  if not isinstance(kwargs, dict):
    return fingerprint
  return {
    **fingerprint,
    "model_kwargs": {RENAMED_MODEL_FIELDS.get(key, key): value for key, value in kwargs.items()},
  }


def write_atomically(path: epath.Path, text: str) -> None:
  """Writes `text` beside `path` and renames it over, so no reader sees half a file."""
  temporary = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
  try:
    temporary.write_text(text)
    temporary.replace(path)
  finally:
    if temporary.exists():
      temporary.unlink()


def set_aside(workdir: str | os.PathLike) -> epath.Path | None:
  """Renames `workdir/checkpoints` to `workdir/checkpoints.set-aside-<UTC time>`.

  Deletes nothing. Call it on every process, with no `Checkpointer` open on the workdir.

  Returns:
    The new path of the checkpoints, or None when the workdir has none.
  """
  directory = workdir_path(workdir) / CHECKPOINTS
  if not directory.exists():
    return None
  target = _set_aside_directory(directory)
  if jax.process_index() == 0:
    directory.rename(target)
  _sync_processes("cnnjax_set_aside")
  return target


class NothingRestorable(UsageError):
  """Step directories exist but none of them can be restored.

  Attributes:
    problems: why, e.g. "no checkpoint in D can be restored (step 40 is unreadable (...))".
  """

  def __init__(self, problems: str):
    super().__init__(
      f"{problems}; set --config.restart=True to set them aside and start "
      "over, or choose a new --workdir; nothing was deleted."
    )
    self.problems = problems


class Restored(NamedTuple):
  """A restored checkpoint.

  Attributes:
    step: its step.
    state: the train state, with the target's shardings.
    data: the data iterator's state, as saved.
    new_optimizer: True when the stored optimizer state did not fit and `opt_state` is the
      caller's initial one (asked for with `new_optimizer=True`).
  """

  step: int
  state: Any
  data: dict[str, Any]
  new_optimizer: bool


class Checkpointer:
  """Saves and restores (train state, data state) pairs under `workdir/checkpoints`."""

  def __init__(
    self,
    workdir: str | os.PathLike,
    keep: int = 2,
    best_metric: str | None = None,
    best_mode: str = "max",
    async_save: bool = True,
    create: bool = True,
  ):
    """Opens `workdir/checkpoints`, creating it when `create` (False: only read from it)."""
    policies = [checkpoint_managers.LatestN(n=keep)]
    best_fn = None
    if best_metric:
      # `best_fn` is what makes orbax write each step's metrics and read them back on open.
      def best_fn(metrics):
        return metrics[best_metric]

      policies.append(
        checkpoint_managers.BestN(
          get_metric_fn=best_fn,
          reverse=best_mode == "min",
          n=1,
          keep_checkpoints_without_metrics=False,
        )
      )
    options = ocp.CheckpointManagerOptions(
      enable_async_checkpointing=async_save,
      create=create,
      best_fn=best_fn,
      best_mode=best_mode,
      preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
    )
    self.directory = workdir_path(workdir) / CHECKPOINTS
    self.manager = ocp.CheckpointManager(
      self.directory,
      options=options,
      item_handlers={"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()},
    )
    self._pending: int | None = None  # The step whose asynchronous save may be unfinished.
    # Steps newer than the restored one that could not be read: set aside before resaving.
    self._unrestorable: set[int] = set()
    self._closed = False
    self._write_failed = False  # A save's write failure has been raised as UsageError.
    self._noise = _OrbaxNoise()

  def all_steps(self) -> list[int]:
    """Steps with a checkpoint (the one being saved included), oldest first."""
    return sorted(self.manager.all_steps())

  def save(
    self, step: int, state: Any, data_state: dict[str, Any], metrics: dict[str, float] | None = None
  ) -> None:
    """Starts saving `state` (replicated arrays) and the JSON-serialisable `data_state`.

    Raises:
      UsageError: this or the previous save could not write to the workdir (disk full,
        read-only, permission denied).
    """
    self.wait()  # A failure of the previous save is named by its own step.
    if step in self._unrestorable:
      self._set_aside_step(step)
    custom_metadata = {CHECKSUMS: _checksums(state)}
    try:
      self.manager.save(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)
        ),
        metrics=metrics,
        force=True,
        custom_metadata=custom_metadata,
      )
    except Exception as error:  # noqa: BLE001 -- re-raised unless it is a write failure.
      self._raise_write_error(step, error)
    self._pending = step

  def wait(self) -> None:
    """Blocks until every started save is on disk.

    Raises:
      UsageError: the save could not write to the workdir.
    """
    try:
      self.manager.wait_until_finished()
    except Exception as error:  # noqa: BLE001 -- re-raised unless it is a write failure.
      step, self._pending = self._pending, None
      self._raise_write_error(step, error)
    self._pending = None

  def close(self) -> None:
    """Finishes pending saves and releases the manager; a second call does nothing.

    Raises:
      UsageError: the last save could not write to the workdir.
    """
    if self._closed:
      return
    self._closed = True
    try:
      self.wait()
    finally:
      try:
        self._close_manager()
      finally:
        self._noise.close()

  def _close_manager(self) -> None:
    """Closes the manager. Orbax raises a background save's error again at close: a write
    failure already raised as UsageError is not raised twice; a new one is named like it."""
    try:
      self.manager.close()
    except Exception as error:  # noqa: BLE001 -- re-raised unless it is a write failure.
      if self._write_failed and _write_errno(error) is not None:
        return
      self._raise_write_error(self._pending, error)

  def restore_latest(
    self, abstract_state: Any, initial_state: Any = None, new_optimizer: bool = False
  ) -> Restored | None:
    """The newest checkpoint that can be restored, or None if there is none at all.

    Before reading any array, the stored state's tree (from the checkpoint's metadata) is
    compared with `abstract_state`. Checkpoints that cannot be read or fail their checksum
    are skipped with one warning line each.

    Args:
      abstract_state: the target train state of `jax.ShapeDtypeStruct`s (shapes, dtypes
        and shardings).
      initial_state: the freshly initialised train state; needed with `new_optimizer`.
      new_optimizer: when only the optimizer state differs from the stored one, restore
        everything else and take `opt_state` from `initial_state`. A fitting optimizer
        state is restored as usual.
    Raises:
      UsageError: the stored parameters, BatchNorm statistics or other non-optimizer
        state do not fit `abstract_state`; or only the optimizer state differs and
        `new_optimizer` is False.
      NothingRestorable: checkpoints exist but none can be read and verified.
    """
    if new_optimizer and initial_state is None:
      raise ValueError("restore_latest(new_optimizer=True) needs the initial_state.")
    steps = sorted(self.manager.all_steps(), reverse=True)
    failures = []
    for index, step in enumerate(steps):
      following = (
        f"trying step {steps[index + 1]}" if index + 1 < len(steps) else "no older checkpoint"
      )
      try:
        metadata = self.manager.metadata(step)
        stored_tree = metadata.item_metadata["state"]
        if stored_tree is None:
          raise ValueError("its state has no metadata")
        stored = _leaf_specs(stored_tree)
      except Exception as error:  # noqa: BLE001 -- unreadable metadata: try the previous one.
        failures.append(self._skip(step, f"is unreadable ({_reason(error)})", following))
        continue
      fresh_optimizer = self._check_fits(stored, abstract_state, new_optimizer)
      # Fields without arrays that older checkpoints lack (`ema` before it existed).
      absent = [
        field.name
        for field in dataclasses.fields(abstract_state)
        if field.name not in stored_tree
        and not jax.tree.leaves(getattr(abstract_state, field.name))
      ]
      try:
        state, data = self._restore(step, abstract_state, fresh_optimizer, absent)
      except Exception as error:  # noqa: BLE001 -- any read failure means try the previous one.
        failures.append(self._skip(step, f"is unreadable ({_reason(error)})", following))
        continue
      stored_sums = (metadata.custom_metadata or {}).get(CHECKSUMS)
      if stored_sums is not None:  # Checkpoints from before checksums restore unverified.
        computed = _checksums(state)
        if any(stored_sums.get(field, digest) != digest for field, digest in computed.items()):
          failures.append(self._skip(step, "fails its checksum", following))
          continue
      if isinstance(state, dict):  # Partly restored: a fresh optimizer, or empty fields.
        state = (initial_state if fresh_optimizer else abstract_state).replace(**state)
      return Restored(step, state, data, fresh_optimizer)
    if failures:
      raise NothingRestorable(
        f"no checkpoint in {self.directory} can be restored ({'; '.join(failures)})"
      )
    return None

  def _skip(self, step: int, problem: str, following: str) -> str:
    """Warns that `step` is skipped; returns the short reason for the final error."""
    logging.warning("checkpoint at step %d %s; %s", step, problem, following)
    self._unrestorable.add(step)
    return f"step {step} {problem}"

  def _check_fits(self, stored: dict[str, str], abstract_state: Any, new_optimizer: bool) -> bool:
    """Whether the optimizer state must start afresh; UsageError if the checkpoint does not fit."""
    target = _leaf_specs(abstract_state)
    differing = [
      path for path in sorted(stored.keys() | target.keys()) if stored.get(path) != target.get(path)
    ]
    if not differing:
      return False
    model = [path for path in differing if path.split("/")[0] != OPT_STATE]
    if model:
      raise UsageError(
        f"checkpoints in {self.directory} do not fit this model (differs in "
        f"{_describe(model, stored, target)}); choose a new --workdir."
      )
    if not new_optimizer:
      raise UsageError(
        f"checkpoints in {self.directory} hold another optimizer's state (differs in "
        f"{_describe(differing, stored, target)}): the optimizer changed; set "
        "--config.new_optimizer=True to keep the parameters and BatchNorm statistics and "
        "start a fresh optimizer state."
      )
    return True

  def _restore(
    self, step: int, abstract_state: Any, fresh_optimizer: bool, absent: list[str]
  ) -> tuple[Any, dict[str, Any]]:
    """(state, data state) of `step`.

    The state is partial, {field: value}, without `opt_state` if `fresh_optimizer` and
    without the fields `absent` from the checkpoint.
    """
    if not fresh_optimizer and not absent:
      restored = self.manager.restore(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()
        ),
      )
      return restored["state"], restored["data"]
    skipped = set(absent) | ({OPT_STATE} if fresh_optimizer else set())
    fields = {
      field.name: getattr(abstract_state, field.name)
      for field in dataclasses.fields(abstract_state)
      if field.name not in skipped
    }
    # A partial restore reads none of the old optimizer state's arrays.
    with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as reader:
      state = reader.restore(
        self.directory / str(step) / "state",
        args=ocp.args.PyTreeRestore(
          item=fields,
          restore_args=ocp.checkpoint_utils.construct_restore_args(fields),
          partial_restore=True,
        ),
      )
    data = self.manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))
    return state, data["data"]

  def _set_aside_step(self, step: int) -> None:
    """Moves the unrestorable checkpoint of `step` aside, so that `step` can be saved again."""
    target = _set_aside_directory(self.directory)
    if jax.process_index() == 0:
      target.mkdir(parents=True, exist_ok=True)
      (self.directory / str(step)).rename(target / str(step))
      logging.warning(
        "checkpoint at step %d could not be restored; moved it to %s before saving step %d again",
        step,
        target,
        step,
      )
    _sync_processes(f"cnnjax_set_aside_step_{step}")
    self.manager.reload()
    self._unrestorable.discard(step)

  def _raise_write_error(self, step: int | None, error: Exception) -> None:
    """Raises UsageError if `error` comes from a workdir that cannot be written; else `error`."""
    code = _write_errno(error)
    if code is None:
      raise error
    intact = [s for s in self.manager.all_steps() if s != step and s not in self._unrestorable]
    kept = (
      f"checkpoints up to step {max(intact)} are intact"
      if intact
      else "no earlier checkpoint was written"
    )
    action = "free space" if code in (errno.ENOSPC, errno.EDQUOT) else "make it writable"
    self._write_failed = True
    raise UsageError(
      f"cannot write checkpoint step {step} to {self.directory} "
      f"({os.strerror(code)}); {action} and run again: {kept}."
    ) from None


class WorkdirLock:
  """Keeps a second trainer out of a workdir while this one runs: `with WorkdirLock(workdir):`.

  Only process 0 takes it; the others pass. The workdir must exist.

  A local workdir is locked with `fcntl.flock` on `workdir/.lock`, which the kernel drops
  when the process ends, however it ends (a SIGKILL included). The file holds the owner's
  pid, host and start time, for the refusal message, and stays after release.

  A remote workdir (gs://) cannot be flocked: `workdir/.lock` is an owner file that a
  background thread rewrites every `stale_after / 10` seconds. An owner file whose
  heartbeat is older than `stale_after` (10 minutes; the clocks of both hosts are trusted)
  belongs to a run that died, and is taken over. Two trainers started within a second of
  each other can both get it; a run that finds its lock taken over logs a warning.
  """

  STALE_AFTER = 600.0

  def __init__(self, workdir: str | os.PathLike, stale_after: float = STALE_AFTER):
    self.workdir = workdir_path(workdir)
    self.path = self.workdir / LOCK_FILE
    self.stale_after = stale_after
    self._fd: int | None = None
    self._token: str | None = None  # Identifies this run's remote owner file.
    self._since = 0.0
    self._stop = threading.Event()
    self._heartbeat: threading.Thread | None = None

  def __enter__(self) -> Self:
    """Takes the lock.

    Raises:
      UsageError: another run holds it.
    """
    if jax.process_index() != 0:
      return self
    self._since = time.time()
    if is_remote(self.path):
      self._acquire_remote()
    else:
      self._acquire_local()
    return self

  def __exit__(self, *exc_info) -> None:
    """Releases the lock."""
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None
    if self._heartbeat is not None:
      self._stop.set()
      self._heartbeat.join()
      self._heartbeat = None
      if (self._read_owner() or {}).get("token") == self._token:
        self.path.unlink()

  def _acquire_local(self) -> None:
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      owner = os.pread(fd, 4096, 0)
      os.close(fd)
      raise self._in_use(_parse_owner(owner.decode(errors="replace"))) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(self._owner_record()).encode(), 0)
    self._fd = fd

  def _acquire_remote(self) -> None:
    owner = self._read_owner()
    if owner is not None and time.time() - owner.get("heartbeat", 0) < self.stale_after:
      raise self._in_use(owner)
    self._token = uuid.uuid4().hex
    self._stop.clear()
    self.path.write_text(json.dumps(self._owner_record()))
    # Read back: a run that wrote after us owns the file.
    owner = self._read_owner()
    if (owner or {}).get("token") != self._token:
      raise self._in_use(owner)
    self._heartbeat = threading.Thread(target=self._beat, name="cnnjax-workdir-lock", daemon=True)
    self._heartbeat.start()

  def _beat(self) -> None:
    """Refreshes the remote owner file until released (or taken over by another run)."""
    while not self._stop.wait(self.stale_after / 10):
      try:
        owner = self._read_owner()
        if (owner or {}).get("token") != self._token:
          logging.warning(
            "workdir %s was taken over by %s; stop one of the two runs.",
            self.workdir,
            _owner_text(owner),
          )
          return
        self.path.write_text(json.dumps(self._owner_record()))
      except Exception as error:  # noqa: BLE001 -- a network blip: the next beat retries.
        logging.warning("cannot refresh the lock of workdir %s (%s)", self.workdir, _reason(error))

  def _owner_record(self) -> dict[str, Any]:
    record = {"pid": os.getpid(), "host": socket.gethostname(), "since": self._since}
    if self._token is not None:
      record.update(token=self._token, heartbeat=time.time())
    return record

  def _read_owner(self) -> dict[str, Any] | None:
    try:
      return _parse_owner(self.path.read_text())
    except FileNotFoundError:
      return None

  def _in_use(self, owner: dict[str, Any] | None) -> UsageError:
    return UsageError(
      f"workdir {self.workdir} is in use by {_owner_text(owner)}; wait for that "
      "run to end or stop it, or choose another --workdir."
    )


def _parse_owner(text: str) -> dict[str, Any] | None:
  """The owner record in a lock file, or None if it is empty or half-written."""
  try:
    owner = json.loads(text)
  except ValueError:
    return None
  return owner if isinstance(owner, dict) else None


def _owner_text(owner: dict[str, Any] | None) -> str:
  """'pid P on host H (since T)' for an owner record."""
  if not owner:
    return "another run"
  since = datetime.datetime.fromtimestamp(owner.get("since", 0), datetime.UTC)
  return f"pid {owner.get('pid')} on host {owner.get('host')} (since {since:%Y-%m-%d %H:%M:%S} UTC)"


class _OrbaxNoise:
  """Drops orbax's known-harmless noise from when it is made until `close()`.

  A failed restore closes orbax's event loop while TensorStore reads are still running;
  each of them then reports `RuntimeError: Event loop is closed` through
  `sys.unraisablehook` (thousands of tracebacks for one corrupted checkpoint). And orbax
  warns at every save without metrics when it tracks a best metric, as the trainer does
  between evaluations.
  """

  def __init__(self):
    self._previous_hook = sys.unraisablehook
    sys.unraisablehook = self._hook
    self._filter = lambda record: not record.getMessage().startswith("Requested `tracked_metric`")
    logging.getLogger("absl").addFilter(self._filter)

  def close(self) -> None:
    if sys.unraisablehook == self._hook:  # Leave in place a hook installed after ours.
      sys.unraisablehook = self._previous_hook
    logging.getLogger("absl").removeFilter(self._filter)

  def _hook(self, unraisable: Any) -> None:
    error = unraisable.exc_value
    if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
      self._previous_hook(unraisable)


# Errors of a workdir that cannot be written, which the user can fix.
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS)


def _write_errno(error: BaseException | None) -> int | None:
  """The errno of a write failure anywhere in `error`'s chain, or None.

  Orbax wraps OSErrors in other exceptions, and TensorStore reports them as ValueErrors
  that end in `[os_error_code='28']`.
  """
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in _WRITE_ERRNOS:
      return error.errno
    match = re.search(r"os_error_code='(\d+)'", str(error))
    if match and int(match.group(1)) in _WRITE_ERRNOS:
      return int(match.group(1))
    error = error.__cause__ or error.__context__
  return None


def _checksums(state: Any) -> dict[str, str]:
  """{top-level field: blake2b of its leaves' dtypes, shapes and bytes, in tree order}.

  Every process computes the same digests: leaves are replicated, and a global array
  is read from this process's first copy.
  """
  hashes: dict[str, Any] = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
      if not leaf.sharding.is_fully_replicated:
        raise ValueError(f"checkpointed leaf {param_paths.path_name(path)} is not replicated.")
      leaf = leaf.addressable_data(0)
    value = np.asarray(leaf)
    digest = hashes.setdefault(param_paths.path_name(path[:1]), hashlib.blake2b(digest_size=16))
    digest.update(f"{value.dtype.name}{value.shape};".encode())
    digest.update(np.ascontiguousarray(value).view(np.uint8))
  return {field: digest.hexdigest() for field, digest in hashes.items()}


def _leaf_specs(tree: Any) -> dict[str, str]:
  """{'params/conv1/kernel': 'float32[3,3,1,6]'} for every array leaf of `tree`.

  Stored metadata names a namedtuple's fields by dict keys and a live tree by attributes:
  both become the same path strings.
  """
  return {
    param_paths.path_name(path): f"{np.dtype(leaf.dtype).name}[{','.join(map(str, leaf.shape))}]"
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
  }


def _describe(paths: list[str], stored: dict[str, str], target: dict[str, str]) -> str:
  """The first few differing leaves: 'path (stored float32[3], here absent), ...'."""
  shown = [
    f"{path} (stored {stored.get(path, 'absent')}, here {target.get(path, 'absent')})"
    for path in paths[:3]
  ]
  more = f" and {len(paths) - 3} more" if len(paths) > 3 else ""
  return ", ".join(shown) + more


def _reason(error: BaseException) -> str:
  """'Type: first line of the message', short enough for a one-line error."""
  lines = str(error).splitlines()
  text = lines[0] if lines else ""
  return f"{type(error).__name__}: {text[:120]}"


def is_remote(path: str | os.PathLike) -> bool:
  """Whether `path` is a URI of an object store (gs://, s3://), not a local path."""
  return "://" in os.fspath(path)


def _set_aside_directory(checkpoints: epath.Path) -> epath.Path:
  """Where checkpoints set aside now go: `checkpoints.set-aside-<UTC time>` beside them."""
  return checkpoints.parent / f"{CHECKPOINTS}.set-aside-{_agreed_utc_stamp()}"


def _agreed_utc_stamp() -> str:
  """The current UTC time as 20240131T235959Z, as process 0 sees it."""
  now = int(time.time())
  if jax.process_count() > 1:
    # Two int32 halves: jax without x64 has no int64 to broadcast.
    halves = multihost_utils.broadcast_one_to_all(np.array(divmod(now, 1 << 16), np.int32))
    now = (int(halves[0]) << 16) + int(halves[1])
  return datetime.datetime.fromtimestamp(now, datetime.UTC).strftime("%Y%m%dT%H%M%SZ")


def _sync_processes(name: str) -> None:
  """Waits until every process gets here (a no-op for one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
