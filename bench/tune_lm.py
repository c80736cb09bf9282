"""Tune the beam-search decoder (LM weight, length bonus, LM order, beam) on a split.

    python bench/tune_lm.py --workdir runs/e11_p05 --checkpoint latest --split validation \
        --lm-weight 0 0.3 0.5 0.8 --length-bonus 0 0.5 1 --lm-order 2 3 4

Runs the model once over the split (the top-K log-probabilities per frame, `inference.topk_step`),
then decodes those outputs with every combination and prints one row each: sequence accuracy,
CER and decode time.  Greedy decoding of the same outputs is the first row.  Tune on the
validation split; report the chosen setting on test with `crnn-eval --decoder beam ...`.
The LMs are built from the run's training data (the training corpus lines only).
"""
import argparse
import itertools
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def model_outputs(workdir, checkpoint, weights, split, topk, max_examples=None, data=None):
  import jax
  from crnn_jax import evaluate, inference, mesh as mesh_lib
  reader = inference.load(workdir, checkpoint, weights, mesh=mesh_lib.make_mesh())
  config, charset, step = reader.config, reader.charset, reader.step
  fn = reader.steps.topk(topk)
  rows = []
  for b, n_real, (x, f) in evaluate.eval_batches(reader.steps, config, data or config.data_dir, split, max_examples):
    vals, ids, blank = (np.asarray(a) for a in jax.device_get(fn(reader.variables, x, f)))
    for i in range(n_real):
      n = int(b["frames"][i])
      rows.append((b["text"][i].decode(), b["font"][i].decode(), vals[i, :n], ids[i, :n], blank[i, :n]))
  return config, charset, step, rows


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--checkpoint", default="latest", choices=("best", "latest"))
  ap.add_argument("--weights", default="ema", choices=("ema", "raw"))
  ap.add_argument("--split", default="validation")
  ap.add_argument("--data", default=None, help="DATA_DIR of --split (default: the run's); e.g. the other-world "
                                               "set, --data data/otherworld --split val_degraded")
  ap.add_argument("--max-examples", type=int, default=None)
  ap.add_argument("--topk", type=int, default=8)
  ap.add_argument("--beam", type=int, nargs="+", default=[8])
  ap.add_argument("--lm-weight", type=float, nargs="+", default=[0.0, 0.3, 0.5, 0.8])
  ap.add_argument("--length-bonus", type=float, nargs="+", default=[0.0, 0.5, 1.0])
  ap.add_argument("--lm-order", type=int, nargs="+", default=[3])
  ap.add_argument("--json", default=None, help="also write the rows as JSON lines to this file")
  args = ap.parse_args(argv)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from crnn_jax import decode, lm as lm_lib
  from crnn_jax.metrics import Accumulator

  t0 = time.time()
  config, charset, step, rows = model_outputs(args.workdir, args.checkpoint, args.weights, args.split,
                                              args.topk, args.max_examples, args.data)
  print(f"{len(rows)} {args.split} images through step {step} of {args.workdir} in {time.time() - t0:.0f} s",
        file=sys.stderr)
  lines = lm_lib.training_lines(config.data_dir)
  lms = {n: lm_lib.CharNgramLM.from_lines(lines, order=n, vocab_size=charset.num_classes)
         for n in args.lm_order}
  out = []

  def report(name, hyps, seconds):
    acc = Accumulator()
    acc.add([r[0] for r in rows], hyps, [r[1] for r in rows])
    res = acc.result()
    row = {"setting": name, "seq_acc": round(res["seq_acc"], 4), "cer": round(res["cer"], 5),
           "errors": sum(1 for r, h in zip(rows, hyps) if r[0] != h), "seconds": round(seconds, 1)}
    out.append(row)
    print(f"{name:<44} seq_acc {row['seq_acc']:.4f}  cer {row['cer']:.5f}  wrong {row['errors']:4d}  "
          f"{seconds:6.1f} s", flush=True)

  t = time.time()
  report("greedy", [charset.text(decode.collapse(r[3][:, 0])) for r in rows], time.time() - t)
  for beam, order, w, bonus in itertools.product(args.beam, args.lm_order, args.lm_weight, args.length_bonus):
    if w == 0 and order != args.lm_order[0]:
      continue  # no LM: the order does not matter
    t = time.time()
    hyps = [decode.beam_search(r[2], r[3], r[4], len(r[4]), charset, lm=lms[order], lm_weight=w,
                               length_bonus=bonus, beam=beam) for r in rows]
    report(f"beam {beam} order {order} lm_weight {w} bonus {bonus}", hyps, time.time() - t)
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      for row in out:
        f.write(json.dumps(row) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
