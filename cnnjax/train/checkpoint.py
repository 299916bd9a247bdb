"""Orbax checkpoints of the train state, with the data iterator's state beside it.

Layout: `workdir/checkpoints/<step>/{state,data}` and `workdir/experiment.json`, the
fingerprint of the experiment that owns the workdir. Saves are asynchronous; the last
`keep` checkpoints and the best by `best_metric` are kept. Restoring tries the newest
checkpoint first and falls back to older ones when a checkpoint cannot be read.

A workdir is a local path or a remote URI (`gs://bucket/run`): every file goes through
`etils.epath`, so remote workdirs are written remotely, never to a local `./gs:` folder.
"""

import json
import logging
import os
import uuid
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers

from cnnjax.errors import UsageError

FINGERPRINT_FILE = "experiment.json"
CHECKPOINTS = "checkpoints"


def workdir_path(workdir: str | os.PathLike) -> epath.Path:
  """`workdir` as a path: remote URIs (gs://, s3://) as they are, local paths absolute."""
  if "://" in os.fspath(workdir):
    return epath.Path(workdir)
  return epath.Path(os.path.abspath(workdir))


def has_checkpoint(workdir: str | os.PathLike) -> bool:
  """Whether `workdir/checkpoints` holds any step directory (readable or not)."""
  directory = workdir_path(workdir) / CHECKPOINTS
  return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


def check_fingerprint(workdir: str | os.PathLike, fingerprint: dict[str, Any],
                      claim: bool = True) -> None:
  """Claims `workdir` for this experiment, or refuses one that belongs to another.

  Only the keys both fingerprints have are compared, so a workdir written by a version
  of cnnjax that fingerprinted other keys stays usable.

  Args:
    workdir: the experiment's directory (local or remote).
    fingerprint: JSON-serialisable values that identify the experiment.
    claim: write the fingerprint when the workdir has none yet (False: only compare).
  Raises:
    UsageError: the workdir holds checkpoints of an experiment with a different fingerprint.
  """
  path = workdir_path(workdir) / FINGERPRINT_FILE
  canonical = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))
  if path.exists():
    stored = json.loads(path.read_text())
    differing = sorted(k for k in set(stored) & set(canonical) if stored[k] != canonical[k])
    if differing:
      raise UsageError(f"workdir {workdir} holds another experiment's checkpoints (differs in "
                       f"{', '.join(differing)}); choose a new --workdir or delete that one.")
    return
  if claim and jax.process_index() == 0:
    # Written beside and renamed over, so that another process never reads half a file.
    temporary = path.parent / f".{FINGERPRINT_FILE}.{uuid.uuid4().hex}.tmp"
    try:
      temporary.write_text(json.dumps(canonical, indent=2, sort_keys=True))
      temporary.replace(path)
    finally:
      if temporary.exists():
        temporary.unlink()


class Checkpointer:
  """Saves and restores (train state, data state) pairs under `workdir/checkpoints`."""

  def __init__(self, workdir: str | os.PathLike, keep: int = 2, best_metric: str | None = None,
               best_mode: str = "max", async_save: bool = True, create: bool = True):
    """Opens `workdir/checkpoints`, creating it when `create` (False: only read from it)."""
    policies = [checkpoint_managers.LatestN(n=keep)]
    if best_metric:
      policies.append(checkpoint_managers.BestN(
          get_metric_fn=lambda metrics: metrics[best_metric], reverse=best_mode == "min", n=1,
          keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        enable_async_checkpointing=async_save, create=create,
        preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies))
    self.directory = workdir_path(workdir) / CHECKPOINTS
    self.manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "data": ocp.JsonCheckpointHandler()})

  def all_steps(self) -> list[int]:
    """Steps with a finished checkpoint, oldest first."""
    return sorted(self.manager.all_steps())

  def save(self, step: int, state: Any, data_state: dict[str, Any],
           metrics: dict[str, float] | None = None) -> None:
    """Starts saving `state` (global arrays) and the JSON-serialisable `data_state`."""
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    data=ocp.args.JsonSave(data_state)),
                      metrics=metrics, force=True)

  def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict[str, Any]] | None:
    """(step, state, data state) of the newest readable checkpoint, or None if there is none.

    `abstract_state` gives the target shapes, dtypes and shardings
    (`jax.ShapeDtypeStruct`s). A checkpoint whose parameters do not fit them belongs to
    another experiment and raises UsageError; one that cannot be read is skipped with a
    warning.
    """
    for step in reversed(self.all_steps()):
      try:
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
      except Exception as error:  # noqa: BLE001 -- any read failure means try the previous one.
        self._check_structure(step, abstract_state)
        logging.warning("checkpoint at step %d is unreadable (%s: %s); trying the previous one",
                        step, type(error).__name__, str(error).splitlines()[0][:200])
        continue
      return step, restored["state"], restored["data"]
    return None

  def _check_structure(self, step: int, abstract_state: Any) -> None:
    """UsageError if the checkpoint's metadata is readable and its parameter shapes differ."""
    try:
      stored = _shapes_by_path(self.manager.item_metadata(step)["state"]["params"])
    except Exception:  # noqa: BLE001 -- unreadable metadata: the caller falls back.
      return
    if stored != _shapes_by_path(abstract_state.params):
      raise UsageError(f"checkpoints in {self.directory} do not fit this model (different "
                       "parameters or shapes); choose a new --workdir.")

  def wait(self) -> None:
    """Blocks until every started save is on disk."""
    self.manager.wait_until_finished()

  def close(self) -> None:
    """Finishes pending saves and releases the manager."""
    self.manager.close()


def _shapes_by_path(tree: Any) -> dict[str, tuple[int, ...]]:
  """{'a/b/kernel': shape} for every leaf of a parameter tree."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(str(getattr(k, "key", k)) for k in path): tuple(leaf.shape)
          for path, leaf in leaves}
