"""U-Net ('same' padding, BatchNorm) segmenting the generated `shapes/small` images.

Background plus circle, square and triangle: 4 classes per pixel, cross-entropy + soft Dice.
A few minutes on two CPU cores; reaches mIoU above 0.9 on the test split.

    cnnjax train --config=experiments/configs/unet_shapes.py --workdir=workdirs/unet_shapes
"""

import ml_collections

from cnnjax.train import config as config_lib
from cnnjax.train import config_args


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`arg`: none, or `local` (the same experiment: it already runs on two CPU cores)."""
  config_args.parse(arg, ("local",), __file__)
  config = config_lib.defaults("segmentation")
  config.model = "unet_same"
  config.model_kwargs = {"depth": 3, "width": 16}
  config.dataset = "shapes/small"
  config.batch_size = 32
  config.num_steps = 600
  config.segmentation.dice_weight = 1.0
  config.optimizer.name = "adamw"
  config.optimizer.weight_decay = 1e-4
  config.schedule.name = "cosine"
  config.schedule.learning_rate = 3e-3
  config.schedule.warmup_steps = 30
  config.log_every = 50
  config.evals.test.every = 600
  config.checkpoint_every = 300
  config.best_metric = "test/miou"
  return config
