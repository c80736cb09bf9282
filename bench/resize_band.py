"""The reading path's resize to height 32: the banded filter (`inference.to_input`, since the
eleventh session) against the dense weight matrices it replaced, on line shapes from a short crop to
a 6,400-px line.  Medians and min-max of repeated calls, alone on the machine; the outputs compared
(max |difference|) and the dense weight matrix's size.

    python bench/resize_band.py [--reps 200]
"""
import argparse
import statistics
import time

import numpy as np

from crnn_jax import inference

SHAPES = ((32, 280), (48, 400), (64, 900), (200, 2400), (32, 6400))


def dense(g, h, w, new_w):
  return (inference._triangle_weights(h, 32) @ (g.astype(np.float32) / 255.0)
          @ inference._triangle_weights(w, new_w).T)


def timed(fn, reps):
  fn()  # weights built and cached
  out = []
  for _ in range(reps):
    t = time.perf_counter()
    fn()
    out.append((time.perf_counter() - t) * 1e3)
  return statistics.median(out), min(out), max(out)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--reps", type=int, default=200)
  args = ap.parse_args()
  rng = np.random.default_rng(0)
  print("| line (h x w) | dense ms, median (min-max) | banded ms, median (min-max) | speed-up | max abs diff | dense weights MB |")
  print("| --- | ---: | ---: | ---: | ---: | ---: |")
  for h, w in SHAPES:
    g = rng.integers(0, 256, (h, w)).astype(np.uint8)
    new_w = inference.resized_width(h, w, 32, 8)
    d = timed(lambda: dense(g, h, w, new_w), args.reps)
    b = timed(lambda: inference.to_input(g, 32, 8), args.reps)
    diff = float(np.abs(dense(g, h, w, new_w) - inference.to_input(g, 32, 8)).max())
    print(f"| {h} x {w} | {d[0]:.3f} ({d[1]:.3f}-{d[2]:.3f}) | {b[0]:.3f} ({b[1]:.3f}-{b[2]:.3f}) | "
          f"{d[0] / b[0]:.1f}x | {diff:.1e} | {w * new_w * 4 / 1e6:.1f} |")


if __name__ == "__main__":
  main()
