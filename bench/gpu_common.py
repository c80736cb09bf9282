"""What bench/gpu_step.py (JAX) and bench/gpu_torch_step.py (PyTorch) share, so that both sides
measure the same model, shapes and windows.  Imports neither framework."""
import argparse
import time

import numpy as np

# The paper-sized layout (configs/crnn_paper.py's model): width stride 8, height 32 -> 1.
PAPER = dict(conv_features=(64, 128, 256, 256, 512, 512, 512),
             conv_pools=((2, 2), (2, 2), (1, 1), (2, 1), (1, 1), (2, 1), (2, 2)), lstm_hidden=256, lstm_layers=2)
LABEL_LENGTH = 10


def parser(default_modes):
  ap = argparse.ArgumentParser()
  ap.add_argument("--batch", type=int, default=128)
  ap.add_argument("--width", type=int, default=256)
  ap.add_argument("--steps", type=int, default=20, help="steps per timed window (5 windows, 3 warm-up steps)")
  ap.add_argument("--classes", type=int, default=3790)
  ap.add_argument("--modes", nargs="+", default=default_modes, choices=["train", "infer"])
  return ap


def timed_windows(fn, steps, sync, windows=5, warmup=3):
  """Runs fn warmup times, then `windows` windows of `steps` calls, each closed by sync(last
  result); -> (seconds per call of each window, the last result)."""
  out = None
  for _ in range(warmup):
    out = fn()
  sync(out)
  times = []
  for _ in range(windows):
    t = time.perf_counter()
    for _ in range(steps):
      out = fn()
    sync(out)
    times.append((time.perf_counter() - t) / steps)
  return times, out


def row(side, mode, dtype, batch, width, times, **extra):
  med = float(np.median(times))
  return {"side": side, "mode": mode, "dtype": dtype, "batch": batch, "width": width,
          "images_per_s": batch / med, "images_per_s_min": batch / max(times),
          "images_per_s_max": batch / min(times), "step_ms": med * 1e3, **extra}
