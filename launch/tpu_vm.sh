#!/usr/bin/env bash
# Train one experiment on a Cloud TPU VM slice (v4-8 .. v5p pods), every host running the
# same command. Spot/preemptible slices are fine: cnnjax saves on SIGTERM and resumes from
# the workdir, so re-running this script after a preemption continues the run.
#
#   TPU_NAME=cnnjax-v4 ZONE=us-central2-b ACCELERATOR=v4-8 \
#   CONFIG=experiments/configs/resnet50_imagenet.py \
#   WORKDIR=gs://my-bucket/runs/resnet50 DATA_DIR=gs://my-bucket/tensorflow_datasets \
#   bash launch/tpu_vm.sh [--config.batch_size=1024 ...]
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}" "${CONFIG:?set CONFIG}" "${WORKDIR:?set WORKDIR}"
: "${DATA_DIR:?set DATA_DIR (a gs:// bucket holding prepared TFDS datasets)}"
ACCELERATOR=${ACCELERATOR:-v4-8}
RUNTIME=${RUNTIME:-tpu-ubuntu2204-base}
SPOT=${SPOT:-1}
REPO_DIR=${REPO_DIR:-$(cd "$(dirname "$0")/.." && pwd)}

spot_flag=()
if [ "$SPOT" = 1 ]; then spot_flag=(--spot); fi
if ! gcloud compute tpus tpu-vm describe "$TPU_NAME" --zone="$ZONE" >/dev/null 2>&1; then
  gcloud compute tpus tpu-vm create "$TPU_NAME" --zone="$ZONE" \
    --accelerator-type="$ACCELERATOR" --version="$RUNTIME" "${spot_flag[@]}"
fi

# Same code on every host: copy the checkout, then install with the TPU extra.
gcloud compute tpus tpu-vm scp --recurse --zone="$ZONE" --worker=all \
  "$REPO_DIR" "$TPU_NAME":~/cnnjax-src
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="
  set -e
  cd ~/cnnjax-src
  python3 -m venv .venv && .venv/bin/pip install -q -U pip && .venv/bin/pip install -q -e '.[tpu]'
  .venv/bin/cnnjax train --distributed --config='$CONFIG' --workdir='$WORKDIR' \
    --config.data_dir='$DATA_DIR' --config.dtype=bfloat16 $*
"
