"""Paper-sized CRNN train step on an accelerator: images/s and model-FLOPs utilisation, fp32 and bf16.

Self-contained (model + optax.ctc_loss + Adam on synthetic batches; no tf.data), so it runs where
only JAX is installed:  python bench/gpu_step.py --batch 128 --width 256 --steps 30 [--modes train infer]
bench/gpu_torch_step.py is the PyTorch side (same model layout, shapes and steps).
FLOPs per step come from XLA's cost analysis of the compiled step.
"""
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from bench.gpu_common import LABEL_LENGTH, PAPER, parser, row, timed_windows  # noqa: E402
from crnn_jax.model import CRNN  # noqa: E402


def bench(dtype, batch, width, steps, classes, peak):
  model = CRNN(num_classes=classes, dtype=dtype, **PAPER)
  frames = width // 8
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.random((batch, 32, width, 1), np.float32))
  lengths = jnp.full((batch,), frames, jnp.int32)
  labels = jnp.asarray(rng.integers(1, classes, (batch, LABEL_LENGTH)), jnp.int32)
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
  holder = {"state": state}

  def one():
    holder["state"], loss = compiled(holder["state"], images, lengths, labels)
    return loss

  times, loss = timed_windows(one, steps, lambda x: x.block_until_ready())
  med = float(np.median(times))
  return row("jax", "train", jnp.dtype(dtype).name, batch, width, times, flops_per_step=flops,
             tflops=flops / med / 1e12, mfu_vs_peak=flops / med / peak if flops else None,
             peak_tflops=peak / 1e12, compile_s=compile_s, loss=float(loss))


def bench_infer(dtype, batch, width, steps, classes):
  """Batched inference: the eval-mode forward pass + argmax, jitted (what crnn-predict runs)."""
  model = CRNN(num_classes=classes, dtype=dtype, **PAPER)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.random((batch, 32, width, 1), np.float32))
  lengths = jnp.full((batch,), width // 8, jnp.int32)
  variables = model.init({"params": jax.random.PRNGKey(0)}, images[:1], lengths[:1], train=False)
  f = jax.jit(lambda v, x, n: jnp.argmax(model.apply(v, x, n, train=False), -1))
  times, _ = timed_windows(lambda: f(variables, images, lengths), steps, lambda x: x.block_until_ready())
  return row("jax", "infer", jnp.dtype(dtype).name, batch, width, times)


def main():
  ap = parser(["train"])
  ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the chip (H100 SXM: 989)")
  args = ap.parse_args()
  print(json.dumps({"device": str(jax.devices()[0].device_kind), "jax": jax.__version__}), flush=True)
  for mode in args.modes:
    for dtype in (jnp.float32, jnp.bfloat16):
      if mode == "train":
        res = bench(dtype, args.batch, args.width, args.steps, args.classes, args.peak_tflops * 1e12)
      else:
        res = bench_infer(dtype, args.batch, args.width, args.steps, args.classes)
      print(json.dumps(res), flush=True)


if __name__ == "__main__":
  main()
