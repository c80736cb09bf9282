"""Ours vs a PyTorch CRNN of the same layout (and PaddleOCR's recognizer), side by side, on this CPU.

    .venv/bin/pip install torch==2.13.0 rapidocr onnxruntime   # once; not project dependencies
    python bench/vs_pytorch.py [--configs configs/poem_cpu.py,configs/crnn_paper.py] [--windows 5] \
        [--workdir runs/X]    # + accuracy on the test split of the run's data

For each config: training throughput (images/s; our jitted train step on `--cpu_devices` XLA
devices vs bench/torch_crnn.py with `torch.set_num_threads(--threads)`, Adam + clipping + CTC),
batched inference throughput and single-image latency (ours: the jitted greedy predict step;
torch: forward + argmax under `inference_mode`).  Same batch, input shape 32 x `--width`, 3,790
classes, float32.  Windows alternate between the two sides so that drift hits both; prints one
JSON line per row with median / min / max and the ratio ours / torch.

PaddleOCR (`--sides` with rapidocr, on by default when the package imports): PP-OCRv6's small
recognizer through `rapidocr` (ONNX Runtime, models inside the wheel, `--threads` intra-op
threads), on the same images as 3-channel uint8 crops; it resizes them to its own 48 x 320
input.  It has no training row.  With `--workdir`, one more row gives each side's sequence
accuracy and CER on the test split of that run's data (ours: the run's best checkpoint; the
PyTorch reference is untrained, it is here for speed only).

Each side runs in its own worker process (this script with --worker), and the parent sends
"run a window" to one at a time: in one process, each side's spinning thread pool (torch's
OpenMP, XLA's Eigen) slowed the other by up to 2x.
"""
import argparse
import importlib.metadata
import importlib.util
import json
import os
import pathlib
import platform
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


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
  ap.add_argument("--sides", default=None, help="comma list of ours,torch,rapidocr (default: all that import)")
  ap.add_argument("--workdir", default=None, help="a trained run: adds accuracy on its data's test split")
  ap.add_argument("--split", default="test")
  ap.add_argument("--write", default=None, help="replace this benchmark's section of a Markdown file")
  return ap


def _report(info, config, what, res, bs, unit):
  row = dict(info, config=config, what=what, unit=unit)
  for side, secs in res.items():
    vals = [bs / s for s in secs] if unit == "images/s" else [s * 1e3 for s in secs]
    row[side] = {"median": round(statistics.median(vals), 1), "min": round(min(vals), 1),
                 "max": round(max(vals), 1)}
  o = row["ours"]["median"]
  for side in res:
    if side != "ours":  # > 1: ours faster
      t = row[side]["median"]
      row[f"ours_vs_{side}"] = round(o / t if unit == "images/s" else t / o, 3)
  print(json.dumps(row), flush=True)
  return row


def accuracy(args, sides, info):
  """One row: sequence accuracy and CER of ours (the run's best checkpoint) and of rapidocr on
  the whole split of the run's data.  Each in a subprocess (`--accuracy SIDE`), one at a time."""
  import subprocess
  row = dict(info, what=f"accuracy, {args.split} split", workdir=args.workdir)
  for side in sides:
    if side == "torch":
      row["torch"] = "untrained reference (speed only)"
      continue
    out = subprocess.run([sys.executable, __file__, "--accuracy", side, "--workdir", args.workdir,
                          "--split", args.split, "--batch", str(args.batch), "--threads", str(args.threads)],
                         capture_output=True, text=True, check=True,
                         cwd=pathlib.Path(__file__).resolve().parents[1])
    row[side] = json.loads(out.stdout.strip().splitlines()[-1])
  print(json.dumps(row, ensure_ascii=False), flush=True)
  return row


