"""Exported models against the jitted one and PP-OCRv6: images/s batched, 1-image latency, accuracy.

    python bench/export_bench.py --workdir runs/poem_cpu [--export runs/poem_cpu/export] \
        [--data data/otherworld --split test_clean] [--n 500] [--write BENCHMARKS.md]

Every side reads the same N images of the split.  Ours get the inference core's input rows
(`inference.to_input`, timed apart as "preprocess"), batched by width bucket (eval.batch_size
rows) -- the jitted model (crnn-predict's path), the StableHLO artifact (jax.export), the
SavedModel's logits signature, ONNX fp32 and int8 (onnxruntime) -- and decode greedily on the
host; the SavedModel's serving_default (encoded bytes in, text out: decoding, resizing and CTC
decoding inside the graph) is timed whole.  PP-OCRv6's recognizer (rapidocr, onnxruntime) reads
the decoded images with its own preprocessing, batch 32.  Throughput: all N images, median of
--repeats passes (min-max); latency: one image at a time, median (p90) over --single images.
Accuracy: exact lines.  Everything runs in this one process, one side after another.
"""
import argparse
import io
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BEGIN, END = "<!-- export-bench:begin -->", "<!-- export-bench:end -->"


def load_split(data_dir, split, n):
  import tensorflow_datasets as tfds
  b = tfds.builder_from_directory(str(data_dir))
  ds = b.as_dataset(split=split, shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()}).take(n)
  return [(ex["image"], ex["text"].decode()) for ex in tfds.as_numpy(ds)]


