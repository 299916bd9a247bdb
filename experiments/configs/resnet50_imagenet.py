"""ResNet-50 (v1.5) on ImageNet, the ResNet paper's recipe (He et al. 2015, section 3.4).

SGD momentum 0.9, lr 0.1 for batch 256 (scaled linearly with the batch), divided by 10
when the validation accuracy stalls, weight decay 1e-4, random resized crop + flip at
224, eval on the central 224 crop of a 256 resize; bfloat16 compute on TPU/GPU.
torchvision's V1 weights reach 76.13% top-1 (ANCHORS.md).

    cnnjax train --config=experiments/configs/resnet50_imagenet.py --workdir=gs://.../rn50
    cnnjax train --config=experiments/configs/resnet50_imagenet.py:local --workdir=...

`arg`: `local` trains a narrow ResNet-50 on the offline `shapes/small` images at 64x64.
"""

import ml_collections

from cnnjax.train import config as config_lib
from cnnjax.train import config_args


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  options = config_args.parse(arg, ("local",), __file__)
  config = config_lib.defaults("classification")
  config.model = "resnet50"
  config.dataset = "imagenet2012"
  config.evals.test.split = "validation"
  config.input.size = 224
  config.input.augment = "inception"
  config.input.center_crop = True
  config.dtype = "bfloat16"
  config.batch_size = 256
  config.num_epochs = 90.0
  config.optimizer.name = "sgd"
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 1e-4
  config.schedule.name = "plateau"
  config.schedule.learning_rate = 0.1
  config.schedule.scale_with_batch = "linear"
  config.schedule.patience = 3
  config.schedule.decay_factor = 0.1
  config.log_every = 100
  config.evals.test.every = 5_000
  config.best_metric = "test/accuracy"
  config.checkpoint_every = 5_000
  config.keep_checkpoints = 3
  if "local" in options:
    config.dataset = "shapes/small"
    config.evals.test.split = "test"
    config.input.size = 64
    config.dtype = "float32"
    config.model_kwargs = {"width": 8}
    config.batch_size = 32
    config.num_epochs = 0.0
    config.num_steps = 200
    config.schedule.patience = 1
    config.log_every = 25
    config.evals.test.every = 50
    config.checkpoint_every = 100
  return config
