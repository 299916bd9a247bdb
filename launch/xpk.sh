#!/usr/bin/env bash
# Train on a GKE TPU cluster with xpk (https://github.com/AI-Hypercomputer/xpk). The image
# must contain this repository installed with `pip install -e '.[tpu]'`; xpk runs the command
# on every host of NUM_SLICES slices and JAX discovers the topology itself.
# xpk restarts a workload whose pods fail, up to MAX_RESTARTS times. A preempted host gets
# SIGTERM: cnnjax saves a checkpoint and exits 75 (`--preempted_exit_code`), a failure that
# makes xpk restart the workload, which resumes from WORKDIR; a finished run exits 0.
#
#   CLUSTER=my-cluster TPU_TYPE=v5litepod-256 IMAGE=gcr.io/PROJECT/cnnjax:latest \
#     CONFIG=experiments/configs/simclr_cifar10.py WORKDIR=gs://BUCKET/simclr \
#     launch/xpk.sh [--config.KEY=VALUE ...]
set -euo pipefail

: "${CLUSTER:?set CLUSTER}" "${TPU_TYPE:?set TPU_TYPE}" "${IMAGE:?set IMAGE}"
: "${CONFIG:?set CONFIG}" "${WORKDIR:?set WORKDIR}"
WORKLOAD="${WORKLOAD:-cnnjax-$(date +%Y%m%d-%H%M%S)}"
COMMAND="cnnjax train --distributed --preempted_exit_code=75 --config=$CONFIG --workdir=$WORKDIR $*"

xpk workload create --cluster="$CLUSTER" --workload="$WORKLOAD" --tpu-type="$TPU_TYPE" \
  --num-slices="${NUM_SLICES:-1}" --docker-image="$IMAGE" --max-restarts="${MAX_RESTARTS:-10}" \
  --command="$COMMAND"
