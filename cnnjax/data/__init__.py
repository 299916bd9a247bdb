"""Datasets (TFDS builders), the Grain host pipeline and samplers."""

from cnnjax.data.pipeline import dataset_info
from cnnjax.data.pipeline import DatasetInfo
from cnnjax.data.pipeline import eval_iterator
from cnnjax.data.pipeline import resolve_data_dir
from cnnjax.data.pipeline import train_iterator
