#!/usr/bin/env bash
# Train on a Cloud TPU VM slice: creates the VM (unless it exists), installs cnnjax on every
# worker and starts the same `cnnjax train` on all of them; JAX finds its peers itself.
# Preemptible (spot) slices send SIGTERM: cnnjax saves a checkpoint and exits; rerunning this
# script resumes from WORKDIR.
#
#   ZONE=us-central2-b TPU_TYPE=v4-32 NAME=cnnjax-rn50 \
#     CONFIG=experiments/configs/resnet50_imagenet.py WORKDIR=gs://BUCKET/rn50 \
#     DATA_DIR=gs://BUCKET/tensorflow_datasets launch/tpu_vm.sh [--config.KEY=VALUE ...]
set -euo pipefail

: "${NAME:?set NAME}" "${ZONE:?set ZONE}" "${CONFIG:?set CONFIG}" "${WORKDIR:?set WORKDIR}"
TPU_TYPE="${TPU_TYPE:-v4-8}"
RUNTIME="${RUNTIME:-tpu-ubuntu2204-base}"
REPO_URL="${REPO_URL:-$(git config --get remote.origin.url)}"
SPOT="${SPOT:-1}"

if ! gcloud compute tpus tpu-vm describe "$NAME" --zone="$ZONE" >/dev/null 2>&1; then
  gcloud compute tpus tpu-vm create "$NAME" --zone="$ZONE" --accelerator-type="$TPU_TYPE" \
    --version="$RUNTIME" $([ "$SPOT" = 1 ] && echo --spot)
fi

run_all() {
  gcloud compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" --worker=all --command="$1"
}

run_all "test -d cnnjax || git clone $REPO_URL cnnjax; cd cnnjax && git pull --ff-only && \
  python3 -m venv .venv && .venv/bin/pip install -q -e '.[tpu]'"
run_all "cd cnnjax && TFDS_DATA_DIR=${DATA_DIR:-} .venv/bin/cnnjax train --distributed \
  --config=$CONFIG --workdir=$WORKDIR $*"
