#!/usr/bin/env bash
# A multi-host run on one machine: N local crnn-train processes that find each other on
# 127.0.0.1 (jax.distributed + gloo collectives on CPU).  What the multi-host tests use; on a real
# cluster use launch/slurm.sbatch or launch/tpu_vm.sh instead.
#   launch/multiprocess.sh N [--devices D] [--port P] [--logs DIR] -- --config C --workdir W [--config.k=v ...]
# Each process gets D fake CPU devices (default 1), JAX_COORDINATOR_ADDRESS=127.0.0.1:P (default:
# a free port), JAX_NUM_PROCESSES=N and JAX_PROCESS_ID=i, and logs to DIR/process_i.log (default:
# a temporary folder, printed).  If one process fails the others are stopped; the exit status is
# the first failure's (0 when all succeed).  SIGTERM/SIGINT are passed on to every process.
set -uo pipefail
cd "$(dirname "$0")/.."
usage="usage: launch/multiprocess.sh N [--devices D] [--port P] [--logs DIR] -- CRNN_TRAIN_ARGS..."
n=${1:?$usage}; shift
devices=1; port=""; logs=""
while (( $# )); do
  case "$1" in
    --devices) devices=$2; shift 2;;
    --port) port=$2; shift 2;;
    --logs) logs=$2; shift 2;;
    --) shift; break;;
    *) echo "$usage" >&2; exit 2;;
  esac
done
PY=${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3 )}
[[ -n "$port" ]] || port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
[[ -n "$logs" ]] || logs=$(mktemp -d -t crnn-mp.XXXXXX)
mkdir -p "$logs"
echo "multiprocess: $n processes x $devices CPU devices, coordinator 127.0.0.1:$port, logs in $logs" >&2
pids=()
for (( i = 0; i < n; i++ )); do
  JAX_COORDINATOR_ADDRESS=127.0.0.1:$port JAX_NUM_PROCESSES=$n JAX_PROCESS_ID=$i \
    "$PY" -m crnn_jax.main --cpu_devices "$devices" "$@" > "$logs/process_$i.log" 2>&1 &
  pids+=($!)
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null' TERM INT
status=0
remaining=$n
while (( remaining > 0 )); do
  unset done_pid
  wait -n -p done_pid "${pids[@]}"; rc=$?
  [[ -z "${done_pid:-}" ]] && continue   # woken by a trapped signal
  remaining=$(( remaining - 1 ))
  if (( rc != 0 && status == 0 )); then
    status=$rc
    echo "multiprocess: a process exited with status $rc; stopping the others" >&2
    kill -TERM "${pids[@]}" 2>/dev/null
  fi
done
for (( i = 0; i < n; i++ )); do
  echo "---- process $i (tail of $logs/process_$i.log)" >&2
  tail -n 5 "$logs/process_$i.log" >&2
done
exit $status
