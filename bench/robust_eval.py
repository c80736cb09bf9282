"""The robustness table: a run read on its own test split and on the other-world set.

    python bench/robust_eval.py --workdir runs/poem_cpu --otherworld data/otherworld \
        [--splits test_clean test_degraded] [--write BENCHMARKS.md]

For each split, `crnn-eval` (the run's default decoding, beam search + LM, with the greedy reading
of the same outputs beside it: the model alone) on the latest checkpoint; prints and writes one
table (overall, by font, by length) into BENCHMARKS.md's "robust-eval" section.  The other-world
set is made by `otherworld build --data DATA_DIR --out data/otherworld` (README, "Robust reading").
"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.markdown import replace_section  # noqa: E402

BEGIN, END = "<!-- robust-eval:begin -->", "<!-- robust-eval:end -->"


def crnn_eval(workdir, data, split, checkpoint):
  cmd = [os.path.join(os.path.dirname(sys.executable), "crnn-eval"), "--workdir", workdir, "--split", split,
         "--checkpoint", checkpoint, "--gallery", "40"]
  if data:
    cmd += ["--data", data]
  out = subprocess.run(cmd, capture_output=True, text=True)
  if out.returncode != 0:
    raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
  return json.loads(out.stdout), " ".join(cmd[0:1]).split("/")[-1] + " " + " ".join(cmd[1:])


def pct(x):
  return f"{100 * x:.2f}%"


def table(rows):
  lines = ["| split | images | with the LM (default decoding) | model alone (greedy) | CER LM / greedy |",
           "| --- | ---: | ---: | ---: | ---: |"]
  for name, res in rows:
    g = res.get("greedy", res)
    lines.append(f"| {name} | {res['n']} | **{pct(res['seq_acc'])}** | {pct(g['seq_acc'])} | "
                 f"{100 * res['cer']:.2f}% / {100 * g['cer']:.2f}% |")
  return lines


def by_font(rows):
  fonts = sorted({f for _, r in rows for f in r.get("by_font", {})})
  lines = ["| font | " + " | ".join(name for name, _ in rows) + " |",
           "| --- | " + " | ".join("---:" for _ in rows) + " |"]
  for f in fonts:
    cells = []
    for _, r in rows:
      lm = r.get("by_font", {}).get(f)
      gr = r.get("greedy", {}).get("by_font", {}).get(f)
      cells.append("" if lm is None else f"{pct(lm['seq_acc'])} / {pct((gr or lm)['seq_acc'])}")
    lines.append(f"| {f} | " + " | ".join(cells) + " |")
  return lines


def by_length(rows):
  keys = sorted({k for _, r in rows for k in r.get("by_length", {})}, key=lambda k: int(k.split("-")[0]))
  lines = ["| length | " + " | ".join(name for name, _ in rows) + " |",
           "| --- | " + " | ".join("---:" for _ in rows) + " |"]
  for k in keys:
    cells = []
    for _, r in rows:
      v = r.get("by_length", {}).get(k)
      cells.append("" if v is None else f"{pct(v['seq_acc'])} (n={v['n']})")
    lines.append(f"| {k} | " + " | ".join(cells) + " |")
  return lines


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--otherworld", default="data/otherworld")
  ap.add_argument("--splits", nargs="+", default=["test_clean", "test_degraded"])
  ap.add_argument("--own-split", default="test", help="the run's own DATA_DIR split read beside them")
  ap.add_argument("--checkpoint", default="latest")
  ap.add_argument("--write", default=None)
  args = ap.parse_args(argv)
  rows, cmds = [], []
  res, cmd = crnn_eval(args.workdir, None, args.own_split, args.checkpoint)
  rows.append((f"own {args.own_split} split", res))
  cmds.append(cmd)
  for split in args.splits:
    res, cmd = crnn_eval(args.workdir, args.otherworld, split, args.checkpoint)
    rows.append((f"other world {split}", res))
    cmds.append(cmd)
  step = rows[0][1].get("checkpoint_step")
  out = [BEGIN, "", f"`{args.workdir}`, checkpoint step {step} ({rows[0][1].get('weights')} weights); "
         "sequence accuracy (exact lines):", ""]
  out += table(rows) + ["", "By font (with the LM / greedy):", ""] + by_font(rows)
  out += ["", "By length (with the LM):", ""] + by_length(rows)
  out += ["", "Commands:", "", "```bash", f"python bench/robust_eval.py --workdir {args.workdir} "
          f"--otherworld {args.otherworld} --splits {' '.join(args.splits)}", *cmds, "```", "", END]
  text = "\n".join(out)
  print(text)
  if args.write:
    replace_section(args.write, BEGIN, END, text, "Robust reading: the other world")
  return 0


if __name__ == "__main__":
  sys.exit(main())
