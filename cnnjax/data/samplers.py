"""Index samplers: P x K class-balanced chunks for metric learning."""

import functools
import sys

import grain
import numpy as np

from cnnjax.errors import UsageError


class PKIndexDataset(grain.MapDataset):
  """Infinite stream of example indices in chunks of P classes x K examples.

  Chunk `c` (elements `c*P*K ... (c+1)*P*K - 1`) holds K distinct examples of each of P
  distinct classes, classes in blocks of K. It depends only on `(seed, c)`, so any element
  can be computed directly: the stream resumes exactly from an element index. Only classes
  with at least K examples are drawn.

  Args:
    labels: [N] int, the label of every example the indices point into.
    classes_per_group: P.
    examples_per_class: K.
    seed: chunk c draws from numpy's PCG64 seeded with (seed, c).
  """

  def __init__(
    self, labels: np.ndarray, classes_per_group: int, examples_per_class: int, seed: int
  ):
    super().__init__()
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    eligible = classes[counts >= examples_per_class]
    if len(eligible) < classes_per_group:
      raise UsageError(
        f"P x K batches need {classes_per_group} classes with at least "
        f"{examples_per_class} examples each but the data has {len(eligible)}: "
        "lower classes_per_group or examples_per_class"
      )
    self._members = tuple(np.flatnonzero(labels == c) for c in eligible)
    self._classes_per_group = classes_per_group
    self._examples_per_class = examples_per_class
    self._seed = seed

  def __len__(self) -> int:
    return sys.maxsize

  def __str__(self) -> str:
    return (
      f"PKIndexDataset(P={self._classes_per_group}, "
      f"K={self._examples_per_class}, seed={self._seed})"
    )

  @functools.lru_cache(maxsize=64)
  def chunk(self, chunk_index: int) -> np.ndarray:
    """Returns the [P * K] example indices of one chunk, grouped by class."""
    rng = np.random.default_rng((self._seed, chunk_index))
    groups = rng.choice(len(self._members), self._classes_per_group, replace=False)
    return np.concatenate(
      [rng.choice(self._members[g], self._examples_per_class, replace=False) for g in groups]
    )

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    chunk_index, position = divmod(index, self._classes_per_group * self._examples_per_class)
    return int(self.chunk(chunk_index)[position])
