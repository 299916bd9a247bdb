"""YOLOv1 on the generated `shapes` images, read at 32x32 (up to 4 objects of 3 classes).

The 10,000 training images of `shapes` (64x64, resized to 32x32 on the device) rather than
the 2,000 of `shapes/small`: the paper's fully connected head overfits the smaller set.

A small conv backbone (stride 4) feeds the paper's head: two 3x3 convs and two fully
connected layers predicting an 8x8 grid with 2 boxes per cell. The paper's loss
(lambda_coord 5, lambda_noobj 0.5, square-rooted sizes); evaluated by VOC mAP@0.5.

    cnnjax train --config=experiments/configs/yolo_shapes.py --workdir=workdirs/yolo_shapes
"""

import ml_collections

from cnnjax.train import config as config_lib
from cnnjax.train import config_args


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`arg`: none, or `local` (the same experiment: it already runs on two CPU cores)."""
  config_args.parse(arg, ("local",), __file__)
  config = config_lib.defaults("yolo")
  config.model = "yolo_v1"
  config.model_kwargs = {
    "backbone": "conv",
    "backbone_widths": (32, 64),
    "grid_size": 8,
    "num_boxes": 2,
    "head_width": 64,
    "hidden": 512,
    "dropout_rate": 0.0,
  }
  config.dataset = "shapes"
  config.input.size = 32
  config.batch_size = 32
  config.num_steps = 3000
  config.detection.score_threshold = 0.05
  config.detection.nms_iou = 0.5
  config.optimizer.name = "adamw"
  config.optimizer.weight_decay = 1e-4
  config.optimizer.clip_norm = 10.0
  config.schedule.name = "cosine"
  config.schedule.learning_rate = 1e-3
  config.schedule.warmup_steps = 100
  config.log_every = 100
  config.evals.test.every = 3000
  config.checkpoint_every = 1000
  config.best_metric = "test/map50"
  return config
