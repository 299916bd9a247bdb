"""FaceNet-style metric learning on LFW: 128-d L2-normalised embeddings, semi-hard triplets.

Squared L2 distance, margin 0.2, online semi-hard negatives over the global batch, an
Adam-style optimiser; evaluated by kNN accuracy, recall@1/5 and verification accuracy at
the best threshold. LFW in TFDS has one split, so training and evaluation slice it by
examples.

FaceNet's batches hold about 40 faces of each identity, 1,800 in all; LFW cannot fill
them: only about 19 of its 5,749 people have 40 images or more (1,680 have two or more).
The P x K batches here take K = 4 faces of each of P identities, the same number of faces
per batch: 1,792 = 8 devices x 56 identities x 4 faces. Every device's batch must be P x K,
so on another device count keep `batch_size / devices` a multiple of 4; P then must not
exceed the identities with 4 or more faces in the train slice (a one-line error says so).

    cnnjax train --config=experiments/configs/facenet_lfw.py --workdir=...
    cnnjax train --config=experiments/configs/facenet_lfw.py:local --workdir=...

`arg`: `local` trains LeNet-5 embeddings on the offline digits instead (minutes on a CPU).
"""

import ml_collections

from cnnjax.train import config as config_lib
from cnnjax.train import config_args

DEVICES = 8  # A v3-8 TPU or an 8-GPU machine.
IDENTITIES_PER_DEVICE = 56  # P.
FACES_PER_IDENTITY = 4  # K.


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  options = config_args.parse(arg, ("local",), __file__)
  config = config_lib.defaults("metric_learning")
  config.model = "resnet50"
  config.dataset = "lfw"
  config.train_split = "train[:90%]"
  config.evals.test.split = "train[90%:]"
  config.input.size = 160
  config.input.augment = "inception"
  config.dtype = "bfloat16"
  config.batch_size = DEVICES * IDENTITIES_PER_DEVICE * FACES_PER_IDENTITY
  config.num_steps = 50_000
  config.metric.loss = "semihard"
  config.metric.margin = 0.2
  config.metric.distance = "squared_l2"
  config.metric.embedding_dim = 128
  config.metric.examples_per_class = FACES_PER_IDENTITY
  config.optimizer.name = "adamw"
  config.schedule.name = "cosine"
  config.schedule.learning_rate = 1e-3
  config.schedule.warmup_steps = 1_000
  config.log_every = 100
  config.evals.test.every = 5_000
  config.checkpoint_every = 5_000
  config.best_metric = "test/verification_accuracy"
  if "local" in options:
    config.model = "lenet5"
    config.dataset = "digits"
    config.train_split = "train"
    config.evals.test.split = "test"
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
    config.evals.test.every = 300
    config.checkpoint_every = 300
  return config
