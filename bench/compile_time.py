"""Compile time of the train step per width bucket, without and with the persistent cache.

    python bench/compile_time.py [--config configs/poem_cpu.py] [--buckets 96,192,384,640] [--write BENCHMARKS.md]

Three fresh processes, one after another, each compiling the jitted train step (mesh,
shardings and donation as `crnn-train`) for every bucket and timing `lower(...).compile()`:
1. no persistent cache; 2. an empty cache folder (compile + write); 3. the same folder again
(what a rerun, a resume after preemption, or the next process of a sweep gets with
`crnn-train --compilation_cache DIR`).  The number of compilations of a whole run, and whether
any happen after a bucket's first use, is in each run's `WORKDIR/compile_stats.json`.
"""
import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def child(args):
  if args.cpu_devices:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={args.cpu_devices}").strip()
  import jax
  import numpy as np
  from bench.common import load_config
  from crnn_jax import compile_stats, mesh as mesh_lib, train
  from crnn_jax.model import width_stride
  if args.cache:
    train.enable_compilation_cache(args.cache)
  counter = compile_stats.CompileCounter()
  c = load_config(args.config)
  mesh = mesh_lib.make_mesh()
  model = train.make_model(c, args.num_classes)
  compiled = train.Compiled(c, model, train.make_optimizer(c), mesh)
  state = compiled.abstract_with_shardings()
  bs, h, L = c.train.batch_size, c.input.height, c.input.max_label_length
  dat = mesh_lib.data_sharded(mesh)
  out = {}
  for w in args.buckets:
    sds = lambda shape, dt: jax.ShapeDtypeStruct(shape, dt, sharding=dat)  # noqa: E731
    batch = {"image": sds((bs, h, w, 1), np.float32), "frames": sds((bs,), np.int32),
             "label": sds((bs, L), np.int32), "label_len": sds((bs,), np.int32),
             "feasible": sds((bs,), np.bool_), "weight": sds((bs,), np.float32)}
    assert set(batch) == set(train.DEVICE_KEYS), train.DEVICE_KEYS
    n0, _, h0 = counter.snapshot()
    t = time.perf_counter()
    compiled.train_step.lower(state, batch).compile()
    n1, _, h1 = counter.snapshot()
    out[w] = {"seconds": round(time.perf_counter() - t, 2), "compiles": (n1 - n0) - (h1 - h0), "cache_hits": h1 - h0,
              "frames": w // width_stride(c.model.conv_pools)}
  print(json.dumps(out), flush=True)


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--config", default="configs/poem_cpu.py")
  ap.add_argument("--cpu_devices", type=int, default=2)
  ap.add_argument("--num_classes", type=int, default=3790)
  ap.add_argument("--buckets", default="96,192,384,640")
  ap.add_argument("--write", default=None, help="replace this benchmark's section of a Markdown file")
  ap.add_argument("--child", action="store_true")
  ap.add_argument("--cache", default=None)
  args = ap.parse_args()
  args.buckets = [int(b) for b in str(args.buckets).split(",")]
  if args.child:
    return child(args)
  base = [sys.executable, __file__, "--child", "--config", args.config, "--cpu_devices", str(args.cpu_devices),
          "--num_classes", str(args.num_classes), "--buckets", ",".join(map(str, args.buckets))]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  res = {}
  with tempfile.TemporaryDirectory() as cache:
    for name, extra in (("no cache", []), ("cache, first run (cold)", ["--cache", cache]),
                        ("cache, second run (warm)", ["--cache", cache])):
      t = time.perf_counter()
      out = subprocess.run(base + extra, capture_output=True, text=True, env=env, cwd=ROOT)
      if out.returncode:
        sys.exit(f"compile_time child failed:\n{out.stderr[-3000:]}")
      res[name] = {"buckets": json.loads(out.stdout.strip().splitlines()[-1]),
                   "process_seconds": round(time.perf_counter() - t, 1)}
      print(json.dumps({"run": name, **res[name]}), flush=True)
  import jax
  lines = [f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores ({platform.machine()}), jax "
           f"{jax.__version__}, {args.config}, {args.cpu_devices} XLA devices, batch as in the config.",
           f"Command: `python bench/compile_time.py --config {args.config} --buckets "
           f"{','.join(map(str, args.buckets))} --write BENCHMARKS.md`.", "",
           "| train step compile, seconds | " + " | ".join(f"width {w}" for w in args.buckets) +
           " | whole process (s) |",
           "| --- |" + " ---: |" * (len(args.buckets) + 1)]
  for name, r in res.items():
    lines.append(f"| {name} | " + " | ".join(f"{r['buckets'][str(w)]['seconds']:.2f}" for w in args.buckets) +
                 f" | {r['process_seconds']:.1f} |")
  if args.write:
    from bench.markdown import replace_section
    b, e = "<!-- compile_time:begin -->", "<!-- compile_time:end -->"
    replace_section(args.write, b, e, b + "\n" + "\n".join(lines) + "\n" + e,
                    "Compile time per width bucket")
  else:
    print("\n".join(lines))


if __name__ == "__main__":
  main()
