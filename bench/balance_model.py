"""How should the training text be spread over the characters?  A model of it, fitted on a run.

A trained model misreads a character at a rate that falls as a power of how often it was seen
in training: rate ~ a * n ** -k (n = occurrences in the training text; the images are variants
of it, so the times seen are proportional).  This script

1. fits a and k by maximum likelihood (Poisson misread counts per character) on `crnn-eval
   --predictions F.tsv` of a run, with the training counts of the dataset it was trained on;
2. predicts, for a fixed training budget (the same total characters of training text, i.e. the
   same steps), the misreads of other balance targets relative to the dataset's own: the floor
   `--min-char-count F` and the power target `ceil(F * n ** P)` (datagen/split.py), each scaled
   to the budget.  The weights are how often the *validation* split holds each character, and
   the corpus counts of the training lines (what an unseen corpus line holds in expectation);
   the test split is not used to choose.

  python bench/balance_model.py --data data/poem --predictions runs/e9/predictions_validation.tsv

Under rate ~ n ** -k with reads ~ corpus count c, the error total for a fixed budget is smallest
when n ~ c ** (1 / (1 + k)): for k ~ 1.2, n ~ c ** 0.45, far flatter than the corpus frequency.
"""
import argparse
import collections
import csv
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from crnn_jax import metrics  # noqa: E402
from datagen import split as split_lib  # noqa: E402


def misreads(predictions):
  """Per reference character: occurrences and misreads (substituted or deleted), as crnn-eval counts them."""
  tot, bad = collections.Counter(), collections.Counter()
  with open(predictions, encoding="utf-8", newline="") as f:
    for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
      tot.update(row["reference"])
      bad.update(metrics.misread_chars(row["reference"], row["prediction"]))
  return tot, bad


def fit_power(train_counts, tot, bad):
  """Maximum-likelihood (a, k) of misreads_c ~ Poisson(tot_c * a * n_c ** -k)."""
  chars = [c for c in tot if train_counts.get(c, 0) > 0]
  t = np.array([tot[c] for c in chars], float)
  b = np.array([bad[c] for c in chars], float)
  logn = np.log([train_counts[c] for c in chars])
  best = None
  for k in np.arange(0.2, 3.001, 0.01):
    w = t * np.exp(-k * logn)
    a = b.sum() / w.sum()
    ll = float((b * np.log(a * w + 1e-300) - a * w).sum())
    if best is None or ll > best[0]:
      best = (ll, a, k)
  return best[1], best[2]


def relative_errors(targets, base, weights, k):
  """Misreads of `targets` relative to `base`, both scaled to base's total (the same budget)."""
  budget = base.sum()
  err = lambda m: float((weights * (m / m.sum() * budget) ** -k).sum())
  return err(targets) / err(base)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--data", default="data/poem", help="the dataset the run was trained on")
  ap.add_argument("--predictions", default=None, help="crnn-eval --predictions F.tsv of that run (fits k)")
  ap.add_argument("--k", type=float, nargs="*", default=None,
                  help="exponents to predict with (default: the fit, 0.6 and 1.0: a fit across characters "
                       "may overstate what seeing one character more often does)")
  ap.add_argument("--floors", type=int, nargs="*", default=[20, 40, 60])
  ap.add_argument("--powers", type=str, nargs="*", default=["15:0.5", "20:0.4", "10:0.6"], help="F:P pairs")
  args = ap.parse_args(argv)

  splits = split_lib.read_splits(args.data)
  train_counts = collections.Counter(c for l in splits["train"] for c in l.text)
  corpus_counts = collections.Counter(c for l in splits["train"] if l.source == "corpus" for c in l.text)
  val_counts = collections.Counter(c for l in splits["validation"] for c in l.text)
  chars = sorted(train_counts)
  ks = list(args.k or [0.6, 1.0])
  if args.predictions:
    tot, bad = misreads(args.predictions)
    a, k = fit_power(train_counts, tot, bad)
    print(f"fit on {args.predictions}: {sum(bad.values())} misreads of {sum(tot.values())} characters; "
          f"rate ~ {a:.3g} * n ** -{k:.2f} (n = occurrences in {args.data}'s training text)")
    if not args.k:
      ks = [round(k, 2)] + [x for x in ks if abs(x - k) > 0.05]
  n = np.array([train_counts[c] for c in chars], float)
  cc = np.array([corpus_counts.get(c, 0) for c in chars], float)
  weights = {"validation split": np.array([val_counts.get(c, 0) for c in chars], float),
             "corpus counts": np.maximum(cc, 0)}
  rows = [(f"floor {f}", np.array([split_lib.balance_target(int(x), f) for x in cc], float)) for f in args.floors]
  for fp in args.powers:
    f, p = fp.split(":")
    rows.append((f"ceil({f} * n ** {p})", np.array([split_lib.balance_target(int(x), int(f), float(p)) for x in cc], float)))
  print(f"\nbaseline: {args.data}'s own training text ({int(n.sum())} characters); predicted misreads at the "
        "same budget, relative to it")
  head = "| balance target | text (x baseline) | min | " + " | ".join(
      f"k={k:g}, {w}" for k in ks for w in weights) + " |"
  print(head)
  print("| --- | ---: | ---: | " + " | ".join("---:" for _ in ks for _ in weights) + " |")
  for name, m in rows:
    cells = [f"{relative_errors(m, n, w, k):.3f}" for k in ks for w in weights.values()]
    print(f"| {name} | {m.sum() / n.sum():.2f} | {int(m.min())} | " + " | ".join(cells) + " |")
  opt = {k: 1 / (1 + k) for k in ks}
  print("\noptimal exponent of the times seen vs corpus count, 1 / (1 + k): "
        + ", ".join(f"k={k:g}: {e:.2f}" for k, e in opt.items()))
  return 0


if __name__ == "__main__":
  sys.exit(main())
