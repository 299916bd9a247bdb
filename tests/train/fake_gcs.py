"""gs:// served from memory, so remote workdirs are tested without a network or gcsfs."""

from etils.epath import backend
from etils.epath import gpath
from fsspec.implementations.memory import MemoryFileSystem


def install(monkeypatch) -> dict:
  """Routes `etils.epath` gs:// paths to a fresh in-memory file system; returns its store.

  The store maps each written file's full path ('gs://bucket/run/summary.json') to it.
  """

  class FakeGCS(MemoryFileSystem):
    protocol = ("gs", "gcs")
    store: dict = {}
    pseudo_dirs = [""]
    cachable = False

  filesystem = FakeGCS()
  monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)
  monkeypatch.setattr(backend._FileSystemSpecBackend, "fs", lambda self, path: filesystem)
  return FakeGCS.store
