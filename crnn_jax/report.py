"""crnn-report: aggregate workdirs into a Markdown table and a learning-curve plot.

    crnn-report W1 W2 ... [--split test] [--plot curves.png] [--output report.md]

Runs whose configs differ only in `seed` form one row: mean ± sample std over seeds of sequence
accuracy and CER, mean training wall time and images/s, the number of runs.  Accuracy comes from
W/eval_<split>.json (crnn-eval) when present, else from the last periodic evaluation in
W/metrics.jsonl (the config's eval split, usually validation; the `source` column says which).
Rows are labelled by the config keys that differ between groups.
"""
import argparse
import json
import math
import pathlib
import statistics
import sys

from crnn_jax import config_check


def _flatten(d, prefix=""):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = json.dumps(v, sort_keys=True)
  return out


def read_run(workdir, split):
  wd = pathlib.Path(workdir)
  if not (wd / "config.json").exists() or not (wd / "metrics.jsonl").exists():
    raise ValueError(f"{wd} is not a training workdir (no config.json / metrics.jsonl)")
  config = _flatten(json.loads((wd / "config.json").read_text(encoding="utf-8")))
  rows = [json.loads(l) for l in (wd / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if l.strip()]
  train = [r for r in rows if "loss" in r]
  evals = [r for r in rows if any(k.endswith("/seq_acc") for k in r)]
  # Training wall time over restarts: wall_minutes restarts at 0 in each resumed process.
  wall, last = 0.0, 0.0
  for r in train:
    if r["wall_minutes"] < last:
      wall += last
    last = r["wall_minutes"]
  wall += last
  ips = [r["images_per_sec"] for r in train[1:]] or [r["images_per_sec"] for r in train]
  run = {"workdir": str(wd), "config": config, "wall_minutes": wall,
         "images_per_sec": statistics.median(ips) if ips else float("nan"),
         "steps": train[-1]["step"] if train else 0, "curve": evals}
  ev = wd / f"eval_{split}.json"
  if ev.exists():
    res = json.loads(ev.read_text(encoding="utf-8"))
    run.update(seq_acc=res["seq_acc"], cer=res["cer"], source=f"{split} (crnn-eval)")
  elif evals:
    key = next(k for k in evals[-1] if k.endswith("/seq_acc"))
    s = key.split("/")[0]
    run.update(seq_acc=evals[-1][key], cer=evals[-1][f"{s}/cer"], source=f"{s} (last periodic eval)")
  else:
    run.update(seq_acc=float("nan"), cer=float("nan"), source="none")
  return run


def _mean_std(xs, digits=4):
  xs = [x for x in xs if not math.isnan(x)]
  if not xs:
    return "n/a"
  if len(xs) == 1:
    return f"{xs[0]:.{digits}f}"
  return f"{statistics.mean(xs):.{digits}f} ± {statistics.stdev(xs):.{digits}f}"


def group(runs):
  groups = {}
  for r in runs:
    key = tuple(sorted((k, v) for k, v in r["config"].items() if k != "seed"))
    groups.setdefault(key, []).append(r)
  keys = set().union(*(dict(k).keys() for k in groups))
  differing = sorted(k for k in keys if len({dict(g).get(k) for g in groups}) > 1)
  out = []
  for key, rs in groups.items():
    d = dict(key)
    label = ", ".join(f"{k}={d.get(k)}" for k in differing) or "all runs"
    out.append((label, rs))
  return out


def table(runs):
  lines = ["| runs | n | seeds | steps | seq acc (mean ± std) | CER (mean ± std) | wall min | images/s | source |",
           "|---|---|---|---|---|---|---|---|---|"]
  for label, rs in group(runs):
    seeds = ",".join(sorted(r["config"].get("seed", "?") for r in rs))
    lines.append(f"| {label} | {len(rs)} | {seeds} | {rs[0]['steps']} | {_mean_std([r['seq_acc'] for r in rs])} | "
                 f"{_mean_std([r['cer'] for r in rs])} | {statistics.mean(r['wall_minutes'] for r in rs):.1f} | "
                 f"{statistics.mean(r['images_per_sec'] for r in rs):.0f} | {rs[0]['source']} |")
  return "\n".join(lines)


def plot(runs, out_png):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(7, 4))
  for r in runs:
    if not r["curve"]:
      continue
    key = next(k for k in r["curve"][0] if k.endswith("/seq_acc"))
    ax.plot([c["step"] for c in r["curve"]], [c[key] for c in r["curve"]], "o-", ms=3,
            label=pathlib.Path(r["workdir"]).name)
    ax.set_ylabel(f"{key.split('/')[0]} sequence accuracy")
  ax.set_xlabel("step")
  ax.set_ylim(0, 1)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(out_png, dpi=110)
  plt.close(fig)


def main(argv=None):
  ap = config_check.parser(prog="crnn-report", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("workdirs", nargs="+")
  ap.add_argument("--split", default="test", help="which crnn-eval result to prefer (eval_<split>.json)")
  ap.add_argument("--plot", default=None, help="write the runs' learning curves to this PNG")
  ap.add_argument("--output", default=None, help="also write the table to this Markdown file")
  args = ap.parse_args(argv)
  runs, bad = [], 0
  for wd in args.workdirs:
    try:
      runs.append(read_run(wd, args.split))
    except (ValueError, OSError, json.JSONDecodeError, KeyError) as e:
      bad += 1
      print(f"crnn-report: skipped {wd}: {e}", file=sys.stderr)
  if not runs:
    print("crnn-report: error: no readable workdirs", file=sys.stderr)
    return 2
  md = table(runs)
  print(md)
  if args.output:
    pathlib.Path(args.output).write_text(md + "\n", encoding="utf-8")
  if args.plot:
    plot(runs, args.plot)
  if bad:
    print(f"crnn-report: {bad} of {len(args.workdirs)} workdirs skipped", file=sys.stderr)
  return 1 if bad else 0


def run():
  sys.exit(main())


if __name__ == "__main__":
  run()
