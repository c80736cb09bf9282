"""Multi-host start-up: `jax.distributed.initialize` from flags, the environment, or the cluster.

Which of these applies, first match wins:
  1. explicit: `--coordinator_address HOST:PORT --num_processes N --process_id I` (flags), or the
     same from JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID (what
     `launch/multiprocess.sh` sets);
  2. SLURM: inside an `srun` step with SLURM_NTASKS > 1 (jax reads SLURM_* itself);
  3. Cloud TPU VM pod slice: TPU_WORKER_HOSTNAMES lists more than one worker (jax asks the
     TPU metadata for the rest);
  4. otherwise one process: nothing to initialise.
On CPU the cross-process collectives are gloo's (TCP), so several local processes on 127.0.0.1
behave like several hosts: that is how the tests run multi-host code on one machine.
"""
import os
import sys

from crnn_jax.errors import UserError


def detect(coordinator_address=None, num_processes=None, process_id=None, env=None):
  """Returns (mode, kwargs for jax.distributed.initialize) or (None, {}) for one process."""
  env = os.environ if env is None else env
  addr = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS")
  n = num_processes if num_processes is not None else _int(env, "JAX_NUM_PROCESSES")
  pid = process_id if process_id is not None else _int(env, "JAX_PROCESS_ID")
  if addr or (n is not None and n > 1):
    missing = [name for name, v in (("--coordinator_address", addr), ("--num_processes", n),
                                    ("--process_id", pid)) if v is None]
    if missing:
      raise UserError(f"multi-process run: {', '.join(missing)} not given (flags or JAX_COORDINATOR_ADDRESS / "
                      "JAX_NUM_PROCESSES / JAX_PROCESS_ID); give all three, e.g. --coordinator_address "
                      "10.0.0.1:12345 --num_processes 2 --process_id 0")
    if not 0 <= pid < n:
      raise UserError(f"--process_id {pid} is not in [0, --num_processes {n})")
    if ":" not in addr:
      raise UserError(f"--coordinator_address {addr!r} needs a port: HOST:PORT")
    # Process 0's coordinator listens on the address it was given, not on every interface (an
    # unauthenticated gRPC service): 127.0.0.1:PORT stays on loopback.  JAX_COORDINATOR_BIND_ADDRESS
    # overrides (e.g. 0.0.0.0:PORT behind a NAT whose outside address is the one given).
    bind = env.get("JAX_COORDINATOR_BIND_ADDRESS") or addr
    return "explicit", {"coordinator_address": addr, "num_processes": n, "process_id": pid,
                        "coordinator_bind_address": bind}
  if env.get("SLURM_JOB_ID") and (_int(env, "SLURM_NTASKS") or 1) > 1:
    return "slurm", {}
  if len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1:
    return "tpu", {}
  return None, {}


def _int(env, key):
  v = env.get(key)
  if v in (None, ""):
    return None
  try:
    return int(v)
  except ValueError:
    raise UserError(f"environment variable {key}={v!r} is not an integer") from None


def _wait_for_coordinator(address, timeout_s, pid, n):
  """Polls HOST:PORT until it accepts a TCP connection.  (The runtime aborts the whole process
  with a C++ stack trace when the coordinator cannot be reached; this turns that into one line.)"""
  import socket
  import time
  host, _, port = address.rpartition(":")
  deadline = time.monotonic() + timeout_s
  last = None
  while time.monotonic() < deadline:
    try:
      with socket.create_connection((host.strip("[]"), int(port)), timeout=min(5.0, timeout_s)):
        return
    except OSError as e:
      last = e
      time.sleep(0.5)
  raise UserError(f"could not join the distributed run at {address} within {timeout_s} s (process {pid} of {n}): "
                  f"the coordinator (process 0) never answered ({last}). Start process 0 with the same "
                  "--num_processes and --coordinator_address, check the address, port and firewalls, or raise "
                  "--distributed_timeout")


def initialize(coordinator_address=None, num_processes=None, process_id=None, timeout_s=300):
  """Initialises jax.distributed when the run has several processes; returns the mode or None."""
  mode, kwargs = detect(coordinator_address, num_processes, process_id)
  if mode is None:
    return None
  if mode == "explicit" and kwargs["process_id"] != 0:
    _wait_for_coordinator(kwargs["coordinator_address"], timeout_s, kwargs["process_id"], kwargs["num_processes"])
  import jax
  if jax.config.jax_platforms in (None, "", "cpu") or "cpu" in str(jax.config.jax_platforms):
    # CPU collectives across processes (a no-op for GPU/TPU backends).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(initialization_timeout=int(timeout_s), **kwargs)
  except Exception as e:  # the runtime raises XlaRuntimeError/RuntimeError with a long message
    where = kwargs.get("coordinator_address", f"the {mode} coordinator")
    first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
    raise UserError(f"could not join the distributed run ({mode}) at {where} within {timeout_s} s "
                    f"(process {kwargs.get('process_id', '?')} of {kwargs.get('num_processes', '?')}): {first}. "
                    "Check that process 0 runs with the same --num_processes, that the address and port are "
                    "reachable from here, or raise --distributed_timeout") from None
  print(f"distributed ({mode}): process {jax.process_index()} of {jax.process_count()}, "
        f"{jax.local_device_count()} local / {jax.device_count()} global devices", file=sys.stderr)
  return mode
