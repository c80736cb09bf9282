"""Rendering speed of `datagen` at its default settings, in images/s.

    python bench/bench_datagen.py [--workers 2] [--windows 5] [--window-images 2000] [--write BENCHMARKS.md]

Plans the default training jobs of the real corpus (default split, balance lines, bundled fonts,
8 variants) and renders them in a warm process pool exactly as `datagen build` does (render +
JPEG encode + CTC feasibility check), timing `--windows` consecutive windows.  Prints the
median / min / max; `--write` replaces the datagen section of BENCHMARKS.md.
"""
import argparse
import datetime
import multiprocessing
import os
import pathlib
import platform
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # the repo root: bench/, datagen/

from bench.markdown import replace_section  # noqa: E402
from datagen import build, corpus as corpus_lib, fonts as fonts_lib, render, split as split_lib  # noqa: E402

MARK_BEGIN, MARK_END = "<!-- bench_datagen:begin -->", "<!-- bench_datagen:end -->"


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--workers", type=int, default=os.cpu_count())
  ap.add_argument("--windows", type=int, default=5)
  ap.add_argument("--window-images", type=int, default=2000)
  ap.add_argument("--write", default=None, help="Markdown file whose datagen section to replace")
  args = ap.parse_args()

  corpus = corpus_lib.read_corpus()
  splits = split_lib.split_lines(corpus.lines, 0, 0.05, 0.05)
  held = [l.text for s in ("validation", "test") for l in splits[s]]
  train = splits["train"] + split_lib.balance_lines(splits["train"], held, 20, 0, len(corpus.lines))
  fonts = fonts_lib.default_fonts()
  chars = sorted({c for l in train for c in l.text})
  coverage = [fonts_lib.coverage(f, chars) for f in fonts]
  ids = [i for i, f in enumerate(fonts) if f.name not in fonts_lib.DEFAULT_HOLDOUT]
  jobs, _, _ = build.plan_split("train", train, fonts, coverage, ids, 8, 0)
  need = args.windows * args.window_images + 200
  jobs = jobs[:need]
  knobs = render.RenderConfig()
  init = (fonts, knobs, 0, 32, 0.25)
  ctx = multiprocessing.get_context("spawn")
  rates = []
  with ctx.Pool(args.workers, build._init_worker, init) as pool:
    list(pool.imap(build._render_job, jobs[:200], chunksize=64))  # warm-up: imports, font cache
    for w in range(args.windows):
      chunk = jobs[200 + w * args.window_images: 200 + (w + 1) * args.window_images]
      t = time.perf_counter()
      n = sum(1 for _ in pool.imap(build._render_job, chunk, chunksize=64))
      rates.append(n / (time.perf_counter() - t))
      print(f"window {w}: {rates[-1]:.0f} images/s", file=sys.stderr)
  med, lo, hi = statistics.median(rates), min(rates), max(rates)
  line = (f"| datagen render, default knobs, {args.workers} workers | {med:.0f} | {lo:.0f} | {hi:.0f} | "
          f"{args.windows} x {args.window_images} images |")
  print(line)
  if args.write:
    import PIL
    cpu = platform.processor() or platform.machine()
    section = "\n".join([
        MARK_BEGIN,
        f"Measured {datetime.date.today()} on {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        f"Pillow {PIL.__version__} (FreeType {__import__('PIL.features').features.version('freetype2')}).",
        "Command: `python bench/bench_datagen.py --write BENCHMARKS.md` (or `make bench-datagen`).",
        "",
        "| what | median images/s | min | max | windows |",
        "| --- | ---: | ---: | ---: | --- |",
        line,
        MARK_END])
    replace_section(args.write, MARK_BEGIN, MARK_END, section, "Data generation")

if __name__ == "__main__":
  main()
