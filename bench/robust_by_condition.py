"""The other world's degraded lines by condition: which degradations a model (and PP-OCRv6) misreads.

    python bench/robust_by_condition.py --data DATA_DIR --workdir runs/r3_norm [--workdir runs/r2_robust ...]
        [--lines validation] [--max-lines 400] [--write BENCHMARKS.md]

Draws the degraded half of `otherworld build --data DATA_DIR` again (otherworld.build.render_one,
the same pure function and seed: the same JPEG bytes as the split's) together with what each image
drew -- text height after down-sampling, JPEG quality, blur, rotation, corner wedges, stroke
weight, paper and ink -- reads every image with each workdir's model (greedy: the model alone;
its grey image made as crnn-predict makes it) and with PaddleOCR's PP-OCRv6 recognizer (rapidocr,
when it is installed: `make bench-deps`), and tables the exact-line accuracy by condition.

PP-OCRv6 beside ours doubles as a legibility check of the degradation model: a condition it reads
far below its clean accuracy is one to make milder (BENCHMARKS.md, "Robust reading").
"""
import argparse
import io
import json
import multiprocessing
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bench.markdown import emit  # noqa: E402

BEGIN, END = "<!-- robust-by-condition -->", "<!-- /robust-by-condition -->"


def _render(job):
  from otherworld import build
  text, font, seed, code, line_id, fi = job
  _, degraded, params = build.render_one(text, font, seed, code, line_id, fi)
  return degraded, params


def render(data_dir, split, max_lines, seed=0, workers=2):
  """[(text, font name, JPEG bytes, params)] of the split's degraded images (`otherworld build`'s
  defaults: its three held-out fonts, --lines validation test)."""
  from otherworld import build, draw
  code = list(build.SPLITS).index(split) + 1  # build() numbers the --lines in this order
  fonts = build._default_font_paths()
  jobs = [(text, f, seed, code, line_id, fi)
          for line_id, text in build.read_lines(data_dir, split)[:max_lines]
          for fi, f in enumerate(fonts) if draw.has_glyphs(f, text)]
  with multiprocessing.get_context("spawn").Pool(workers) as pool:
    out = pool.map(_render, jobs, chunksize=16)
  return [(j[0], pathlib.Path(j[1]).stem, d, p) for j, (d, p) in zip(jobs, out)]


def read_ours(workdir, jpegs, checkpoint="latest"):
  """The model alone (greedy) through the inference core, as crnn-predict reads files."""
  from crnn_jax import inference
  reader = inference.load(workdir, checkpoint, decoding={"decoder": "greedy"})
  return [r.text for r in reader.read(jpegs)], reader.step


def read_paddle(jpegs):
  from PIL import Image
  from bench.robust_eval import paddle_read
  return paddle_read([Image.open(io.BytesIO(d)) for d in jpegs])


def _downsampled(p):
  return p["text_px"] < p["size"] - 0.05


CONDITIONS = [  # (group, bin, predicate on the params)
  ("text height", "full resolution (26-44 px)", lambda p: not _downsampled(p)),
  ("text height", "down-sampled to 19-23 px", lambda p: _downsampled(p) and p["text_px"] < 23),
  ("text height", "down-sampled to 23-28 px", lambda p: _downsampled(p) and p["text_px"] >= 23),
  ("JPEG quality", "12-19", lambda p: p["jpeg"] < 20),
  ("JPEG quality", "20-29", lambda p: 20 <= p["jpeg"] < 30),
  ("JPEG quality", "30-40", lambda p: p["jpeg"] >= 30),
  ("blur (std, px at 32 px text)", "none", lambda p: p["blur"] == 0),
  ("blur (std, px at 32 px text)", "< 1", lambda p: 0 < p["blur"] * 32 / p["size"] < 1),
  ("blur (std, px at 32 px text)", ">= 1", lambda p: p["blur"] * 32 / p["size"] >= 1),
  ("rotation of the text", "< 1 degree", lambda p: abs(p["angle"]) < 1),
  ("rotation of the text", "1-2 degrees", lambda p: 1 <= abs(p["angle"]) < 2),
  ("rotation of the text", "2-3 degrees", lambda p: abs(p["angle"]) >= 2),
  ("black corner wedges", "no", lambda p: p["wedge"] == 0),
  ("black corner wedges", "yes", lambda p: p["wedge"] != 0),
  ("stroke weight", "as drawn", lambda p: not p["bold"] and p["thin"] == 0),
  ("stroke weight", "bolder", lambda p: p["bold"]),
  ("stroke weight", "thinner", lambda p: p["thin"] > 0),
  ("paper", "light, ink dark", lambda p: sum(p["paper"]) / 3 >= 100),
  ("paper", "dark, ink light", lambda p: sum(p["paper"]) / 3 < 100),
  ("ink-paper contrast (grey levels)", "< 120", lambda p: p["contrast"] < 120),
  ("ink-paper contrast (grey levels)", ">= 120", lambda p: p["contrast"] >= 120),
]


