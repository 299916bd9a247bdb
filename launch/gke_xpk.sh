#!/usr/bin/env bash
# Submit an experiment as a GKE workload through xpk (one pod per TPU host). xpk restarts
# preempted workloads; cnnjax resumes from the gs:// workdir on each restart.
#
#   CLUSTER=my-cluster TPU_TYPE=v5p-32 IMAGE=us-docker.pkg.dev/PROJECT/cnnjax/train:latest \
#   CONFIG=experiments/configs/resnet50_imagenet.py WORKDIR=gs://bucket/runs/r50 \
#   DATA_DIR=gs://bucket/tensorflow_datasets bash launch/gke_xpk.sh
#
# IMAGE is any image with this checkout installed as `pip install -e '.[tpu]'`.
set -euo pipefail
: "${CLUSTER:?}" "${TPU_TYPE:?}" "${IMAGE:?}" "${CONFIG:?}" "${WORKDIR:?}" "${DATA_DIR:?}"
NUM_SLICES=${NUM_SLICES:-1}
WORKLOAD=${WORKLOAD:-cnnjax-$(date +%Y%m%d-%H%M%S)}
MAX_RESTARTS=${MAX_RESTARTS:-10}

xpk workload create --cluster="$CLUSTER" --workload="$WORKLOAD" --tpu-type="$TPU_TYPE" \
  --num-slices="$NUM_SLICES" --docker-image="$IMAGE" --max-restarts="$MAX_RESTARTS" \
  --command="cnnjax train --distributed --config=$CONFIG --workdir=$WORKDIR \
    --config.data_dir=$DATA_DIR --config.dtype=bfloat16 $*"
