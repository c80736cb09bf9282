"""The robustness table: a run read on its own test split and on the other-world set.

    python bench/robust_eval.py --workdir runs/poem_cpu --otherworld data/otherworld \
        [--splits test_clean test_degraded] [--write BENCHMARKS.md]

For each split, `crnn-eval` (the run's default decoding, beam search + LM, with the greedy reading
of the same outputs beside it: the model alone) on the latest checkpoint, and -- when `rapidocr`
imports (`make bench-deps`) -- PaddleOCR's PP-OCRv6 recognizer (no LM) on the same images; prints
and writes one table (overall, by font, by length) into BENCHMARKS.md's "robust-eval" section.  The other-world
set is made by `otherworld build --data DATA_DIR --out data/otherworld` (README, "Robust reading").
"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.markdown import emit  # noqa: E402

BEGIN, END = "<!-- robust-eval:begin -->", "<!-- robust-eval:end -->"


def crnn_eval(workdir, data, split, checkpoint):
  cmd = [os.path.join(os.path.dirname(sys.executable), "crnn-eval"), "--workdir", workdir, "--split", split,
         "--checkpoint", checkpoint, "--gallery", "40"]
  if data:
    cmd += ["--data", data]
  out = subprocess.run(cmd, capture_output=True, text=True)
  if out.returncode != 0:
    raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
  return json.loads(out.stdout), " ".join(cmd[0:1]).split("/")[-1] + " " + " ".join(cmd[1:])


def paddle_read(images, batch=32):
  """PP-OCRv6's recognizer (rapidocr, its ONNX models in the wheel) on PIL images -> their texts
  (white space dropped), or None when rapidocr is not installed."""
  try:
    from rapidocr import RapidOCR
    from rapidocr.ch_ppocr_rec.typings import TextRecInput
  except ImportError:
    return None
  import numpy as np
  rec = RapidOCR(params={"Rec.rec_batch_num": batch})._load_rec_model()
  out = []
  for i in range(0, len(images), batch):
    crops = [np.asarray(im.convert("RGB"))[:, :, ::-1] for im in images[i:i + batch]]  # BGR, as cv2 reads
    out += ["".join(t.split()) for t in rec(TextRecInput(img=crops)).txts]
  return out


def paddle(data_dir, split, batch=32):
  """PP-OCRv6's recognizer on every image of a split (metrics.Accumulator's result), or None
  when rapidocr is not installed."""
  from crnn_jax.metrics import Accumulator
  from datagen.preview import read_examples
  exs = read_examples(data_dir, split, 10 ** 9)
  texts = paddle_read([e["image"] for e in exs], batch)
  if texts is None:
    return None
  acc = Accumulator()
  acc.add([e["text"] for e in exs], texts, [e["font"] for e in exs])
  return acc.result()


def pct(x):
  return f"{100 * x:.2f}%"


def table(rows, paddles):
  lines = ["| split | images | with the LM (default decoding) | model alone (greedy) | CER LM / greedy | "
           "PP-OCRv6 rec (no LM) |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
  for (name, res), pad in zip(rows, paddles):
    g = res.get("greedy", res)
    lines.append(f"| {name} | {res['n']} | **{pct(res['seq_acc'])}** | {pct(g['seq_acc'])} | "
                 f"{100 * res['cer']:.2f}% / {100 * g['cer']:.2f}% | "
                 + ("not run" if pad is None else f"{pct(pad['seq_acc'])} (CER {100 * pad['cer']:.2f}%)") + " |")
  return lines


def breakdown(rows, field, title, cell, order=sorted):
  """One Markdown table: a row per key of each result's `field` (by_font / by_length), a column
  per split; `cell(result, key)` -> the cell's text ("" where the split lacks the key)."""
  keys = order({k for _, r in rows for k in r.get(field, {})})
  lines = [f"| {title} | " + " | ".join(name for name, _ in rows) + " |",
           "| --- | " + " | ".join("---:" for _ in rows) + " |"]
  for k in keys:
    lines.append(f"| {k} | " + " | ".join(cell(r, k) if k in r.get(field, {}) else "" for _, r in rows) + " |")
  return lines


def by_font(rows):
  def cell(r, f):  # with the LM / greedy
    lm, gr = r["by_font"][f], r.get("greedy", {}).get("by_font", {}).get(f)
    return f"{pct(lm['seq_acc'])} / {pct((gr or lm)['seq_acc'])}"
  return breakdown(rows, "by_font", "font", cell)


def by_length(rows):
  def cell(r, k):
    v = r["by_length"][k]
    return f"{pct(v['seq_acc'])} (n={v['n']})"
  return breakdown(rows, "by_length", "length", cell,
                   order=lambda ks: sorted(ks, key=lambda k: int(k.split("-")[0])))


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--otherworld", default="data/otherworld")
  ap.add_argument("--splits", nargs="+", default=["test_clean", "test_degraded"])
  ap.add_argument("--own-split", default="test", help="the run's own DATA_DIR split read beside them")
  ap.add_argument("--checkpoint", default="latest")
  ap.add_argument("--no-paddle", action="store_true", help="leave PP-OCRv6 out even if rapidocr imports")
  ap.add_argument("--write", default=None)
  args = ap.parse_args(argv)
  rows, cmds, paddles = [], [], []
  res, cmd = crnn_eval(args.workdir, None, args.own_split, args.checkpoint)
  rows.append((f"own {args.own_split} split", res))
  cmds.append(cmd)
  run_data = res["data"]
  paddles.append(None if args.no_paddle else paddle(run_data, args.own_split))
  for split in args.splits:
    res, cmd = crnn_eval(args.workdir, args.otherworld, split, args.checkpoint)
    rows.append((f"other world {split}", res))
    cmds.append(cmd)
    paddles.append(None if args.no_paddle else paddle(args.otherworld, split))
  step = rows[0][1].get("checkpoint_step")
  out = [BEGIN, "", f"`{args.workdir}`, checkpoint step {step} ({rows[0][1].get('weights')} weights); "
         "sequence accuracy (exact lines):", ""]
  out += table(rows, paddles) + ["", "By font (with the LM / greedy):", ""] + by_font(rows)
  out += ["", "By length (with the LM):", ""] + by_length(rows)
  out += ["", "Commands:", "", "```bash", f"python bench/robust_eval.py --workdir {args.workdir} "
          f"--otherworld {args.otherworld} --splits {' '.join(args.splits)}", *cmds, "```", "", END]
  emit(out, args.write, BEGIN, END, "Robust reading: the other world")
  return 0


if __name__ == "__main__":
  sys.exit(main())
