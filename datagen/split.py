"""Splitting corpus lines into train / validation / test, and frequency-balancing training text.

The split is by poem line and seeded.  A line goes to validation or test only if every one of
its characters still occurs in the training lines afterwards, so the test measures reading
unseen *lines*, never unseen *characters*.  (The original example's test images were rendered
from lines that were also in its training set.)

Balance lines: 874 of the corpus's 3,789 characters occur in one line only, so uniformly drawn
lines show a rare character a handful of times per epoch.  `balance_lines` adds training lines
re-combined from corpus characters until every character has at least its target count of
occurrences in training text: `min_char_count` for all (a floor), or, with `power` > 0,
`ceil(min_char_count * n ** power)` where n is the character's count in the training corpus lines
(characters with n above the target keep n).  The power target follows what test errors cost: a
character's misread rate falls roughly as (times seen) ** -1.2 while it is read in the test in
proportion to n, and the error total for a fixed training budget is smallest when the times seen
grow as n ** (1 / 2.2) ~ n ** 0.45 -- the floor alone spends on characters the test rarely holds
what the many characters of mid frequency (n ~ 10-200) lack.  They are tagged `source=balance`;
validation and test are only real, unseen corpus lines.

Split files (`splits/{train,validation,test}.txt`), one line each: `line_id<TAB>source<TAB>text`.
Corpus lines keep their corpus position as `line_id`; balance lines are numbered after them.
"""
import collections
import dataclasses
import math
import pathlib

import numpy as np

from datagen.errors import DatagenError

SPLITS = ("train", "validation", "test")
SPLIT_CODES = {"train": 0, "validation": 1, "test": 2}


@dataclasses.dataclass(frozen=True)
class Line:
  line_id: int
  source: str  # "corpus" | "balance" | "import"
  text: str


def split_lines(texts, seed: int, validation_fraction: float, test_fraction: float):
  """Returns {split: [Line]} over corpus `texts` (line_id = index in `texts`).

  Held-out lines are drawn in a seeded random order; a line is held out only if all of its
  characters keep at least one occurrence in the remaining training lines.
  """
  for name, frac in (("validation", validation_fraction), ("test", test_fraction)):
    if not 0 <= frac < 0.5:
      raise DatagenError(f"--{name}-fraction {frac} must be in [0, 0.5)")
  n = len(texts)
  want = {"validation": int(round(n * validation_fraction)), "test": int(round(n * test_fraction))}
  train_count = collections.Counter(c for t in texts for c in t)
  held = {"validation": [], "test": []}
  order = np.random.default_rng([seed, 0x5917]).permutation(n)
  turn = ["validation", "test"]
  k = 0
  for i in order:
    open_splits = [s for s in turn if len(held[s]) < want[s]]
    if not open_splits:
      break
    need = collections.Counter(texts[i])
    if all(train_count[c] > m for c, m in need.items()):
      train_count.subtract(need)
      target = open_splits[k % len(open_splits)]  # alternate, so the two are alike
      held[target].append(int(i))
      k += 1
  held_ids = set(held["validation"]) | set(held["test"])
  out = {"train": [Line(i, "corpus", texts[i]) for i in range(n) if i not in held_ids]}
  for s in ("validation", "test"):
    out[s] = [Line(i, "corpus", texts[i]) for i in sorted(held[s])]
  return out


def balance_target(count: int, min_char_count: int, power: float = 0.0) -> int:
  """Occurrences a character with `count` corpus occurrences should have in training text."""
  if power < 0:
    raise ValueError(f"balance power {power} < 0: use 0 (a floor) or a positive exponent")
  return max(count, math.ceil(min_char_count * max(count, 1) ** power - 1e-9))


def balance_lines(train, held_texts, min_char_count: int, seed: int, first_id: int,
                  length_range=(5, 7), power: float = 0.0):
  """Extra training lines so each training character reaches `balance_target` occurrences.

  Each deficit character is repeated as often as it lacks; the pool is shuffled (seeded) and cut
  into lines whose lengths are drawn from `length_range` (the last takes what is left).  A line that equals a held-out text
  is re-shuffled, so balance text never duplicates a validation/test line.
  """
  counts = collections.Counter(c for line in train for c in line.text)
  pool = [c for c in sorted(counts)
          for _ in range(balance_target(counts[c], min_char_count, power) - counts[c])]
  if not pool:
    return []
  rng = np.random.default_rng([seed, 0xBA1A])
  pool = [pool[j] for j in rng.permutation(len(pool))]
  lo, hi = length_range
  held = set(held_texts)
  out, pos = [], 0
  while pos < len(pool):
    length = int(rng.integers(lo, hi + 1))
    chunk = pool[pos:pos + length]
    pos += length
    text = "".join(chunk)
    tries = 0
    while text in held:
      if tries > 100 or len(set(chunk)) == 1:
        raise DatagenError(f"balance line {text!r} keeps equalling a held-out line")
      chunk = [chunk[j] for j in rng.permutation(len(chunk))]
      text = "".join(chunk)
      tries += 1
    out.append(Line(first_id + len(out), "balance", text))
  return out


def write_splits(splits, out_dir) -> None:
  d = pathlib.Path(out_dir) / "splits"
  d.mkdir(parents=True, exist_ok=True)
  for name, lines in splits.items():
    with open(d / f"{name}.txt", "w", encoding="utf-8") as f:
      for line in lines:
        f.write(f"{line.line_id}\t{line.source}\t{line.text}\n")


def read_splits(out_dir):
  d = pathlib.Path(out_dir) / "splits"
  out = {}
  for name in SPLITS:
    path = d / f"{name}.txt"
    if not path.exists():
      if name == "train":
        raise DatagenError(f"{path} is missing; run `datagen split --out {out_dir}` first")
      continue
    lines = []
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
      parts = raw.split("\t")
      if len(parts) != 3 or not parts[0].isdigit() or not parts[2]:
        raise DatagenError(f"{path}:{n}: expected 'line_id<TAB>source<TAB>text', got {raw!r}")
      lines.append(Line(int(parts[0]), parts[1], parts[2]))
    out[name] = lines
  return out


def check_split(splits) -> None:
  """No held-out text in training, and every held-out character occurs in training text."""
  train_texts = {l.text for l in splits["train"]}
  train_chars = {c for t in train_texts for c in t}
  for s in ("validation", "test"):
    for line in splits.get(s, []):
      if line.text in train_texts:
        raise DatagenError(f"{s} line {line.line_id} {line.text!r} is also a training line")
      unseen = [c for c in line.text if c not in train_chars]
      if unseen:
        raise DatagenError(f"{s} line {line.line_id} {line.text!r}: {''.join(unseen)!r} never "
                           "occurs in training text")
