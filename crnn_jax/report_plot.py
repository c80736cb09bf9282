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
