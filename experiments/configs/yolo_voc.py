"""YOLOv1 on PASCAL VOC: 7x7 grid, 2 boxes, 20 classes at 448x448 on a ResNet-18 backbone.

The paper's loss and head (two 3x3 convs of 1024, fully connected 4096, dropout 0.5).
Needs the TFDS dataset prepared (`tfds build voc`). `local` shrinks everything to run on
two CPU cores.

    cnnjax train --config=experiments/configs/yolo_voc.py --workdir=workdirs/yolo_voc
"""

import ml_collections

from cnnjax.train import config as config_lib
from cnnjax.train import config_args


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`arg`: none for the full experiment, `local` for a CPU-sized one."""
  options = config_args.parse(arg, ("local",), __file__)
  config = config_lib.defaults("yolo")
  config.model = "yolo_v1"
  config.model_kwargs = {
    "backbone": "resnet18",
    "grid_size": 7,
    "num_boxes": 2,
    "head_width": 1024,
    "hidden": 4096,
    "dropout_rate": 0.5,
  }
  config.dataset = "voc"
  config.train_split = "train"
  config.input.size = 448
  config.batch_size = 64
  config.num_epochs = 135.0
  config.optimizer.name = "sgd"
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 5e-4
  config.schedule.name = "cosine"
  config.schedule.learning_rate = 1e-3
  config.schedule.warmup_steps = 1000
  config.log_every = 50
  config.evals.test.every = 5000
  config.checkpoint_every = 1000
  config.best_metric = "test/map50"
  if "local" in options:
    config.model_kwargs = {
      "backbone": "conv",
      "backbone_widths": (8, 16),
      "grid_size": 7,
      "num_boxes": 2,
      "head_width": 16,
      "hidden": 64,
      "dropout_rate": 0.5,
    }
    config.input.size = 56
    config.batch_size = 8
    config.num_epochs = 1.0
  return config
