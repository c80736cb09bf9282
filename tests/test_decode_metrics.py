"""Greedy CTC decoding and the metrics, on fixed inputs with known answers."""
import numpy as np
import pytest

from crnn_jax.charset import Charset
from crnn_jax.decode import collapse, greedy_batch
from crnn_jax.metrics import Accumulator, edit_distance, misread_chars


def test_repeats_collapse_and_blanks_go():
  assert collapse([0, 3, 3, 3, 0, 0, 5, 5]) == [3, 5]
  assert collapse([3, 3, 3]) == [3]


def test_doubled_character_separated_by_a_blank_survives():
  # 洋洋 (606 corpus lines double a character): a blank between the runs keeps both.
  assert collapse([7, 7, 0, 7]) == [7, 7]
  assert collapse([0, 7, 0, 7, 0]) == [7, 7]


def test_only_valid_frames_are_read():
  assert collapse([3, 0, 4, 9, 9], length=3) == [3, 4]


def test_greedy_batch_maps_classes_to_text():
  cs = Charset(list("洋其喜者"))  # class = index + 1
  best = np.array([[2, 0, 3, 1, 0, 1, 4, 4], [1, 1, 1, 0, 0, 0, 0, 0]])
  assert greedy_batch(best, np.array([8, 2]), cs) == ["其喜洋洋者", "洋"]


@pytest.mark.parametrize("a,b,d", [("", "", 0), ("abc", "", 3), ("", "ab", 2), ("kitten", "sitting", 3),
                                   ("一日难再晨", "一日难再晨", 0), ("一日难再晨", "一日再晨", 1),
                                   ("一日难再晨", "日一难再晨", 2)])
def test_edit_distance(a, b, d):
  assert edit_distance(a, b) == d == edit_distance(b, a)


def test_golden_metrics():
  acc = Accumulator()
  acc.add(["一日难再晨", "更上一层楼", "洋洋", "民以食为天"],
          ["一日难再晨", "更上层楼", "洋", "民以食为天下"],
          ["kai", "song", "kai", "hei"])
  r = acc.result()
  assert r["n"] == 4
  assert r["seq_acc"] == pytest.approx(1 / 4)
  assert r["cer"] == pytest.approx((0 + 1 + 1 + 1) / (5 + 5 + 2 + 5))
  assert r["one_minus_ned"] == pytest.approx(np.mean([1, 1 - 1 / 5, 1 - 1 / 2, 1 - 1 / 6]))
  assert r["by_font"]["kai"]["n"] == 2 and r["by_font"]["kai"]["seq_acc"] == pytest.approx(0.5)
  assert r["by_font"]["kai"]["cer"] == pytest.approx(1 / 7)
  assert r["by_length"]["5"]["n"] == 3 and r["by_length"]["2"]["seq_acc"] == 0.0
  assert acc.worst(2) == [2, 1]  # largest edit distance per reference character first


def test_misreads_by_training_count_of_the_character():
  acc = Accumulator()
  acc.add(["赢家", "天地", "天"], ["羸家", "天地", ""])  # 赢 substituted, 天 deleted
  counts = {"赢": 3, "家": 500, "天": 30, "地": 120}
  got = acc.by_train_count(counts)
  assert got == {"0-24": {"chars": 1, "misread": 1, "rate": 1.0},
                 "25-49": {"chars": 2, "misread": 1, "rate": 0.5},
                 "100-299": {"chars": 1, "misread": 0, "rate": 0.0},
                 "300+": {"chars": 1, "misread": 0, "rate": 0.0}}
  assert misread_chars("赢家天", "羸家") == "赢天" and misread_chars("天地", "天天地") == ""  # an insertion misreads nothing


def test_test_accuracy_by_checkpoint_plot(tmp_path):
  """bench/report_run.py's second picture: every eval_test_step<N>.json (and eval_test.json's own
  step) placed at its training minutes from train_time.json; steps without a time are left out."""
  import json
  from crnn_jax.report_plot import plot_test_by_step
  (tmp_path / "train_time.json").write_text(json.dumps(
      {"seconds_at_step": {"1000": 60.0, "2000": 130.0, "3000": 200.0}, "stopped_by_time_budget_at": None}))
  for step, acc in ((1000, 0.5), (2000, 0.8), (5000, 0.9)):
    (tmp_path / f"eval_test_step{step}.json").write_text(json.dumps(
        {"checkpoint_step": step, "seq_acc": acc, "greedy": {"seq_acc": acc - 0.1}}))
  out = tmp_path / "t.png"
  assert plot_test_by_step(str(tmp_path), str(out)) == 2  # step 5000 has no time
  (tmp_path / "eval_test.json").write_text(json.dumps({"checkpoint_step": 3000, "seq_acc": 0.95}))
  assert plot_test_by_step(str(tmp_path), str(out)) == 3 and out.stat().st_size > 1000
  assert plot_test_by_step(str(tmp_path / "nothing"), str(tmp_path / "u.png")) == 0
  assert not (tmp_path / "u.png").exists()
