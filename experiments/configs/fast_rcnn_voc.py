"""Fast R-CNN on PASCAL VOC with a ResNet-18 backbone, RoI pooling 7x7 and selective search.

Training samples 64 RoIs per image (25% foreground) from selective-search proposals
(computed on the host once per image and cached); testing scores up to 300 proposals.
Needs the TFDS dataset prepared (`tfds build voc`). `local` shrinks everything to run on
two CPU cores.

    cnnjax train --config=experiments/configs/fast_rcnn_voc.py --workdir=workdirs/fast_rcnn_voc
"""

import ml_collections

from cnnjax.train import config as config_lib
from cnnjax.train import config_args


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`arg`: none for the full experiment, `local` for a CPU-sized one."""
  options = config_args.parse(arg, ("local",), __file__)
  config = config_lib.defaults("region_cnn")
  config.model = "fast_rcnn"
  config.model_kwargs = {
    "backbone": "resnet18",
    "pool": "roi_pool",
    "pool_size": 7,
    "hidden": 1024,
    "dropout_rate": 0.5,
  }
  config.dataset = "voc"
  config.train_split = "train"
  config.input.size = 384
  config.batch_size = 8
  config.num_epochs = 20.0
  config.detection.train_proposals = "selective_search"
  config.detection.num_proposals = 300
  config.detection.proposal_scales = (100.0, 300.0)
  config.detection.rois_per_image = 64
  config.detection.background_iou_low = 0.1
  config.detection.nms_iou = 0.3
  config.optimizer.name = "sgd"
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 5e-4
  config.schedule.name = "step"
  config.schedule.learning_rate = 1e-3
  config.schedule.boundaries = (30000,)
  config.log_every = 50
  config.evals.test.every = 5000
  config.checkpoint_every = 1000
  config.best_metric = "test/map50"
  if "local" in options:
    config.model_kwargs = {
      "backbone": "conv",
      "backbone_widths": (8, 16),
      "pool": "roi_pool",
      "pool_size": 4,
      "hidden": 32,
      "dropout_rate": 0.5,
    }
    config.input.size = 64
    config.batch_size = 8
    config.num_epochs = 1.0
    config.detection.train_proposals = "jitter"
    config.detection.num_proposals = 32
    config.detection.rois_per_image = 16
  return config
