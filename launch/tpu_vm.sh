#!/usr/bin/env bash
# Train on a Cloud TPU VM pod slice: the same command on every worker, started over ssh.
#   TPU_NAME=my-v4-32 ZONE=us-central2-b launch/tpu_vm.sh [CONFIG] [WORKDIR] [--config.key=value ...]
# Edit / set: TPU_NAME, ZONE, PROJECT (optional), REPO_DIR (where the code lives on the workers),
# DATA (a DATA_DIR every worker can read: copy it to each worker's disk or mount a shared
# filesystem; each worker reads only its own shards, so the shard count must divide by the
# worker count) and WORKDIR (on a filesystem all workers share, e.g. a Filestore or gcsfuse
# mount: orbax writes checkpoints from every host).  jax.distributed finds the other workers
# from the TPU metadata itself (TPU_WORKER_HOSTNAMES; crnn_jax/distributed.py).
# First run with SETUP=1 to copy the repository and install jax[tpu] on every worker.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
CONFIG=${1:-configs/crnn_paper.py}
WORKDIR=${2:-/mnt/shared/runs/crnn_paper}
shift $(( $# < 2 ? $# : 2 ))
REPO_DIR=${REPO_DIR:-crnn-jax}
DATA=${DATA:-/mnt/shared/data/poem}
gc=(gcloud compute tpus tpu-vm)
where=(--zone="$ZONE" ${PROJECT:+--project="$PROJECT"})
if [[ "${SETUP:-0}" == 1 ]]; then
  "${gc[@]}" scp --recurse --worker=all "${where[@]}" "$PWD" "$TPU_NAME:~/$REPO_DIR"
  "${gc[@]}" ssh "$TPU_NAME" --worker=all "${where[@]}" --command \
    "cd ~/$REPO_DIR && python3 -m venv .venv && .venv/bin/pip install -q -e . 'jax[tpu]==0.10.2'"
fi
args=$(printf ' %q' "$@")
"${gc[@]}" ssh "$TPU_NAME" --worker=all "${where[@]}" --command \
  "cd ~/$REPO_DIR && TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/crnn-train --config $CONFIG --workdir $WORKDIR --config.data_dir=$DATA$args"