def accuracy_worker(side, args):
  import numpy as np
  from crnn_jax import inference, mesh as mesh_lib
  from crnn_jax.metrics import Accumulator
  reader = inference.load(args.workdir, "best", mesh=mesh_lib.make_mesh())
  config, charset, step = reader.config, reader.charset, reader.step
  t0 = time.perf_counter()
  if side == "ours":
    from crnn_jax import evaluate
    res, _, _ = evaluate.evaluate(reader.steps, reader.variables, config, config.data_dir, args.split, charset)
  else:
    from rapidocr import RapidOCR
    from rapidocr.ch_ppocr_rec.typings import TextRecInput
    from datagen.preview import read_examples
    rec = RapidOCR(params={"Rec.rec_batch_num": args.batch,
                           "EngineConfig.onnxruntime.intra_op_num_threads": args.threads})._load_rec_model()
    exs = read_examples(config.data_dir, args.split, 10**9)
    acc = Accumulator()
    for i in range(0, len(exs), args.batch):
      chunk = exs[i:i + args.batch]
      crops = [np.asarray(e["image"].convert("RGB"))[:, :, ::-1] for e in chunk]  # BGR, as cv2 reads
      txts = rec(TextRecInput(img=crops)).txts
      acc.add([e["text"] for e in chunk], ["".join(t.split()) for t in txts], [e["font"] for e in chunk])
    res = acc.result()
  print(json.dumps({"n": res["n"], "seq_acc": round(res["seq_acc"], 4), "cer": round(res["cer"], 4),
                    "checkpoint_step": step if side == "ours" else None,
                    "seconds": round(time.perf_counter() - t0, 1),
                    "by_font": {k: round(v["seq_acc"], 4) for k, v in res["by_font"].items()}}), flush=True)


# ---- one worker process per side ---------------------------------------------------------------
def worker(side, config_path, args):
  """Builds `side` ('ours' | 'torch') for one config, then serves 'KIND N' lines on stdin
  (KIND: train | infer | single) with the seconds per iteration on stdout."""
  import numpy as np
  from bench.common import load_config
  c = load_config(config_path)
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
    from crnn_jax.inference import class_argmax
    single = jax.jit(lambda s, x, f: class_argmax(model.apply(
        {"params": s.params, "batch_stats": s.batch_stats}, x, f, train=False)))
    dev0 = jax.devices()[0]
    x1, f1 = jax.device_put(images[:1], dev0), jax.device_put(np.full((1,), frames, np.int32), dev0)

    def run(kind, n):
      r = None
      for _ in range(n):
        if kind == "train":
          state[0], r = compiled.train_step(state[0], batch)
        elif kind == "infer":
          r = compiled.steps.greedy({"params": state[0].params, "batch_stats": state[0].batch_stats},
                                    batch["image"], batch["frames"])
        else:
          r = single(s1, x1, f1)
      jax.block_until_ready(r)
    s1 = None

    def refresh():
      nonlocal s1
      s1 = jax.device_put(state[0], dev0)
  elif side == "torch":
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
  elif side == "rapidocr":
    from rapidocr import RapidOCR
    from rapidocr.ch_ppocr_rec.typings import TextRecInput
    rec = RapidOCR(params={"Rec.rec_batch_num": bs,
                           "EngineConfig.onnxruntime.intra_op_num_threads": args.threads})._load_rec_model()
    crops = [np.repeat((images[i] * 255).astype(np.uint8), 3, axis=-1) for i in range(bs)]

    def run(kind, n):
      if kind == "train":
        raise ValueError("rapidocr has no training row")
      for _ in range(n):
        rec(TextRecInput(img=crops if kind == "infer" else crops[:1]))

    def refresh():
      pass
  else:
    raise ValueError(f"unknown side {side!r}")
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
  info["jax_version"] = importlib.metadata.version("jax")
  sides = args.sides.split(",") if args.sides else [
      s for s, mod in (("ours", "jax"), ("torch", "torch"), ("rapidocr", "rapidocr"))
      if importlib.util.find_spec(mod) is not None]
  for mod in ("torch", "rapidocr", "onnxruntime"):
    try:
      info[f"{mod}_version"] = importlib.metadata.version(mod)
    except importlib.metadata.PackageNotFoundError:
      pass
  rows = []
  acc_row = accuracy(args, sides, info) if args.workdir else None
  for path in args.configs.split(","):
    procs = {}
    for side in sides:
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
      run_sides = [s for s in procs if not (kind == "train" and s == "rapidocr")]
      for side in run_sides:
        ask(side, kind, 2)  # warm-up (compiles)
      res = {side: [] for side in run_sides}
      for _ in range(args.windows):
        for side in run_sides:  # alternate
          res[side].append(ask(side, kind, reps))
      rows.append(_report(info, path, what, res, bs, unit))
    for p in procs.values():
      p.stdin.close()
      p.wait(timeout=60)
  if args.write:
    write_markdown(args, sides, info, rows, acc_row)


