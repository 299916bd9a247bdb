"""ResNet on CIFAR-10, the ResNet paper's recipe (He et al. 2015, section 4.2).

SGD momentum 0.9, lr 0.1 divided by 10 at 32k and 48k iterations, stop at 64k, batch
128, weight decay 1e-4, 4-pixel pad + random crop + flip. Paper error: ResNet-20 8.75%,
ResNet-56 6.97%, ResNet-110 6.43%.

    cnnjax train --config=experiments/configs/resnet_cifar10.py:resnet56 --workdir=...
    cnnjax train --config=experiments/configs/resnet_cifar10.py:local --workdir=...

`arg`: comma-separated; a depth name (resnet20, resnet32, resnet44, resnet56, resnet110)
and/or `local` (a narrow ResNet-20 on the offline `shapes/small` images, minutes on a CPU).
"""

import ml_collections

from cnnjax.train import config as config_lib
from cnnjax.train import config_args

DEPTHS = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  options = config_args.parse(arg, (*DEPTHS, "local"), __file__)
  config = config_lib.defaults("classification")
  config.model = config_args.pick(options, DEPTHS, "resnet20")
  config.dataset = "cifar10"
  config.input.augment = "cifar"
  config.batch_size = 128
  config.num_steps = 64_000
  config.optimizer.name = "sgd"
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 1e-4
  config.schedule.name = "step"
  config.schedule.learning_rate = 0.1
  config.schedule.boundaries = (32_000, 48_000)
  config.schedule.decay_factor = 0.1
  config.log_every = 100
  config.evals.test.every = 2_000
  config.best_metric = "test/accuracy"
  config.checkpoint_every = 2_000
  config.keep_checkpoints = 3
  if "local" in options:
    config.dataset = "shapes/small"
    config.model_kwargs = {"width": 8}
    config.batch_size = 64
    config.num_steps = 300
    config.schedule.boundaries = (150, 225)
    config.log_every = 25
    config.evals.test.every = 150
    config.checkpoint_every = 150
  return config
