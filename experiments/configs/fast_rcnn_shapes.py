"""Fast R-CNN on the generated `shapes/small` images (32x32, up to 4 objects of 3 classes).

A small conv backbone (stride 4, an 8x8 map) is shared by all RoIs; RoI pooling to 4x4,
two fully connected layers, softmax over background + 3 classes and per-class box
regression, trained with the multi-task loss on 32 sampled RoIs per image (25% foreground).
Training RoIs are jittered object boxes plus random boxes (`detection.train_proposals`);
evaluation scores the selective-search proposals of each test image, as the paper.

    cnnjax train --config=experiments/configs/fast_rcnn_shapes.py \
        --workdir=workdirs/fast_rcnn_shapes
"""

import ml_collections

from cnnjax.train import config as config_lib
from cnnjax.train import config_args


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`arg`: none, or `local` (the same experiment: it already runs on two CPU cores)."""
  config_args.parse(arg, ("local",), __file__)
  config = config_lib.defaults("region_cnn")
  config.model = "fast_rcnn"
  config.model_kwargs = {
    "backbone": "conv",
    "backbone_widths": (32, 64),
    "pool": "roi_pool",
    "pool_size": 4,
    "hidden": 256,
    "dropout_rate": 0.0,
  }
  config.dataset = "shapes/small"
  config.batch_size = 32
  config.num_steps = 800
  config.detection.train_proposals = "jitter"
  config.detection.num_proposals = 64
  config.detection.rois_per_image = 32
  config.detection.foreground_fraction = 0.25
  config.detection.nms_iou = 0.3
  config.optimizer.name = "adamw"
  config.optimizer.weight_decay = 1e-4
  config.schedule.name = "cosine"
  config.schedule.learning_rate = 1e-3
  config.schedule.warmup_steps = 50
  config.log_every = 100
  config.evals.test.every = 800
  config.checkpoint_every = 400
  config.best_metric = "test/map50"
  return config