NAMES = {"ours": "ours (JAX)", "torch": "PyTorch reference", "rapidocr": "PP-OCRv6 rec (rapidocr)"}


def write_markdown(args, sides, info, rows, acc_row):
  from bench.markdown import replace_section
  others = [s for s in sides if s != "ours"]
  cmd = " ".join(["python bench/vs_pytorch.py"] + [a for a in sys.argv[1:]])
  vers = ", ".join(f"{k.replace('_version', '')} {v}" for k, v in info.items() if k.endswith("_version"))
  out = [f"Measured {time.strftime('%Y-%m-%d')} on {info['machine']}, Python {info['python']}; {vers}. "
         f"Ours on {info['cpu_devices']} XLA CPU devices, the others with {info['torch_threads']} threads; batch "
         f"{info['batch']}, input 32 x {info['width']}; median (min-max) over {args.windows} alternating windows.",
         f"Command: `{cmd}`.", "",
         "| config | what | " + " | ".join(NAMES[s] for s in sides) + " | " +
         " | ".join(f"ours / {NAMES[s].split(' ')[0]}" for s in others) + " |",
         "| --- | --- |" + " ---: |" * (len(sides) + len(others))]
  for r in rows:
    cells = [f"{r[s]['median']} ({r[s]['min']}-{r[s]['max']})" if s in r else "-" for s in sides]
    ratios = [f"**{r[f'ours_vs_{s}']:.2f}**" if f"ours_vs_{s}" in r else "-" for s in others]
    unit = "images/s" if r["unit"] == "images/s" else "ms"
    out.append(f"| {pathlib.Path(r['config']).stem} | {r['what']}, {unit} | " + " | ".join(cells) + " | " +
               " | ".join(ratios) + " |")
  if acc_row:
    out += ["", f"Accuracy on the {args.split} split of `{args.workdir}`'s data (ours: that run's best checkpoint):", "",
            "| | " + " | ".join(NAMES[s] for s in sides) + " |", "| --- |" + " ---: |" * len(sides)]
    def cell(s, k):
      v = acc_row.get(s)
      return f"{v[k]:.4f}" if isinstance(v, dict) else "n/a (untrained, speed only)"
    out.append("| sequence accuracy | " + " | ".join(cell(s, "seq_acc") for s in sides) + " |")
    out.append("| CER | " + " | ".join(cell(s, "cer") for s in sides) + " |")
    fonts = sorted(next((v["by_font"] for v in acc_row.values() if isinstance(v, dict) and "by_font" in v), {}))
    for f in fonts:
      out.append(f"| seq acc, {f} | " + " | ".join(
          f"{acc_row[s]['by_font'].get(f, float('nan')):.4f}" if isinstance(acc_row.get(s), dict) else "-"
          for s in sides) + " |")
  b, e = "<!-- vs_pytorch:begin -->", "<!-- vs_pytorch:end -->"
  replace_section(args.write, b, e, b + "\n" + "\n".join(out) + "\n" + e,
                  "Ours vs a PyTorch CRNN of the same layout and PaddleOCR's recognizer")


if __name__ == "__main__":
  if "--accuracy" in sys.argv:
    i = sys.argv.index("--accuracy")
    side = sys.argv[i + 1]
    del sys.argv[i:i + 2]
    accuracy_worker(side, _parser().parse_args())
  elif "--worker" in sys.argv:
    i = sys.argv.index("--worker")
    side = sys.argv[i + 1]
    del sys.argv[i:i + 2]
    worker_args = _parser().parse_args()
    worker(side, worker_args.configs, worker_args)
  else:
    main(_parser().parse_args())
