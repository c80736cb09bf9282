import collections

from datagen import corpus as corpus_lib
from datagen import split as split_lib


def _full():
  return list(corpus_lib.read_corpus().lines)


def test_no_leakage_and_full_character_coverage_on_the_real_corpus():
  texts = _full()
  splits = split_lib.split_lines(texts, seed=0, validation_fraction=0.05, test_fraction=0.05)
  ids = {s: {l.line_id for l in v} for s, v in splits.items()}
  assert not ids["train"] & ids["validation"] and not ids["train"] & ids["test"]
  assert not ids["validation"] & ids["test"]
  assert sum(len(v) for v in ids.values()) == len(texts)
  assert len(ids["test"]) == len(ids["validation"]) == round(len(texts) * 0.05)
  train_chars = {c for l in splits["train"] for c in l.text}
  for s in ("validation", "test"):
    assert all(set(l.text) <= train_chars for l in splits[s])
  split_lib.check_split(splits)  # the same invariants as the library checks them


def test_split_is_seeded():
  texts = _full()[:2000]
  a = split_lib.split_lines(texts, 3, 0.1, 0.1)
  b = split_lib.split_lines(texts, 3, 0.1, 0.1)
  c = split_lib.split_lines(texts, 4, 0.1, 0.1)
  assert a == b and a["test"] != c["test"]


def test_balance_lines_reach_the_minimum_and_never_copy_held_out_text():
  texts = _full()
  splits = split_lib.split_lines(texts, 0, 0.05, 0.05)
  held = [l.text for s in ("validation", "test") for l in splits[s]]
  extra = split_lib.balance_lines(splits["train"], held, min_char_count=10, seed=0, first_id=len(texts))
  counts = collections.Counter(c for l in splits["train"] + extra for c in l.text)
  assert min(counts.values()) >= 10
  assert all(l.source == "balance" for l in extra)
  assert all(5 <= len(l.text) <= 7 for l in extra[:-1])  # the last takes what is left
  assert not {l.text for l in extra} & set(held)
  assert [l.line_id for l in extra] == list(range(len(texts), len(texts) + len(extra)))
  # Rare characters gain, common ones do not: the pool holds only deficits.
  before = collections.Counter(c for l in splits["train"] for c in l.text)
  assert sum(max(0, 10 - v) for v in before.values()) == sum(len(l.text) for l in extra)


def test_balance_target_power_zero_is_the_floor_and_power_grows_with_the_corpus_count():
  assert [split_lib.balance_target(n, 40) for n in (0, 1, 39, 40, 41, 500)] == [40, 40, 40, 40, 41, 500]
  # ceil(15 * n ** 0.5): 15, 30 (n=4), 150 (n=100); a count above its target is kept as it is.
  assert [split_lib.balance_target(n, 15, 0.5) for n in (1, 4, 100, 300)] == [15, 30, 150, 300]
  try:
    split_lib.balance_target(3, 15, -0.5)
  except ValueError as e:
    assert "-0.5" in str(e)
  else:
    raise AssertionError("a negative power was accepted")


def test_power_balance_gives_mid_frequency_characters_what_the_floor_gives_the_rarest():
  texts = _full()
  splits = split_lib.split_lines(texts, 0, 0.05, 0.05)
  held = [l.text for s in ("validation", "test") for l in splits[s]]
  before = collections.Counter(c for l in splits["train"] for c in l.text)
  floor = split_lib.balance_lines(splits["train"], held, 40, seed=0, first_id=len(texts))
  power = split_lib.balance_lines(splits["train"], held, 15, seed=0, first_id=len(texts), power=0.5)
  assert split_lib.balance_lines(splits["train"], held, 40, seed=0, first_id=len(texts), power=0.0) == floor
  after = collections.Counter(c for l in splits["train"] + power for c in l.text)
  assert all(after[c] == split_lib.balance_target(n, 15, 0.5) for c, n in before.items())
  assert not {l.text for l in power} & set(held)
  # About the same training text either way (the default budget), spent differently: a character
  # seen once in the corpus gets 15 instead of 40, one seen 25 times 75 instead of 40.
  n_floor = sum(len(l.text) for l in floor)
  n_power = sum(len(l.text) for l in power)
  assert abs(n_power / n_floor - 1) < 0.05
  once = next(c for c, n in before.items() if n == 1)
  mid = next(c for c, n in before.items() if n == 25)
  assert after[once] == 15 and after[mid] == 75
