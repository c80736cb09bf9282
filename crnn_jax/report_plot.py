"""Learning-curve plot of a workdir's metrics.jsonl (training loss, validation accuracy and CER)."""
import json
import pathlib


def read_metrics(workdir):
  path = pathlib.Path(workdir) / "metrics.jsonl"
  return [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]


def plot_learning_curve(workdir, out_png, title=None):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  rows = read_metrics(workdir)
  train = [r for r in rows if "loss" in r]
  evals = [r for r in rows if any(k.endswith("/seq_acc") for k in r)]
  fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
  a.plot([r["wall_minutes"] for r in train], [r["loss"] for r in train], lw=0.8)
  a.set_yscale("log")
  a.set_xlabel("training wall time (minutes)")
  a.set_ylabel("CTC loss (train)")
  a.grid(alpha=0.3)
  if evals:
    key = next(k for k in evals[0] if k.endswith("/seq_acc") and "_ema/" not in k)
    split = key.split("/")[0]
    steps = {r["step"]: r["wall_minutes"] for r in train}
    xs = [steps.get(r["step"], float("nan")) for r in evals]
    b.plot(xs, [r[key] for r in evals], "o-", label=f"{split} sequence accuracy")
    b.plot(xs, [r[f"{split}/cer"] for r in evals], "s-", label=f"{split} CER")
    if f"{split}_ema/seq_acc" in evals[0]:  # the run kept an EMA of the weights
      b.plot(xs, [r[f"{split}_ema/seq_acc"] for r in evals], "o--", label=f"{split} sequence accuracy, EMA weights")
      b.plot(xs, [r[f"{split}_ema/cer"] for r in evals], "s--", label=f"{split} CER, EMA weights")
    b.set_ylim(0, 1)
    b.legend()
  b.set_xlabel("training wall time (minutes)")
  b.grid(alpha=0.3)
  fig.suptitle(title or str(workdir))
  fig.tight_layout()
  fig.savefig(out_png, dpi=110)
  plt.close(fig)
  return out_png


def plot_test_by_step(workdir, out_png, target=0.97, hour=60.0, title=None):
  """Test accuracy of every checkpoint evaluated with `crnn-eval --checkpoint STEP` (the
  eval_test_step<N>.json files) against training minutes (train_time.json), decoded as configured
  and greedily; the training issue's target drawn in.  Returns the number of points (0: no plot)."""
  import glob
  import json
  import os
  from crnn_jax.checkpointing import read_train_time
  times = {int(k): v / 60 for k, v in read_train_time(workdir)["seconds_at_step"].items()}
  points, seen = [], set()
  paths = glob.glob(os.path.join(workdir, "eval_test_step*.json")) + [os.path.join(workdir, "eval_test.json")]
  for path in paths:  # eval_test.json (crnn-eval's default file) adds its own checkpoint's step
    if not os.path.exists(path):
      continue
    with open(path, encoding="utf-8") as f:
      r = json.load(f)
    step = int(r.get("checkpoint_step", -1))
    if step in times and step not in seen:
      seen.add(step)
      points.append((times[step], r["seq_acc"], (r.get("greedy") or {}).get("seq_acc"), step))
  if len(points) < 2:
    return 0
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  points.sort()
  fig, ax = plt.subplots(figsize=(7, 4))
  ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label="test, decoding as configured")
  if all(p[2] is not None for p in points):
    ax.plot([p[0] for p in points], [p[2] for p in points], "s--", label="test, greedy (the model alone)")
  ax.axhline(target, color="grey", lw=0.8, ls=":")
  ax.axvline(hour, color="grey", lw=0.8, ls=":")
  ax.text(hour, target, f" {target:.0%} in {hour:.0f} min", va="bottom", ha="right", fontsize=8, color="grey")
  ax.set_xlabel("training minutes (train_time.json)")
  ax.set_ylabel("test sequence accuracy")
  ax.set_xlim(0, max(hour, points[-1][0]) * 1.02)
  ax.grid(alpha=0.3)
  ax.legend(loc="lower right")
  ax.set_title(title or f"{os.path.basename(os.path.normpath(workdir))}: test accuracy by checkpoint")
  fig.tight_layout()
  fig.savefig(out_png, dpi=110)
  plt.close(fig)
  return len(points)
