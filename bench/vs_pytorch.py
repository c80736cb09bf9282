"""Ours vs a PyTorch CRNN of the same layout, side by side in one process, on this CPU.

    .venv/bin/pip install torch==2.13.0      # the CPU build (once; not a project dependency)
    python bench/vs_pytorch.py [--configs configs/poem_cpu.py,configs/crnn_paper.py] [--windows 5]

For each config: training throughput (images/s; our jitted train step on `--cpu_devices` XLA
devices vs bench/torch_crnn.py with `torch.set_num_threads(--threads)`, Adam + clipping + CTC),
batched inference throughput and single-image latency (ours: the jitted greedy predict step;
torch: forward + argmax under `inference_mode`).  Same batch, input shape 32 x `--width`, 3,790
classes, float32.  Windows alternate between the two sides so that drift hits both; prints one
JSON line per row with median / min / max and the ratio ours / torch.

Each side runs in its own worker process (this script with --worker), and the parent sends
"run a window" to one at a time: in one process, each side's spinning thread pool (torch's
OpenMP, XLA's Eigen) slowed the other by up to 2x.
"""
import argparse
import importlib.util
import json
import os
import pathlib
import platform
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def load(path):
  spec = importlib.util.spec_from_file_location("cfg", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config()


def _parser():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--configs", default="configs/poem_cpu.py,configs/crnn_paper.py")
  ap.add_argument("--cpu_devices", type=int, default=2)
  ap.add_argument("--threads", type=int, default=os.cpu_count())
  ap.add_argument("--batch", type=int, default=32)
  ap.add_argument("--width", type=int, default=192)
  ap.add_argument("--num_classes", type=int, default=3790)
  ap.add_argument("--windows", type=int, default=5)
  ap.add_argument("--train_reps", type=int, default=5)
  ap.add_argument("--infer_reps", type=int, default=10)
  return ap


def _report(info, config, what, res, bs, unit):
  row = dict(info, config=config, what=what, unit=unit)
  for side, secs in res.items():
    vals = [bs / s for s in secs] if unit == "images/s" else [s * 1e3 for s in secs]
    row[side] = {"median": round(statistics.median(vals), 1), "min": round(min(vals), 1),
                 "max": round(max(vals), 1)}
  o, t = row["ours"]["median"], row["torch"]["median"]
  row["ours_vs_torch"] = round(o / t if unit == "images/s" else t / o, 3)  # > 1: ours faster
  print(json.dumps(row), flush=True)


# ---- one worker process per side ---------------------------------------------------------------
def worker(side, config_path, args):
  """Builds `side` ('ours' | 'torch') for one config, then serves 'KIND N' lines on stdin
  (KIND: train | infer | single) with the seconds per iteration on stdout."""
  import numpy as np
  c = load(config_path)
  c.train.batch_size = args.batch
  bs, w, ncls, h = args.batch, args.width, args.num_classes, c.input.height
  rng = np.random.default_rng(0)
  labels = rng.integers(1, ncls, (bs, c.input.max_label_length)).astype(np.int32)
  images = rng.random((bs, h, w, 1), np.float32)
  from crnn_jax.model import width_stride
  frames = w // width_stride(c.model.conv_pools)
  if side == "ours":
    import jax
    from crnn_jax import mesh as mesh_lib, train
    mesh = mesh_lib.make_mesh()
    model = train.make_model(c, ncls)
    compiled = train.Compiled(c, model, train.make_optimizer(c), mesh)
    state = [compiled.init(jax.random.PRNGKey(0))]
    batch = mesh_lib.global_batch({"image": images, "frames": np.full((bs,), frames, np.int32), "label": labels,
                                   "label_len": np.full((bs,), 6, np.int32), "feasible": np.ones((bs,), bool),
                                   "weight": np.ones((bs,), np.float32)}, mesh)
    single = jax.jit(lambda s, x, f: jax.numpy.argmax(model.apply(
        {"params": s.params, "batch_stats": s.batch_stats}, x, f, train=False), -1))
    dev0 = jax.devices()[0]
    x1, f1 = jax.device_put(images[:1], dev0), jax.device_put(np.full((1,), frames, np.int32), dev0)

    def run(kind, n):
      r = None
      for _ in range(n):
        if kind == "train":
          state[0], r = compiled.train_step(state[0], batch)
        elif kind == "infer":
          r = compiled.predict_step(state[0], batch["image"], batch["frames"])
        else:
          r = single(s1, x1, f1)
      jax.block_until_ready(r)
    s1 = None

    def refresh():
      nonlocal s1
      s1 = jax.device_put(state[0], dev0)
  else:
    import torch
    from bench import torch_crnn
    torch.set_num_threads(args.threads)
    trainer = torch_crnn.Trainer(c, ncls)
    t_img = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    t_lab = torch.from_numpy(labels[:, :6].astype(np.int64))
    t_in = torch.full((bs,), frames, dtype=torch.long)
    t_ll = torch.full((bs,), 6, dtype=torch.long)

    def run(kind, n):
      if kind == "train":
        trainer.model.train()
        for _ in range(n):
          trainer.step(t_img, t_lab, t_in, t_ll)
        return
      trainer.model.eval()
      x = t_img if kind == "infer" else t_img[:1]
      with torch.inference_mode():
        for _ in range(n):
          trainer.model(x).argmax(-1)

    def refresh():
      pass
  print("ready", flush=True)
  for line in sys.stdin:
    kind, n = line.split()
    if kind == "single":
      refresh()
    t = time.perf_counter()
    run(kind, int(n))
    print((time.perf_counter() - t) / int(n), flush=True)


def main(args):
  import subprocess
  import numpy as np  # noqa: F401
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
             XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") +
                        f" --xla_force_host_platform_device_count={args.cpu_devices}").strip())
  info = {"machine": f"{os.cpu_count()} cores {platform.machine()}", "python": platform.python_version(),
          "cpu_devices": args.cpu_devices, "torch_threads": args.threads, "batch": args.batch, "width": args.width}
  try:
    import importlib.metadata as md
    info["jax_version"], info["torch_version"] = md.version("jax"), md.version("torch")
  except Exception:  # noqa: BLE001
    pass
  for path in args.configs.split(","):
    procs = {}
    for side in ("ours", "torch"):
      cmd = [sys.executable, __file__, "--worker", side, "--configs", path, "--batch", str(args.batch),
             "--width", str(args.width), "--num_classes", str(args.num_classes), "--threads", str(args.threads)]
      procs[side] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                     cwd=pathlib.Path(__file__).resolve().parents[1])
      assert procs[side].stdout.readline().strip() == "ready", f"{side} worker failed to start"

    def ask(side, kind, n):
      procs[side].stdin.write(f"{kind} {n}\n")
      procs[side].stdin.flush()
      return float(procs[side].stdout.readline())

    for kind, reps, bs, unit, what in (("train", args.train_reps, args.batch, "images/s", "train"),
                                       ("infer", args.infer_reps, args.batch, "images/s", "inference, batched"),
                                       ("single", args.infer_reps, 1, "ms", "latency, 1 image")):
      for side in procs:
        ask(side, kind, 2)  # warm-up (compiles)
      res = {side: [] for side in procs}
      for _ in range(args.windows):
        for side in procs:  # alternate
          res[side].append(ask(side, kind, reps))
      _report(info, path, what, res, bs, unit)
    for p in procs.values():
      p.stdin.close()
      p.wait(timeout=60)


if __name__ == "__main__":
  if "--worker" in sys.argv:
    i = sys.argv.index("--worker")
    side = sys.argv[i + 1]
    del sys.argv[i:i + 2]
    worker_args = _parser().parse_args()
    worker(side, worker_args.configs, worker_args)
  else:
    main(_parser().parse_args())
