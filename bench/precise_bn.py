"""Precise batch norm: does recomputing the BN statistics of the evaluated weights help?

    python bench/precise_bn.py --workdir runs/e8_at8k --weights ema --batches 200 [--augment] [--split validation]

Loads the latest checkpoint of a run (EMA or raw weights), replaces its BN running statistics by
the average of the per-batch statistics of those weights over `--batches` training batches (the
training pipeline with another seed, without augmentation unless `--augment`), and evaluates the
split; `--batches 0` evaluates the stored statistics.  Prints one JSON line.  Results:
BENCHMARKS.md ("Training step and input pipeline", tried and dropped).
"""
import argparse
import json
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--weights", default="ema", choices=("ema", "raw"))
  ap.add_argument("--batches", type=int, default=200)
  ap.add_argument("--augment", action="store_true")
  ap.add_argument("--split", default="validation")
  ap.add_argument("--cpu_devices", type=int, default=2)
  args = ap.parse_args()
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_force_host_platform_device_count={args.cpu_devices}").strip()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import jax
  import jax.numpy as jnp
  from crnn_jax import evaluate, inference, input_pipeline, mesh as mesh_lib

  reader = inference.load(args.workdir, "latest", args.weights, mesh=mesh_lib.make_mesh())
  config, charset, step, model = reader.config, reader.charset, reader.step, reader.model
  variables = reader.variables
  from crnn_jax.model import BN_MOMENTUM as momentum

  @jax.jit
  def batch_stats_of(params, batch_stats, images, frames):
    zeros = jax.tree.map(jnp.zeros_like, batch_stats)
    _, upd = model.apply({"params": params, "batch_stats": zeros}, images, frames, train=True,
                         rngs={"dropout": jax.random.PRNGKey(0)}, mutable=["batch_stats"])
    return jax.tree.map(lambda x: x / (1 - momentum), upd["batch_stats"])  # this batch's statistics

  res = {"workdir": args.workdir, "checkpoint_step": step, "weights": args.weights, "batches": args.batches,
         "augment": args.augment, "split": args.split}
  if args.batches > 0:
    spec = evaluate.pipeline_spec(config, config.train.batch_size)
    ds = input_pipeline.train_dataset(config.data_dir, spec, config.input.augment if args.augment else None,
                                      seed=config.seed + 12345)
    total, t = None, time.time()
    for raw in ds.take(args.batches):
      b = input_pipeline.to_numpy(raw)
      g = mesh_lib.global_batch({k: b[k] for k in ("image", "frames")}, reader.steps.mesh)
      s = batch_stats_of(variables["params"], variables["batch_stats"], g["image"], g["frames"])
      total = s if total is None else jax.tree.map(jnp.add, total, s)
    variables = dict(variables, batch_stats=jax.tree.map(lambda x: x / args.batches, total))
    res["recalibration_s"] = round(time.time() - t, 1)
  m, _, _ = evaluate.evaluate(reader.steps, variables, config, config.data_dir, args.split, charset)
  res.update(seq_acc=round(m["seq_acc"], 4), cer=round(m["cer"], 4))
  print(json.dumps(res))


if __name__ == "__main__":
  main()
