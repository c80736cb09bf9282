"""The training input pipeline alone: local batches/s and images/s it delivers (augmentation on).

    python bench/pipeline.py [--config configs/poem_cpu.py] [--data data/poem] [--windows 5]
        [--window-batches 50]

Builds `train_dataset` exactly as `crnn-train` does for one process (config's batch size,
buckets, augmentation, shuffle buffer), converts each batch to numpy as the trainer does, and
times `--windows` windows after a warm-up window.  Compare with the trainer's consumption
(`bench/train_step.py`, or images_per_sec in a run's metrics.jsonl): the issue's target is >= 3x.
"""
import argparse
import json
import os
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--config", default="configs/poem_cpu.py")
  ap.add_argument("--data", default=None, help="DATA_DIR (default: the config's)")
  ap.add_argument("--windows", type=int, default=5)
  ap.add_argument("--window-batches", type=int, default=50)
  ap.add_argument("--workdir", default=None,
                  help="a finished run: its median images_per_sec (metrics.jsonl) is the trainer's consumption")
  ap.add_argument("--write", default=None, help="replace this benchmark's section of a Markdown file")
  args = ap.parse_args()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from bench.common import load_config
  from crnn_jax import input_pipeline, train
  c = load_config(args.config)
  data = args.data or c.data_dir
  spec = train.pipeline_spec(c, c.train.batch_size)
  ds = input_pipeline.train_dataset(data, spec, c.input.augment, seed=c.seed, shuffle_buffer=c.input.shuffle_buffer)
  it = iter(ds)
  for _ in range(args.window_batches):  # warm-up: file opening, first shuffle block, autotune
    input_pipeline.to_numpy(next(it))
  rates, widths = [], []
  for _ in range(args.windows):
    t, n = time.perf_counter(), 0
    for _ in range(args.window_batches):
      b = input_pipeline.to_numpy(next(it))
      n += len(b["weight"])
      widths.append(b["image"].shape[2])
    rates.append(n / (time.perf_counter() - t))
  row = {"config": args.config, "data": data, "batch": c.train.batch_size,
         "images_per_sec_median": round(statistics.median(rates), 1),
         "min": round(min(rates), 1), "max": round(max(rates), 1),
         "mean_bucket_width": round(statistics.mean(widths), 1),
         "windows": f"{args.windows} x {args.window_batches} batches"}
  if args.workdir:
    from crnn_jax.report_plot import read_metrics
    train = [r["images_per_sec"] for r in read_metrics(pathlib.Path(args.workdir)) if "images_per_sec" in r]
    train = sorted(train[len(train) // 10:])  # past the compiles
    row["trainer_images_per_sec_median"] = round(train[len(train) // 2], 1)
    row["pipeline_over_trainer"] = round(row["images_per_sec_median"] / row["trainer_images_per_sec_median"], 1)
  print(json.dumps(row))
  if args.write:
    from bench.markdown import replace_section
    lines = [f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores, one process, {args.config} on {data} "
             f"(augmentation on, batch {c.train.batch_size}, {row['windows']} after a warm-up window).",
             f"Command: `python bench/pipeline.py --config {args.config}"
             + (f" --data {args.data}" if args.data else "") + (f" --workdir {args.workdir}" if args.workdir else "")
             + " --write BENCHMARKS.md`.", "",
             "| | images/s, median (min-max) |", "| --- | ---: |",
             f"| input pipeline alone | **{row['images_per_sec_median']}** ({row['min']}-{row['max']}) |"]
    if args.workdir:
      lines += [f"| trainer's consumption (`{args.workdir}`, median of its log windows) | "
                f"{row['trainer_images_per_sec_median']} |",
                f"| pipeline / trainer (target >= 3) | **{row['pipeline_over_trainer']}x** |"]
    b, e = "<!-- pipeline:begin -->", "<!-- pipeline:end -->"
    replace_section(args.write, b, e, b + "\n" + "\n".join(lines) + "\n" + e, "Input pipeline alone")


if __name__ == "__main__":
  main()
