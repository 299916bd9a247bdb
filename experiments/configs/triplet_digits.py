"""Triplet metric learning on digits: LeNet-5 features -> 64-d L2-normalised embeddings.

P x K batches (8 classes x 8 examples per device), online semi-hard mining (FaceNet),
margin 0.2 on squared L2. Evaluated by kNN accuracy, recall@1/5 and verification accuracy
on the test split; a PCA plot of the test embeddings lands in the workdir.

    cnnjax train --config=experiments/configs/triplet_digits.py --workdir=workdirs/triplet_digits
    ...:hard or ...:all picks the batch-hard or batch-all loss.
"""

import ml_collections

from cnnjax.train import config as config_lib
from cnnjax.train import config_args

LOSSES = ("semihard", "hard", "all")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`arg`: the triplet loss, `semihard` (default), `hard` or `all`.

  `local` changes nothing: the experiment already runs on two CPU cores.
  """
  options = config_args.parse(arg, (*LOSSES, "local"), __file__)
  config = config_lib.defaults("metric_learning")
  config.model = "lenet5"
  config.dataset = "digits"
  config.input.size = 32
  config.input.resize = 28
  config.batch_size = 64
  config.num_steps = 600
  config.metric.loss = config_args.pick(options, LOSSES, "semihard")
  config.metric.margin = 0.2
  config.metric.distance = "squared_l2"
  config.metric.embedding_dim = 64
  config.metric.examples_per_class = 8
  config.optimizer.name = "adamw"
  config.optimizer.weight_decay = 1e-4
  config.schedule.name = "cosine"
  config.schedule.learning_rate = 2e-3
  config.schedule.warmup_steps = 50
  config.log_every = 50
  config.evals.test.every = 300
  config.checkpoint_every = 300
  config.best_metric = "test/recall_at_1"
  return config
