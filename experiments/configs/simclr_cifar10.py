"""SimCLR on CIFAR-10 (Chen et al. 2020, appendix B.9): ResNet-50, batch 1024, LARS.

LARS lr 0.3 x B/256 (1.2 at 1024), weight decay 1e-6 (BN and biases excluded from decay
and adaptation), 10 warmup epochs then cosine, temperature 0.5, colour strength 0.5, no
blur, global BatchNorm, 2-layer MLP head to 128-d. Paper linear eval: 94.0% (1000 epochs).

    cnnjax train --config=experiments/configs/simclr_cifar10.py --workdir=...
    cnnjax train --config=experiments/configs/simclr_cifar10.py:local --workdir=...

`arg`: `local` runs a narrow ResNet-18 on the offline `shapes/small` images for minutes.
"""

import ml_collections

from cnnjax.train import config as config_lib
from cnnjax.train import config_args


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  options = config_args.parse(arg, ("local",), __file__)
  config = config_lib.defaults("simclr")
  config.model = "resnet50"
  config.model_kwargs = {"stem": "cifar"}
  config.dataset = "cifar10"
  config.input.size = 32
  config.global_bn = True
  config.dtype = "bfloat16"
  config.batch_size = 1024
  config.num_epochs = 1000.0
  config.simclr.temperature = 0.5
  config.simclr.projection_dim = 128
  config.simclr.strength = 0.5
  config.simclr.blur = False
  config.optimizer.name = "lars"
  config.optimizer.weight_decay = 1e-6
  config.schedule.name = "cosine"
  config.schedule.learning_rate = 0.3
  config.schedule.scale_with_batch = "linear"
  config.schedule.warmup_steps = 10 * 50_000 // 1024
  config.log_every = 100
  config.evals.knn.every = 10_000
  config.checkpoint_every = 5_000
  config.best_metric = "knn/accuracy"
  if "local" in options:
    config.model = "resnet18"
    config.model_kwargs = {"stem": "cifar", "width": 8}
    config.dataset = "shapes/small"
    config.dtype = "float32"
    config.batch_size = 64
    config.num_epochs = 0.0
    config.num_steps = 150
    config.schedule.warmup_steps = 15
    config.log_every = 25
    config.evals.knn.every = 150
    config.checkpoint_every = 150
  return config
