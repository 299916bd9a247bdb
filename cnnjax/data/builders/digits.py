"""`digits`: the 1,797 8x8 handwritten digits that scikit-learn bundles (UCI optdigits).

Images are stored as uint8 [8, 8, 1] PNGs, the 0-16 ink counts rescaled to 0-255. The
train/test split is stratified (20% of every class goes to test) and fixed: each class's
examples, in the order scikit-learn ships them, are permuted with numpy's PCG64 generator
seeded with `SPLIT_SEED`, so every machine and every build produces the same split.
scikit-learn is needed only to build the dataset, never to read it.
"""

import numpy as np
import PIL.Image
import tensorflow_datasets as tfds

SPLIT_SEED = 20260101
TEST_FRACTION = 0.2


def split_indices(labels: np.ndarray) -> dict[str, np.ndarray]:
  """Returns the sorted example indices of each split; labels: [N] int."""
  rng = np.random.default_rng(SPLIT_SEED)
  test = []
  for label in np.unique(labels):
    members = np.flatnonzero(labels == label)
    num_test = int(round(TEST_FRACTION * len(members)))
    test.append(rng.permutation(members)[:num_test])
  test = np.sort(np.concatenate(test))
  train = np.setdiff1d(np.arange(len(labels)), test)
  return {"train": train, "test": test}


class Digits(tfds.core.GeneratorBasedBuilder):
  """scikit-learn's 8x8 digits, 10 classes, fixed stratified 1,438 / 359 split."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      description=__doc__,
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(8, 8, 1), dtype=np.uint8),
          "label": tfds.features.ClassLabel(num_classes=10),
        }
      ),
      supervised_keys=("image", "label"),
      homepage="https://archive.ics.uci.edu/dataset/80",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # The data ships with scikit-learn.
    from sklearn import datasets  # pylint: disable=g-import-not-at-top

    bunch = datasets.load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    return {
      split: self._generate_examples(images, labels, indices)
      for split, indices in split_indices(labels).items()
    }

  def _generate_examples(self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray):
    # Images go in as PIL images so that TFDS encodes them without TensorFlow.
    for index in indices:
      yield (
        int(index),
        {
          "image": PIL.Image.fromarray(images[index], mode="L"),
          "label": int(labels[index]),
        },
      )
