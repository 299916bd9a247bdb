#!/usr/bin/env bash
# Train on the GPUs of one machine, or of several machines (one process per machine).
# One process drives all local GPUs; with NUM_NODES > 1 every machine runs this script with
# its own NODE_RANK and the same COORDINATOR (host:port of node 0).
#
#   CONFIG=experiments/configs/resnet_cifar10.py WORKDIR=runs/rn20 launch/multi_gpu.sh
#   NUM_NODES=2 NODE_RANK=0 COORDINATOR=10.0.0.1:1234 CONFIG=... WORKDIR=... launch/multi_gpu.sh
set -euo pipefail

: "${CONFIG:?set CONFIG}" "${WORKDIR:?set WORKDIR}"
BIN="${BIN:-.venv/bin}"
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}"

if [ "${NUM_NODES:-1}" -gt 1 ]; then
  : "${NODE_RANK:?set NODE_RANK}" "${COORDINATOR:?set COORDINATOR}"
  exec "$BIN/cnnjax" train --coordinator_address="$COORDINATOR" --num_processes="$NUM_NODES" \
    --process_id="$NODE_RANK" --config="$CONFIG" --workdir="$WORKDIR" "$@"
fi
exec "$BIN/cnnjax" train --config="$CONFIG" --workdir="$WORKDIR" "$@"