def timed(fn, repeats):
  times = []
  out = None
  for _ in range(repeats):
    t = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - t)
  return out, times


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--export", default=None, help="crnn-export's --out (default: WORKDIR/export, exported if missing)")
  ap.add_argument("--data", default=None, help="default: the run's DATA_DIR")
  ap.add_argument("--split", default="test")
  ap.add_argument("--n", type=int, default=500)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--single", type=int, default=50)
  ap.add_argument("--no-paddle", action="store_true")
  ap.add_argument("--write", default=None)
  args = ap.parse_args(argv)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import tensorflow as tf
  from crnn_jax import export, inference
  from crnn_jax.decode import greedy_batch
  reader = inference.load(args.workdir, decoding={"decoder": "greedy"})
  out_dir = args.export or os.path.join(args.workdir, "export")
  if not os.path.exists(os.path.join(out_dir, "onnx", "model.int8.onnx")):
    export.export_all(reader, out_dir, export.FORMATS, quantize=True)
  data = args.data or reader.config.data_dir
  exs = load_split(data, args.split, args.n)
  truth = [t for _, t in exs]
  raw = [b for b, _ in exs]
  t0 = time.perf_counter()
  rows = [reader.prepare(b) for b in raw]
  pre_s = time.perf_counter() - t0
  batches = list(reader.batches(rows))
  cs = reader.charset

  def host_greedy(logits_fn):
    """logits_fn(images, frames) -> logits; reads every batch -> texts in order."""
    def run():
      texts = [None] * len(rows)
      for idx, images, frames in batches:
        lg = np.asarray(logits_fn(images, frames))
        for r, t in enumerate(greedy_batch(lg[:len(idx)].argmax(-1), frames[:len(idx)], cs)):
          texts[idx[r]] = t
      return texts
    return run

  def single(logits_fn):
    def run_one(i):
      [(idx, images, frames)] = list(reader.batches([rows[i]]))
      lg = np.asarray(logits_fn(images, frames))
      return greedy_batch(lg.argmax(-1), frames, cs)[0]
    return run_one

  sides = []
  jit_logits = lambda x, f: reader.steps.logits(reader.variables, x, f)  # noqa: E731
  sides.append(("jitted model (crnn-predict --decoder greedy)", jit_logits))
  from jax import export as jexport
  exp = jexport.deserialize(open(os.path.join(out_dir, "stablehlo", "model.jax_exported"), "rb").read())
  sides.append(("StableHLO (jax.export)", lambda x, f: exp.call(x, f)))
  sm = tf.saved_model.load(os.path.join(out_dir, "savedmodel", "1"))
  sm_logits = sm.signatures["logits"]
  sides.append(("SavedModel, logits signature", lambda x, f: sm_logits(images=tf.constant(x), frames=tf.constant(f))["logits"].numpy()))
  import onnxruntime as ort
  for label, fname in (("ONNX fp32 (onnxruntime)", "model.onnx"), ("ONNX int8 dynamic (onnxruntime)", "model.int8.onnx")):
    sess = ort.InferenceSession(os.path.join(out_dir, "onnx", fname), providers=["CPUExecutionProvider"])
    sides.append((label, lambda x, f, s=sess: s.run(["logits"], {"images": x, "frames": f})[0]))

  rng = np.random.default_rng(0)
  pick = rng.choice(len(rows), size=min(args.single, len(rows)), replace=False)
  results = []
  for label, fn in sides:
    run = host_greedy(fn)
    run()  # compile / warm up every bucket
    texts, times = timed(run, args.repeats)
    one = single(fn)
    for i in pick[:5]:
      one(int(i))
    lat = []
    for i in pick:
      t = time.perf_counter()
      one(int(i))
      lat.append(time.perf_counter() - t)
    results.append((label, texts, times, lat))
    print(label, f"{len(rows) / statistics.median(times):.0f} img/s", f"{1e3 * statistics.median(lat):.1f} ms",
          flush=True)
  # the SavedModel whole: encoded bytes in, texts out
  serve = sm.signatures["serving_default"]
  bs = reader.max_batch

  def sm_bytes():
    texts = []
    for s in range(0, len(raw), bs):
      texts += [t.decode() for t in serve(images=tf.constant(raw[s:s + bs]))["text"].numpy()]
    return texts
  sm_bytes()
  texts, times = timed(sm_bytes, args.repeats)
  for i in pick[:5]:
    serve(images=tf.constant([raw[int(i)]]))
  lat = []
  for i in pick:
    t = time.perf_counter()
    serve(images=tf.constant([raw[int(i)]]))
    lat.append(time.perf_counter() - t)
  results.append(("SavedModel, serving_default (bytes in, text out, all in the graph)", texts, times, lat))
  if not args.no_paddle:
    from PIL import Image
    from bench.robust_eval import paddle_read
    images = [Image.open(io.BytesIO(b)) for b in raw]
    for im in images:
      im.load()
    if paddle_read(images[:2]) is not None:
      texts, times = timed(lambda: paddle_read(images), args.repeats)
      lat = []
      for i in pick:
        t = time.perf_counter()
        paddle_read([images[int(i)]], batch=1)
        lat.append(time.perf_counter() - t)
      results.append(("PP-OCRv6 recognizer (rapidocr 3.10, onnxruntime), its own preprocessing", texts, times, lat))
  lines = [BEGIN, "", f"`python bench/export_bench.py --workdir {args.workdir} --data {data} --split {args.split} "
           f"--n {args.n}` (checkpoint step {reader.step}, {len(rows)} images; ours greedy, no LM; our preprocessing "
           f"{1e3 * pre_s / len(rows):.2f} ms/image, not in our rows but in the last two).", "",
           "| model | images/s, batched (min-max) | 1 image, ms: median (p90) | exact lines | same text as crnn-predict --decoder greedy |",
           "| --- | --- | --- | --- | --- |"]
  ours = results[0][1]
  for label, texts, times, lat in results:
    tput = sorted(len(rows) / t for t in times)
    acc = np.mean([a == b for a, b in zip(texts, truth)])
    same = sum(a == b for a, b in zip(texts, ours))
    lines.append(f"| {label} | {statistics.median(tput):.0f} ({tput[0]:.0f}-{tput[-1]:.0f}) | "
                 f"{1e3 * statistics.median(lat):.1f} ({1e3 * float(np.quantile(lat, 0.9)):.1f}) | {100 * acc:.2f}% | "
                 f"{same} of {len(rows)} |")
  lines += ["", END]
  from bench.markdown import emit
  emit(lines, args.write, BEGIN, END, "Exported models")
  print(json.dumps({"n": len(rows), "step": reader.step}))


if __name__ == "__main__":
  main()
