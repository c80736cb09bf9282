"""A character n-gram language model (interpolated Kneser-Ney) for CTC beam search.

Built from the *training* corpus lines of a DATA_DIR (datagen's `splits/train.txt`, rows whose
source is "corpus"; the re-combined balance lines are random character strings and are left
out), never from validation or test lines.  Lines start with BOS and end with EOS; a character
the training text never holds still gets probability from the uniform floor over the charset.

    lm = CharNgramLM.from_lines(lines, order=3, vocab_size=len(charset) + 1)
    lm.logp(BOS + "明", "月")           # natural log; the context's last order-1 symbols count
    lm.save(path); CharNgramLM.load(path)

Interpolated Kneser-Ney with one discount D per order (Chen & Goodman 1998): the highest order
uses raw counts, lower orders the number of distinct left contexts an n-gram follows (n-grams
starting with BOS keep raw counts: nothing precedes BOS).
"""
import collections
import json
import math
import os

from crnn_jax.errors import UserError

BOS, EOS = "\ue000", "\ue001"  # private-use code points: no charset holds them
FORMAT = 1


class CharNgramLM:

  def __init__(self, order, vocab_size, counts, discount=0.75):
    """counts[m]: {context (str of m-1 symbols): {char: adjusted count}} for m = 1..order."""
    if order < 1:
      raise ValueError(f"order must be >= 1, got {order}")
    self.order, self.vocab_size, self.discount = order, vocab_size, discount
    self.counts = counts
    # Per context: total count and number of distinct followers.
    self.totals = [{h: (sum(f.values()), len(f)) for h, f in counts[m].items()} for m in range(order + 1)]
    self._cache = {}

  @classmethod
  def from_lines(cls, lines, order=3, vocab_size=4000, discount=0.75):
    raw = collections.Counter()
    for text in lines:
      s = BOS + text + EOS
      for i in range(1, len(s)):  # every predicted symbol (not BOS) with up to order-1 before it
        for m in range(1, min(order, i + 1) + 1):
          raw[s[i - m + 1:i + 1]] += 1
    # raw holds every n-gram of length 1..order ending at a position >= 1 (BOS is never predicted).
    left = collections.defaultdict(set)
    for g in raw:
      if len(g) >= 2:
        left[g[1:]].add(g[0])
    counts = [dict() for _ in range(order + 1)]
    for g, c in raw.items():
      m = len(g)
      adjusted = c if (m == order or g[0] == BOS) else len(left.get(g, ()))
      if adjusted:
        counts[m].setdefault(g[:-1], {})[g[-1]] = adjusted
    return cls(order, vocab_size, counts, discount)

  def logp(self, context, char):
    """log P(char | context); `context` is a string or tuple of previous symbols (BOS first)."""
    h = "".join(context)[-(self.order - 1):] if self.order > 1 else ""
    key = (h, char)
    v = self._cache.get(key)
    if v is None:
      v = self._cache[key] = math.log(self._p(h, char))
    return v

  def _p(self, h, char):
    m = len(h) + 1
    p_lower = 1.0 / self.vocab_size if m == 1 else self._p(h[1:], char)
    tot = self.totals[m].get(h)
    if tot is None:
      return p_lower
    total, types = tot
    c = self.counts[m][h].get(char, 0)
    return max(c - self.discount, 0.0) / total + self.discount * types / total * p_lower

  def score(self, text, eos=True):
    """Sum of log P over the characters of `text` (+ EOS)."""
    ctx, out = BOS, 0.0
    for ch in text + (EOS if eos else ""):
      out += self.logp(ctx, ch)
      ctx += ch
    return out

  def to_json(self):
    return {"format": FORMAT, "kind": "char_ngram_kneser_ney", "order": self.order,
            "vocab_size": self.vocab_size, "discount": self.discount,
            "counts": [{h: f for h, f in sorted(self.counts[m].items())} for m in range(self.order + 1)]}

  def save(self, path):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump(self.to_json(), f, ensure_ascii=False)
    os.replace(tmp, path)

  @classmethod
  def load(cls, path):
    try:
      with open(path, encoding="utf-8") as f:
        d = json.load(f)
    except (OSError, ValueError) as e:
      raise UserError(f"cannot read the language model {path} ({e}); delete it to rebuild it "
                      "from the training data, or decode with --decoder greedy") from None
    if d.get("format") != FORMAT or d.get("kind") != "char_ngram_kneser_ney":
      raise UserError(f"{path} is not a crnn-jax character language model (format {FORMAT})")
    return cls(d["order"], d["vocab_size"], d["counts"], d["discount"])


def training_lines(data_dir):
  """The training corpus lines of a datagen DATA_DIR (splits/train.txt rows of source 'corpus')."""
  path = os.path.join(data_dir, "splits", "train.txt")
  if not os.path.exists(path):
    raise UserError(f"{path} does not exist: the language model is built from datagen's training "
                    "split; use a DATA_DIR made by `datagen build`, or decode with --decoder greedy")
  lines = []
  with open(path, encoding="utf-8") as f:
    for i, row in enumerate(f, 1):
      parts = row.rstrip("\n").split("\t")
      if len(parts) != 3:
        raise UserError(f"{path}:{i}: expected line_id<TAB>source<TAB>text, got {row.rstrip()!r}")
      if parts[1] == "corpus":
        lines.append(parts[2])
  return lines


def for_workdir(workdir, data_dir, order, vocab_size):
  """The workdir's lm.json (order `order`), built from `data_dir`'s training lines and saved
  there when missing or of another order."""
  path = os.path.join(workdir, f"lm{order}.json")
  if os.path.exists(path):
    return CharNgramLM.load(path)
  lm = CharNgramLM.from_lines(training_lines(data_dir), order=order, vocab_size=vocab_size)
  lm.save(path)
  return lm
