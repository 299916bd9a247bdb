"""SimCLR on digits: LeNet-5 features, two random views per image, NT-Xent over the batch.

Views are random resized crops of the 8x8 digits at 16x16 (LeNet-5 pads them to 32x32)
with colour (brightness and contrast) jitter of strength 0.5 and no blur: the CIFAR
recipe at a digits scale. Temperature 0.5, 2-layer projection head to 32-d. At this
scale AdamW trains LeNet-5 more reliably than the paper's LARS (select it with
`--config.optimizer.name=lars --config.schedule.learning_rate=0.3
--config.schedule.scale_with_batch=linear`); `global_bn` matters for backbones with
BatchNorm (e.g. `--config.model=resnet20 --config.model_kwargs.width=8`). Evaluated by a
linear probe on frozen features and kNN accuracy; a few minutes on two CPU cores.

    cnnjax train --config=experiments/configs/simclr_digits.py --workdir=workdirs/simclr_digits
"""

import ml_collections

from cnnjax.train import config as config_lib
from cnnjax.train import config_args


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`arg`: none, or `local` (the same experiment: it already runs on two CPU cores)."""
  config_args.parse(arg, ("local",), __file__)
  config = config_lib.defaults("simclr")
  config.model = "lenet5"
  config.dataset = "digits"
  config.input.size = 16
  config.global_bn = True
  config.batch_size = 128
  config.num_steps = 300
  config.simclr.temperature = 0.5
  config.simclr.projection_dim = 32
  config.simclr.strength = 0.5
  config.simclr.blur = False
  config.optimizer.name = "adamw"
  config.optimizer.weight_decay = 1e-4
  config.schedule.name = "cosine"
  config.schedule.learning_rate = 2e-3
  config.schedule.warmup_steps = 30
  config.log_every = 25
  config.evals.knn.every = 300
  config.checkpoint_every = 150
  config.best_metric = "knn/accuracy"
  return config
