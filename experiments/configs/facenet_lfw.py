"""FaceNet-style metric learning on LFW: 128-d L2-normalised embeddings, semi-hard triplets.

Squared L2 distance, margin 0.2, P x K batches (45 identities x 40 faces = 1,800, as the
paper's ~40 faces per identity), Adam-style optimiser; evaluated by kNN accuracy,
recall@1/5 and verification accuracy at the best threshold. LFW in TFDS has one split,
so training and evaluation slice it by examples.

    cnnjax train --config=experiments/configs/facenet_lfw.py --workdir=...
    cnnjax train --config=experiments/configs/facenet_lfw.py:local --workdir=...

`arg`: `local` trains LeNet-5 embeddings on the offline digits instead (minutes on a CPU).
"""

import ml_collections

from cnnjax.train import config as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = config_lib.defaults("metric_learning")
  config.model = "resnet50"
  config.dataset = "lfw"
  config.train_split = "train[:90%]"
  config.eval_split = "train[90%:]"
  config.input.size = 160
  config.input.augment = "inception"
  config.dtype = "bfloat16"
  config.batch_size = 1800
  config.num_steps = 50_000
  config.metric.loss = "semihard"
  config.metric.margin = 0.2
  config.metric.distance = "squared_l2"
  config.metric.embedding_dim = 128
  config.metric.examples_per_class = 40
  config.optimizer.name = "adamw"
  config.schedule.name = "cosine"
  config.schedule.learning_rate = 1e-3
  config.schedule.warmup_steps = 1_000
  config.log_every = 100
  config.eval_every = 5_000
  config.checkpoint_every = 5_000
  config.best_metric = "verification_accuracy"
  if arg == "local":
    config.model = "lenet5"
    config.dataset = "digits"
    config.train_split = "train"
    config.eval_split = "test"
    config.input.size = 32
    config.input.resize = 28
    config.input.augment = "none"
    config.dtype = "float32"
    config.batch_size = 64
    config.num_steps = 300
    config.metric.embedding_dim = 64
    config.metric.examples_per_class = 8
    config.schedule.warmup_steps = 30
    config.log_every = 50
    config.eval_every = 300
    config.checkpoint_every = 300
  return config
