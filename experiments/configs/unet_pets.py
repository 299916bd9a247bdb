"""U-Net on Oxford-IIIT Pet trimaps: background, pet and border, at 128x128.

Needs the TFDS dataset prepared (`tfds build oxford_iiit_pet`). `local` shrinks the model
and images to run on two CPU cores.

    cnnjax train --config=experiments/configs/unet_pets.py --workdir=workdirs/unet_pets
"""

import ml_collections

from cnnjax.train import config as config_lib
from cnnjax.train import config_args


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`arg`: none for the full experiment, `local` for a CPU-sized one."""
  options = config_args.parse(arg, ("local",), __file__)
  config = config_lib.defaults("segmentation")
  config.model = "unet_same"
  config.model_kwargs = {"depth": 4, "width": 64}
  config.dataset = "oxford_iiit_pet"
  config.input.size = 128
  config.segmentation.num_classes = 3
  config.batch_size = 32
  config.num_epochs = 40.0
  config.optimizer.name = "adamw"
  config.optimizer.weight_decay = 1e-4
  config.schedule.name = "cosine"
  config.schedule.learning_rate = 1e-3
  config.schedule.warmup_steps = 200
  config.log_every = 50
  config.evals.test.every = 1000
  config.checkpoint_every = 1000
  config.best_metric = "test/miou"
  if "local" in options:
    config.model_kwargs = {"depth": 2, "width": 8}
    config.input.size = 32
    config.batch_size = 8
    config.num_epochs = 1.0
  return config
