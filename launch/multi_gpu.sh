#!/usr/bin/env bash
# One machine, all its GPUs: JAX sees every local GPU as a device and the trainer shards
# the global batch over them. Install first with `pip install -e '.[cuda]'`.
#
#   CONFIG=experiments/configs/resnet_cifar10.py WORKDIR=runs/resnet56 bash launch/multi_gpu.sh
#
# Several machines: run this on each with COORDINATOR=host0:1234 NUM_NODES=N NODE_RANK=i.
set -euo pipefail
: "${CONFIG:?set CONFIG}" "${WORKDIR:?set WORKDIR}"
CNNJAX=${CNNJAX:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/cnnjax}
# Let XLA take what it needs instead of preallocating 75% of each GPU.
export XLA_PYTHON_CLIENT_PREALLOCATE=${XLA_PYTHON_CLIENT_PREALLOCATE:-false}

distributed=()
if [ -n "${COORDINATOR:-}" ]; then
  distributed=(--coordinator_address="$COORDINATOR" --num_processes="${NUM_NODES:?}" \
               --process_id="${NODE_RANK:?}")
fi
exec "$CNNJAX" train "${distributed[@]}" --config="$CONFIG" --workdir="$WORKDIR" \
  --config.dtype=bfloat16 "$@"
