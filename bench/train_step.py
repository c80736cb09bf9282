"""Training-step throughput of a config on this machine, in images/s (synthetic batches).

    python bench/train_step.py --config configs/poem_cpu.py [--cpu_devices 2] [--width 192]
        [--windows 5] [--window-steps 10] [--set model.conv_pools='((2,2),(2,2),(2,2),(2,2),(2,1))'] ...

Builds the model and optimizer exactly as `crnn-train` does (same mesh, shardings, donation),
compiles the step once for the given width bucket, then times `--windows` windows of
`--window-steps` steps each (blocking at each window's end).  Prints median / min / max images/s
and the compile time.  `--set key=python_literal` overrides config keys, so model variants can
be compared side by side in one invocation with `--variant`.
"""
import argparse
import json
import os
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def top_ops(trace_dir, steps, k=25):
  """Sums the durations of the XLA op events in a Perfetto trace by op name (ms per step)."""
  import collections
  import glob
  import gzip
  path = sorted(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True))[-1]
  with gzip.open(path, "rt") as f:
    events = json.load(f)
  events = events["traceEvents"] if isinstance(events, dict) else events
  threads = {(e.get("pid"), e.get("tid")): e.get("args", {}).get("name", "") for e in events
             if e.get("ph") == "M" and e.get("name") == "thread_name"}
  tot = collections.Counter()
  for e in events:
    if e.get("ph") != "X" or "dur" not in e:
      continue
    tname = threads.get((e.get("pid"), e.get("tid")), "")
    if "python" in tname.lower() or tname.startswith("MainThread"):
      continue  # host-side Python spans
    tot[e["name"]] += e["dur"] / 1e3 / steps
  return [(n, round(ms, 2)) for n, ms in tot.most_common(k)]


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--config", default="configs/poem_cpu.py")
  ap.add_argument("--cpu_devices", type=int, default=2)
  ap.add_argument("--width", type=int, default=192)
  ap.add_argument("--label_length", type=int, default=6)
  ap.add_argument("--num_classes", type=int, default=3790)
  ap.add_argument("--windows", type=int, default=5)
  ap.add_argument("--window-steps", type=int, default=10)
  ap.add_argument("--set", action="append", help="key=python_literal config override (repeatable)")
  ap.add_argument("--variant", action="append", default=[],
                  help="NAME:key=val;key=val — a variant measured in alternation with the base")
  ap.add_argument("--profile", default=None, metavar="DIR",
                  help="also trace --window-steps steps of each variant with jax.profiler into DIR (Perfetto) "
                       "and print the ops that took the most time")
  args = ap.parse_args()
  if args.cpu_devices:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={args.cpu_devices}").strip()
  import jax
  import numpy as np
  from ml_collections import config_flags  # noqa: F401  (config files import ml_collections)
  from bench.common import load_config, parse_sets
  from crnn_jax import mesh as mesh_lib, train
  from crnn_jax.model import width_stride

  variants = [("base", parse_sets(args.set))]
  for v in args.variant:
    name, _, body = v.partition(":")
    variants.append((name, parse_sets(args.set) + parse_sets([s for s in body.split(";") if s])))

  mesh = mesh_lib.make_mesh()
  runs = []
  for name, sets in variants:
    c = load_config(args.config, sets)
    model = train.make_model(c, args.num_classes)
    compiled = train.Compiled(c, model, train.make_optimizer(c), mesh)
    state = compiled.init(jax.random.PRNGKey(0))
    bs, h, w = c.train.batch_size, c.input.height, args.width
    rng = np.random.default_rng(0)
    frames = w // width_stride(c.model.conv_pools)
    local = {"image": rng.random((bs, h, w, 1), np.float32),
             "frames": np.full((bs,), frames, np.int32),
             "label": rng.integers(1, args.num_classes, (bs, c.input.max_label_length)).astype(np.int32),
             "label_len": np.full((bs,), args.label_length, np.int32),
             "feasible": np.ones((bs,), bool), "weight": np.ones((bs,), np.float32)}
    batch = mesh_lib.global_batch(local, mesh)
    t = time.perf_counter()
    state, m = compiled.train_step(state, batch)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t
    n_params = sum(x.size for x in jax.tree.leaves(state.params))
    runs.append({"name": name, "compiled": compiled, "state": state, "batch": batch, "bs": bs,
                 "compile_s": compile_s, "params": int(n_params), "rates": [], "sets": sets})
  for r in runs:  # one warm window each
    for _ in range(2):
      r["state"], m = r["compiled"].train_step(r["state"], r["batch"])
    jax.block_until_ready(m)
  for _ in range(args.windows):
    for r in runs:  # alternate, so that drift hits every variant
      t = time.perf_counter()
      for _ in range(args.window_steps):
        r["state"], m = r["compiled"].train_step(r["state"], r["batch"])
      jax.block_until_ready(m)
      r["rates"].append(args.window_steps * r["bs"] / (time.perf_counter() - t))
  if args.profile:
    for r in runs:
      d = os.path.join(args.profile, r["name"])
      with jax.profiler.trace(d, create_perfetto_trace=True):
        for _ in range(args.window_steps):
          r["state"], m = r["compiled"].train_step(r["state"], r["batch"])
        jax.block_until_ready(m)
      print(json.dumps({"variant": r["name"], "top_ops_ms_per_step": top_ops(d, args.window_steps)}))
  base = statistics.median(runs[0]["rates"])
  for r in runs:
    med = statistics.median(r["rates"])
    print(json.dumps({"variant": r["name"], "sets": {k: str(v) for k, v in r["sets"]}, "width": args.width,
                      "devices": jax.device_count(), "batch": r["bs"], "params": r["params"],
                      "images_per_sec_median": round(med, 1), "min": round(min(r["rates"]), 1),
                      "max": round(max(r["rates"]), 1), "vs_base": round(med / base, 3),
                      "compile_s": round(r["compile_s"], 1)}))


if __name__ == "__main__":
  main()
