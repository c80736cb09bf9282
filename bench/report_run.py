"""Time to accuracy of a finished training run, checked against the training issue's target.

    make main                                   # trains runs/poem_cpu and writes eval_test.json
    python bench/report_run.py --workdir runs/poem_cpu --write BENCHMARKS.md

Reads the workdir's metrics.jsonl, eval_test.json (crnn-eval) and run_info.json; draws the
learning curve into docs/learning_curve.png; prints the headline and whether the target
(>= 97% test sequence accuracy within 60 minutes of training) is met; `--write` replaces the
time-to-accuracy section of BENCHMARKS.md.
"""
import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bench.markdown import replace_section  # noqa: E402
from crnn_jax.checkpointing import read_train_time  # noqa: E402
from crnn_jax.report_plot import plot_learning_curve, plot_test_by_step, read_metrics  # noqa: E402

BEGIN, END = "<!-- report_run:begin -->", "<!-- report_run:end -->"
TARGET_ACC, TARGET_MIN = 0.97, 60.0


def _decoding(ev):
  d = ev.get("decoding", {"decoder": "greedy"})
  if d["decoder"] == "greedy":
    return "greedy decoding"
  lm = f" + character {d['lm_order']}-gram LM x {d['lm_weight']}" if d.get("lm_weight") else ""
  return f"beam search {d['beam']}{lm}"


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--plot", default="docs/learning_curve.png")
  ap.add_argument("--test-plot", default="docs/test_by_step.png",
                  help="test accuracy by checkpoint, when the workdir holds eval_test_step<N>.json files "
                       "(crnn-eval --checkpoint N)")
  ap.add_argument("--command", default="make main")
  ap.add_argument("--write", default=None)
  args = ap.parse_args()
  wd = pathlib.Path(args.workdir)
  rows = read_metrics(wd)
  ev = json.loads((wd / "eval_test.json").read_text(encoding="utf-8"))
  info = json.loads((wd / "run_info.json").read_text(encoding="utf-8"))
  train = [r for r in rows if "loss" in r]
  # train_minutes counts earlier processes of a resumed run too (wall_minutes: this process only).
  minutes = train[-1].get("train_minutes", train[-1]["wall_minutes"])
  budget_stop = read_train_time(str(wd)).get("stopped_by_time_budget_at")
  speeds = sorted(r["images_per_sec"] for r in train[len(train) // 10:])
  # With an EMA of the weights, evaluation and inference go by it ("validation_ema/..."); the raw
  # weights' numbers are listed beside it.
  ema = any("validation_ema/seq_acc" in r for r in rows)
  key = "validation_ema" if ema else "validation"
  vals = [(r["step"], r[f"{key}/seq_acc"], r[f"{key}/cer"], r.get("validation/seq_acc"), r.get("validation/cer"))
          for r in rows if f"{key}/seq_acc" in r]
  plot_learning_curve(wd, args.plot, title=f"{wd.name}: training loss and validation accuracy")
  n_test = plot_test_by_step(wd, args.test_plot, TARGET_ACC, TARGET_MIN)
  test_plot = (f"\n\nTest accuracy of the {n_test} checkpoints evaluated on test (`crnn-eval --checkpoint N`, "
               f"and the final eval) by training minutes:\n\n![test accuracy by checkpoint]({args.test_plot})") if n_test else ""
  met = ev["seq_acc"] >= TARGET_ACC and minutes <= TARGET_MIN
  # Time to 95%: the first periodic evaluation at >= 95% (validation: unseen lines made like the
  # test's; test is read once, at the end).  wall_minutes of the nearest training log before it.
  t95 = None
  for step, acc, *_ in vals:
    if acc >= 0.95:
      before = [r for r in train if r["step"] <= step]
      t95 = (step, before[-1].get("train_minutes", before[-1]["wall_minutes"]) if before else None)
      break
  cs_path = wd / "compile_stats.json"
  cs = json.loads(cs_path.read_text(encoding="utf-8")) if cs_path.exists() else None
  if cs:
    secs = cs["train_step_compile_seconds_by_width"]
    cs_rows = f"""| train-step compiles (width buckets met) / recompiles after a bucket's first use | {sum(cs['train_step_compiles_by_width'].values())} ({len(secs)} buckets) / **{cs['recompiles_after_first_use']}** |
| train-step compile time, total (per bucket {min(secs.values()):.1f}-{max(secs.values()):.1f} s) | {sum(secs.values()):.0f} s |
| all XLA compiles in the run (train, eval, init) | {cs['compiles_total']}, {cs['compile_seconds_total']:.0f} s |
| peak RSS of the training process | {cs['peak_rss_mb']:.0f} MiB |
"""
  else:
    cs_rows = ""
  t95_row = (f"| time to 95% (first validation eval >= 0.95{', EMA weights' if ema else ''}) | **{t95[1]:.1f} min** (step {t95[0]}) |\n"
             if t95 and t95[1] is not None else "| time to 95% (validation) | not reached |\n")
  fonts = "\n".join(f"| {f} | {m['n']} | {m['seq_acc']:.4f} | {m['cer']:.4f} |" for f, m in ev["by_font"].items())
  lengths = "\n".join(f"| {k} | {m['n']} | {m['seq_acc']:.4f} | {m['cer']:.4f} |" for k, m in ev["by_length"].items())
  if ema:
    curve_head = "| step | seq acc (EMA weights) | CER (EMA) | seq acc (raw weights) | CER (raw) |\n| ---: | ---: | ---: | ---: | ---: |"
    curve = "\n".join(f"| {s} | {a:.3f} | {c:.3f} | {ra:.3f} | {rc:.3f} |" for s, a, c, ra, rc in vals)
  else:
    curve_head = "| step | seq acc | CER |\n| ---: | ---: | ---: |"
    curve = "\n".join(f"| {s} | {a:.3f} | {c:.3f} |" for s, a, c, *_ in vals)
  g = ev.get("greedy")
  greedy_row = (f"| ... the same outputs decoded greedily (the model alone): seq acc / CER | {g['seq_acc']:.4f} / {g['cer']:.4f} |\n"
                if g else "")
  h = info.get("host", {})
  host = (f", {h.get('cpu_count')} x {h.get('cpu_model', '?')} ({', '.join(h.get('simd', [])) or 'no SIMD flags read'})"
          if h else "")
  stop = f" (stopped by train.time_budget_minutes at step {budget_stop})" if budget_stop else ""
  section = f"""{BEGIN}
Command: `{args.command}` (then `python bench/report_run.py --workdir {args.workdir} --write BENCHMARKS.md`).
Run: {info['process_count']} process, mesh {info['mesh']}, jax {info['versions']['jax']}, git {info['git_revision'][:10]}{' (dirty)' if info['git_dirty'] else ''}{host}.

| | |
| --- | --- |
| training wall time (incl. compiles and periodic evaluation) | **{minutes:.1f} min** for {train[-1]['step']} steps{stop} |
| test sequence accuracy (checkpoint of step {ev['checkpoint_step']}, {ev.get('weights', 'raw')} weights, {ev['n']} images, {_decoding(ev)}) | **{ev['seq_acc']:.4f}** |
{greedy_row}| test CER / 1 - NED | {ev['cer']:.4f} / {ev['one_minus_ned']:.4f} |
| training throughput, median (min-max) over log windows | {speeds[len(speeds) // 2]:.0f} ({speeds[0]:.0f}-{speeds[-1]:.0f}) images/s |
{t95_row}{cs_rows}| target: >= {TARGET_ACC:.0%} within {TARGET_MIN:.0f} min | **{'met' if met else 'NOT met'}** |

![learning curve]({args.plot}){test_plot}

By font (the held-out font never appears in training):

| font | images | seq acc | CER |
| --- | ---: | ---: | ---: |
{fonts}

By label length:

| length | images | seq acc | CER |
| ---: | ---: | ---: | ---: |
{lengths}

Validation during training (the first eval.max_examples images of the validation split):

{curve_head}
{curve}
{END}"""
  print(section)
  if args.write:
    replace_section(args.write, BEGIN, END, section, "Time to accuracy (default config, 2-core CPU)")
  return 0 if met else 1


if __name__ == "__main__":
  sys.exit(main())
