#!/usr/bin/env bash
# Train on one machine: all its devices in one process.
#   launch/local.sh CONFIG WORKDIR [--config.key=value ...]
# On a CPU-only host the cores are split into XLA devices (one per core, rounded down to a power
# of two and capped at 8, so that batch sizes divide evenly), which is faster for the
# data-parallel step than one device using every core.  Set CPU_DEVICES to change it.
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:?usage: launch/local.sh CONFIG WORKDIR [--config.key=value ...]}
workdir=${2:?usage: launch/local.sh CONFIG WORKDIR [--config.key=value ...]}
shift 2
cores=$(nproc)
devices=1
while (( devices * 2 <= cores && devices * 2 <= 8 )); do devices=$(( devices * 2 )); done
CPU_DEVICES=${CPU_DEVICES:-$devices}
exec .venv/bin/crnn-train --config "$config" --workdir "$workdir" --cpu_devices "$CPU_DEVICES" "$@"
