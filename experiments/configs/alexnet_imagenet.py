"""AlexNet on ImageNet, the 2012 paper's recipe (Krizhevsky et al., section 5).

SGD momentum 0.9, lr 0.01 divided by 10 when the validation error stalls, weight decay
5e-4, batch 128, dropout 0.5 (in the model), random crops + flips; torchvision's
single-tower AlexNet by default, `alexnet2012` for the paper's two-tower form.

    cnnjax train --config=experiments/configs/alexnet_imagenet.py --workdir=...
    cnnjax train --config=experiments/configs/alexnet_imagenet.py:local --workdir=...

`arg`: comma-separated; `alexnet2012` and/or `local` (a few hundred steps on the offline
`shapes/small` images upsampled to 64x64, as AlexNet needs at least 63 pixels).
"""

import ml_collections

from cnnjax.train import config as config_lib
from cnnjax.train import config_args


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  options = config_args.parse(arg, ("alexnet2012", "local"), __file__)
  config = config_lib.defaults("classification")
  config.model = "alexnet2012" if "alexnet2012" in options else "alexnet"
  config.dataset = "imagenet2012"
  config.evals.test.split = "validation"
  config.input.size = 224
  config.input.augment = "inception"
  config.input.center_crop = True
  config.batch_size = 128
  config.num_epochs = 90.0
  config.optimizer.name = "sgd"
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 5e-4
  config.schedule.name = "plateau"
  config.schedule.learning_rate = 0.01
  config.schedule.patience = 3
  config.log_every = 100
  config.evals.test.every = 5_000
  config.best_metric = "test/accuracy"
  config.checkpoint_every = 5_000
  if "local" in options:
    config.dataset = "shapes/small"
    config.evals.test.split = "test"
    config.input.size = 64
    config.input.augment = "none"
    config.input.center_crop = False
    config.batch_size = 32
    config.num_epochs = 0.0
    config.num_steps = 200
    config.schedule.patience = 1
    config.log_every = 25
    config.evals.test.every = 50
    config.checkpoint_every = 100
  return config
