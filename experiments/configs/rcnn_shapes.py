"""R-CNN on the generated `shapes/small` images: the baseline that Fast R-CNN speeds up.

Every RoI is cropped with 2 pixels of context, warped to 16x16 and run through its own
small CNN (the same conv blocks as fast_rcnn_shapes' backbone), then the same class and
box heads. Compare time per image with experiments/benchmarks/detection_speed.py.

    cnnjax train --config=experiments/configs/rcnn_shapes.py --workdir=workdirs/rcnn_shapes
"""

import ml_collections

from cnnjax.train import config as config_lib
from cnnjax.train import config_args


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`arg`: none, or `local` (the same experiment: it already runs on two CPU cores)."""
  config_args.parse(arg, ("local",), __file__)
  config = config_lib.defaults("region_cnn")
  config.model = "rcnn"
  config.model_kwargs = {
    "backbone": "conv",
    "backbone_widths": (32, 64),
    "crop_size": 16,
    "context": 2.0,
    "hidden": 256,
    "dropout_rate": 0.0,
  }
  config.dataset = "shapes/small"
  config.batch_size = 16
  config.num_steps = 600
  config.detection.train_proposals = "jitter"
  config.detection.num_proposals = 64
  config.detection.rois_per_image = 32
  config.detection.nms_iou = 0.3
  config.optimizer.name = "adamw"
  config.optimizer.weight_decay = 1e-4
  config.schedule.name = "cosine"
  config.schedule.learning_rate = 1e-3
  config.schedule.warmup_steps = 50
  config.log_every = 100
  config.evals.test.every = 600
  config.checkpoint_every = 300
  config.best_metric = "test/map50"
  return config
