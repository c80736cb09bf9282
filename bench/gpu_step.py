"""Paper-sized CRNN train step on an accelerator: images/s and model-FLOPs utilisation, fp32 and bf16.

Self-contained (model + optax.ctc_loss + Adam on synthetic batches; no tf.data), so it runs where
only JAX is installed:  python bench/gpu_step.py --batch 128 --width 256 --steps 30 [--modes train infer]
bench/gpu_torch_step.py is the PyTorch side (same model layout, shapes and steps).
FLOPs per step come from XLA's cost analysis of the compiled step.
"""
import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from crnn_jax.model import CRNN

PAPER = dict(conv_features=(64, 128, 256, 256, 512, 512, 512),
             conv_pools=((2, 2), (2, 2), (1, 1), (2, 1), (1, 1), (2, 1), (2, 2)), lstm_hidden=256, lstm_layers=2)


def bench(dtype, batch, width, steps, classes, peak):
  model = CRNN(num_classes=classes, dtype=dtype, **PAPER)
  frames = width // 8
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.random((batch, 32, width, 1), np.float32))
  lengths = jnp.full((batch,), frames, jnp.int32)
  labels = jnp.asarray(rng.integers(1, classes, (batch, 10)), jnp.int32)
  variables = model.init({"params": jax.random.PRNGKey(0)}, images[:1], lengths[:1], train=False)
  tx = optax.adam(1e-3)
  state = (variables["params"], variables.get("batch_stats", {}), tx.init(variables["params"]))

  def step(state, images, lengths, labels):
    params, bs, opt = state
    def loss_fn(p):
      logits, upd = model.apply({"params": p, "batch_stats": bs}, images, lengths, train=True, mutable=["batch_stats"])
      pad = (jnp.arange(logits.shape[1])[None] >= lengths[:, None]).astype(jnp.float32)
      per = optax.ctc_loss(logits, pad, labels, jnp.zeros(labels.shape, jnp.float32), blank_id=0)
      return per.mean(), upd["batch_stats"]
    (loss, bs), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
    u, opt = tx.update(g, opt, params)
    return (optax.apply_updates(params, u), bs, opt), loss

  f = jax.jit(step, donate_argnums=0)
  t0 = time.perf_counter()
  compiled = f.lower(state, images, lengths, labels).compile()
  compile_s = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", 0.0))
  for _ in range(3):
    state, loss = compiled(state, images, lengths, labels)
  loss.block_until_ready()
  times = []
  for _ in range(5):
    t = time.perf_counter()
    for _ in range(steps):
      state, loss = compiled(state, images, lengths, labels)
    loss.block_until_ready()
    times.append((time.perf_counter() - t) / steps)
  med = float(np.median(times))
  return {"dtype": jnp.dtype(dtype).name, "batch": batch, "width": width, "images_per_s": batch / med,
          "images_per_s_min": batch / max(times), "images_per_s_max": batch / min(times),
          "step_ms": med * 1e3, "flops_per_step": flops, "tflops": flops / med / 1e12,
          "mfu_vs_peak": flops / med / peak if flops else None, "peak_tflops": peak / 1e12,
          "compile_s": compile_s, "loss": float(loss)}


def bench_infer(dtype, batch, width, steps, classes):
  """Batched inference: the eval-mode forward pass + argmax, jitted (what crnn-predict runs)."""
  model = CRNN(num_classes=classes, dtype=dtype, **PAPER)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.random((batch, 32, width, 1), np.float32))
  lengths = jnp.full((batch,), width // 8, jnp.int32)
  variables = model.init({"params": jax.random.PRNGKey(0)}, images[:1], lengths[:1], train=False)
  f = jax.jit(lambda v, x, n: jnp.argmax(model.apply(v, x, n, train=False), -1))
  out = f(variables, images, lengths)
  for _ in range(3):
    out = f(variables, images, lengths)
  out.block_until_ready()
  times = []
  for _ in range(5):
    t = time.perf_counter()
    for _ in range(steps):
      out = f(variables, images, lengths)
    out.block_until_ready()
    times.append((time.perf_counter() - t) / steps)
  med = float(np.median(times))
  return {"side": "jax", "mode": "infer", "dtype": jnp.dtype(dtype).name, "batch": batch, "width": width,
          "images_per_s": batch / med, "images_per_s_min": batch / max(times),
          "images_per_s_max": batch / min(times), "step_ms": med * 1e3}


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--batch", type=int, default=128)
  ap.add_argument("--width", type=int, default=256)
  ap.add_argument("--steps", type=int, default=20)
  ap.add_argument("--classes", type=int, default=3790)
  ap.add_argument("--modes", nargs="+", default=["train"], choices=["train", "infer"])
  ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the chip (H100 SXM: 989)")
  args = ap.parse_args()
  print(json.dumps({"device": str(jax.devices()[0].device_kind), "jax": jax.__version__}), flush=True)
  for mode in args.modes:
    for dtype in (jnp.float32, jnp.bfloat16):
      if mode == "train":
        res = {"side": "jax", "mode": "train",
               **bench(dtype, args.batch, args.width, args.steps, args.classes, args.peak_tflops * 1e12)}
      else:
        res = bench_infer(dtype, args.batch, args.width, args.steps, args.classes)
      print(json.dumps(res), flush=True)


if __name__ == "__main__":
  main()