def table(rows, readers):
  """rows: [(text, font, params)]; readers: [(name, [prediction])] -> Markdown lines."""
  head = "| condition | | images | " + " | ".join(n for n, _ in readers) + " |"
  lines = [head, "| --- | --- | ---: | " + " | ".join("---:" for _ in readers) + " |"]
  groups = [("all", "", lambda p: True)] + CONDITIONS
  groups += [("font", f, (lambda f: lambda p, _f=f: p["_font"] == _f)(f)) for f in sorted({r[1] for r in rows})]
  last = None
  for group, name, pred in groups:
    idx = [i for i, (_, font, p) in enumerate(rows) if pred(dict(p, _font=font))]
    if not idx:
      continue
    cells = [f"{100 * np.mean([preds[i] == rows[i][0] for i in idx]):.1f}%" for _, preds in readers]
    lines.append(f"| {group if group != last else ''} | {name} | {len(idx)} | " + " | ".join(cells) + " |")
    last = group
  return lines


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--data", required=True, help="the DATA_DIR `otherworld build` drew its lines from")
  ap.add_argument("--workdir", action="append", default=[], help="a training workdir (repeatable)")
  ap.add_argument("--checkpoint", default="latest")
  ap.add_argument("--lines", default="validation", choices=["validation", "test"])
  ap.add_argument("--max-lines", type=int, default=400, help="corpus lines (x 3 fonts)")
  ap.add_argument("--no-paddle", action="store_true")
  ap.add_argument("--jsonl", default=None, help="also write every image's params and readings here")
  ap.add_argument("--write", default=None, help="replace this section of BENCHMARKS.md")
  args = ap.parse_args(argv)
  drawn = render(args.data, args.lines, args.max_lines)
  jpegs = [d for _, _, d, _ in drawn]
  readers, steps = [], []
  for w in args.workdir:
    preds, step = read_ours(w, jpegs, args.checkpoint)
    readers.append((f"`{w}` greedy", preds))
    steps.append(f"`{w}` step {step}")
  paddle = None if args.no_paddle else read_paddle(jpegs)
  if paddle is not None:
    readers.append(("PP-OCRv6 rec", paddle))
  rows = [(t, f, p) for t, f, _, p in drawn]
  if args.jsonl:
    with open(args.jsonl, "w", encoding="utf-8") as f:
      for i, (t, font, p) in enumerate(rows):
        f.write(json.dumps(dict(text=t, font=font, **p, **{n: r[i] for n, r in readers}), ensure_ascii=False) + "\n")
  split = {"validation": "val_degraded", "test": "test_degraded"}[args.lines]
  cmd = (f"python bench/robust_by_condition.py --data {args.data} "
         + " ".join(f"--workdir {w}" for w in args.workdir) + f" --lines {args.lines} --max-lines {args.max_lines}")
  out = [BEGIN, "", f"The other world's `{split}` images of the first {args.max_lines} lines (x 3 held-out fonts), "
         f"exact lines read, by what the degradation model drew ({', '.join(steps) or 'no model'}; "
         "greedy, the model alone):", ""]
  out += table(rows, readers) + ["", "```bash", cmd, "```", "", END]
  emit(out, args.write, BEGIN, END, "Robust reading: the degraded lines by condition")
  return 0


if __name__ == "__main__":
  sys.exit(main())
