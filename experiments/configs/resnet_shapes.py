"""ResNet-20 (width 8) classifying the generated `shapes` images (64x64, 3 classes).

The label of a `shapes` image is the class of its largest object, and every image has a
mask, so whether an explanation points at the object can be measured
(`experiments/gradcam_check.py`). At 64x64 the last feature map, which Grad-CAM looks
at, is 16x16 (a unit every 4 pixels) and the objects are 10-29 pixels across. The ResNet
paper's CIFAR recipe: SGD momentum 0.9, lr 0.1 divided by 10 at 50% and 75% of the steps,
weight decay 1e-4, pad + crop + flip; 2,000 steps of 64 (13 epochs of the 10,000 training
images). About 20 minutes on two CPU cores.

    cnnjax train --config=experiments/configs/resnet_shapes.py --workdir=workdirs/resnet_shapes
"""

import ml_collections

from cnnjax.train import config as config_lib
from cnnjax.train import config_args


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`arg`: none, or `local` (the same experiment: it already runs on two CPU cores)."""
  config_args.parse(arg, ("local",), __file__)
  config = config_lib.defaults("classification")
  config.model = "resnet20"
  config.model_kwargs = {"width": 8}
  config.dataset = "shapes"
  config.input.augment = "cifar"
  config.batch_size = 64
  config.num_steps = 2000
  config.optimizer.name = "sgd"
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 1e-4
  config.schedule.name = "step"
  config.schedule.learning_rate = 0.1
  config.schedule.boundaries = (1000, 1500)
  config.schedule.decay_factor = 0.1
  config.log_every = 100
  config.evals.test.every = 1000
  config.checkpoint_every = 1000
  config.best_metric = "test/accuracy"
  return config
