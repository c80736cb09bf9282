"""One load level against crnn-serve, with the server's CPU time per request and its batch sizes:
the probe behind BENCHMARKS.md "Serving under load" (what changed since the first measurement).

    python bench/serve_profile.py --workdir runs/r3_norm --data data/otherworld --split test_clean \
        [--clients 16] [--seconds 10] [--spy /tmp/spy.txt] [-- SERVER ARGS, e.g. --cpu-devices 1]

Starts `crnn-serve --workdir W --decoder greedy SERVER ARGS` on a free loopback port, warms it with
4 s of load, then runs --clients clients (bench/serve_load.py's client) for --seconds and prints one
JSON line: requests/s, p50 ms, errors, the server process's CPU seconds (utime + stime from
/proc/PID/stat) and per request, the client's CPU seconds, and the server's lines-per-batch
histogram (/metrics).  --spy FILE also records the server's Python stacks with py-spy (raw
collapsed stacks, every thread, idle frames included; sampling slows the server).
"""
import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cpu_seconds(pid):
  fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
  return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--data", required=True)
  ap.add_argument("--split", default="test_clean")
  ap.add_argument("--n", type=int, default=256)
  ap.add_argument("--clients", type=int, default=16)
  ap.add_argument("--seconds", type=float, default=10.0)
  ap.add_argument("--spy", default=None, help="py-spy's output file (py-spy must be installed)")
  ap.add_argument("server_args", nargs="*")
  args = ap.parse_args(argv)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from bench.export_bench import load_split
  from bench.serve_load import load_level
  from crnn_jax import serve
  raw = [b for b, _ in load_split(args.data, args.split, args.n)]
  proc, url = serve.spawn("--workdir", args.workdir, "--decoder", "greedy", *args.server_args,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  try:
    serve.wait_ready(proc, url, why=lambda: proc.stderr.read()[-3000:].decode(errors="replace"))
    load_level(url, raw, args.clients, 4.0)
    spy = None
    if args.spy:
      spy = subprocess.Popen(["py-spy", "record", "-p", str(proc.pid), "-d", str(int(args.seconds)), "-r", "40",
                              "-o", args.spy, "-f", "raw", "--threads", "--idle"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    c0, s0 = cpu_seconds(proc.pid), time.process_time()
    r = load_level(url, raw, args.clients, args.seconds)
    c1, s1 = cpu_seconds(proc.pid), time.process_time()
    if spy:
      spy.wait()
    metrics = urllib.request.urlopen(url + "/metrics").read().decode()
    hist = {line.split('le="')[1].split('"')[0]: float(line.split()[-1]) for line in metrics.splitlines()
            if line.startswith("crnn_batch_lines_bucket")}
    print(json.dumps({"clients": args.clients, "server_args": args.server_args, "req_s": round(r["req_s"], 1),
                      "p50_ms": round(r["p50_ms"], 1), "errors": r["errors"],
                      "server_cpu_s": round(c1 - c0, 2), "server_cpu_ms_per_request": round(1e3 * (c1 - c0) / r["ok"], 2),
                      "client_cpu_s": round(s1 - s0, 2), "batch_lines_le": hist}))
  finally:
    proc.terminate()
    proc.wait(60)


if __name__ == "__main__":
  main()
