"""bench/balance_model.py: the power-law fit and the budget comparison behind `--balance-power`."""
import importlib.util
import pathlib

import numpy as np

_spec = importlib.util.spec_from_file_location(
    "balance_model", pathlib.Path(__file__).resolve().parents[1] / "bench" / "balance_model.py")
balance_model = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(balance_model)


def test_fit_recovers_the_exponent_of_simulated_misreads():
  rng = np.random.default_rng(0)
  counts = {chr(0x4E00 + i): int(n) for i, n in enumerate(rng.integers(10, 2000, size=3000))}
  tot = {c: 200 for c in counts}
  bad = {c: int(rng.poisson(200 * 3.0 * n ** -1.3)) for c, n in counts.items()}
  a, k = balance_model.fit_power(counts, tot, bad)
  assert abs(k - 1.3) < 0.05 and 2.0 < a < 4.5


def test_times_seen_as_corpus_count_to_one_over_one_plus_k_beats_flatter_and_steeper():
  c = np.arange(1, 400, dtype=float)          # how often the test reads each character
  base = c.copy()                             # training text in proportion to it
  k = 1.2
  rel = {e: balance_model.relative_errors(c ** e, base, c, k) for e in (0.0, 0.3, 1 / (1 + k), 0.7, 1.0)}
  assert rel[1.0] == 1.0
  assert min(rel, key=rel.get) == 1 / (1 + k)
  assert rel[1 / (1 + k)] < rel[0.3] < rel[0.0] and rel[1 / (1 + k)] < rel[0.7] < rel[1.0]
