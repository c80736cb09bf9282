"""Recognition metrics: sequence accuracy, character error rate, 1 - normalised edit distance.

  seq_acc  = exact matches / examples
  cer      = sum(edit distance) / sum(reference length)           (corpus-level)
  one_minus_ned = mean over examples of 1 - ED / max(len(ref), len(hyp))   (ICDAR-style)
Reported overall, by reference length and by font; `by_train_count` splits the reference
characters by how often each occurs in the training text (misread = substituted or deleted in a
difflib alignment of reference and prediction).
"""
import collections
import difflib

import numpy as np


def edit_distance(a: str, b: str) -> int:
  """Levenshtein distance (unit costs)."""
  if len(a) < len(b):
    a, b = b, a
  prev = list(range(len(b) + 1))
  for i, ca in enumerate(a, 1):
    cur = [i]
    for j, cb in enumerate(b, 1):
      cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
    prev = cur
  return prev[-1]


def misread_chars(ref: str, hyp: str) -> str:
  """The reference characters a prediction misreads: substituted or deleted in a difflib alignment."""
  if ref == hyp:
    return ""
  ops = difflib.SequenceMatcher(None, ref, hyp, autojunk=False).get_opcodes()
  return "".join(ref[i1:i2] for op, i1, i2, _, _ in ops if op in ("replace", "delete"))


class Accumulator:
  """Collects (reference, hypothesis, font) triples and summarises them."""

  def __init__(self):
    self.rows = []

  def add(self, refs, hyps, fonts=None):
    fonts = fonts if fonts is not None else ["-"] * len(refs)
    for r, h, f in zip(refs, hyps, fonts):
      self.rows.append((r, h, f, edit_distance(r, h)))

  @staticmethod
  def _summary(rows):
    if not rows:
      return {"n": 0}
    n = len(rows)
    exact = sum(1 for r, h, _, d in rows if r == h)
    ed = sum(d for *_, d in rows)
    ref_len = sum(len(r) for r, *_ in rows)
    ned = np.mean([1 - d / max(len(r), len(h), 1) for r, h, _, d in rows])
    return {"n": n, "seq_acc": exact / n, "cer": ed / max(ref_len, 1), "one_minus_ned": float(ned)}

  def result(self):
    out = self._summary(self.rows)
    by_len, by_font = collections.defaultdict(list), collections.defaultdict(list)
    for row in self.rows:
      by_len[len(row[0])].append(row)
      by_font[row[2]].append(row)
    out["by_length"] = {str(k): self._summary(v) for k, v in sorted(by_len.items())}
    out["by_font"] = {k: self._summary(v) for k, v in sorted(by_font.items())}
    return out

  COUNT_BINS = (0, 25, 50, 100, 300)

  def by_train_count(self, train_counts):
    """{"lo-hi": {"chars", "misread", "rate"}}: reference characters binned by their count in the
    training text (`train_counts`: char -> occurrences); a character is misread when the
    alignment substitutes or deletes it."""
    edges = self.COUNT_BINS
    names = [f"{lo}-{hi - 1}" for lo, hi in zip(edges, edges[1:])] + [f"{edges[-1]}+"]

    def name(n):
      i = sum(1 for e in edges[1:] if n >= e)
      return names[i]
    tot, bad = collections.Counter(), collections.Counter()
    for ref, hyp, _, dist in self.rows:
      for ch in ref:
        tot[name(train_counts.get(ch, 0))] += 1
      for ch in misread_chars(ref, hyp):
        bad[name(train_counts.get(ch, 0))] += 1
    return {k: {"chars": tot[k], "misread": bad[k], "rate": bad[k] / tot[k]} for k in names if tot[k]}

  def worst(self, k):
    """The k rows with the largest edit distance relative to the reference length."""
    order = sorted(range(len(self.rows)), key=lambda i: (-self.rows[i][3] / max(len(self.rows[i][0]), 1), i))
    return order[:k]
