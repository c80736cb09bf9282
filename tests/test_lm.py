"""The character n-gram LM and CTC prefix beam search (crnn_jax/lm.py, crnn_jax/decode.py)."""
import math

import numpy as np
import pytest

from crnn_jax import decode, lm as lm_lib
from crnn_jax.charset import Charset
from crnn_jax.errors import UserError
from crnn_jax.lm import BOS, EOS, CharNgramLM

LINES = ["日暮苍山远", "天寒白屋贫", "柴门闻犬吠", "风雪夜归人", "日暮东风怨啼鸟", "明月松间照"]


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_lm_is_a_distribution_in_every_context(order):
  chars = sorted(set("".join(LINES)) | set("幕羸"))  # two characters the lines never hold
  vocab = chars + [EOS]
  lm = CharNgramLM.from_lines(LINES, order=order, vocab_size=len(vocab))
  for ctx in [BOS, BOS + "日", "日暮", "暮苍", "幕羸", "门闻犬", ""]:
    total = sum(math.exp(lm.logp(ctx, c)) for c in vocab)
    assert total == pytest.approx(1.0, abs=1e-9), (order, ctx)


def test_lm_prefers_what_the_training_lines_hold():
  lm = CharNgramLM.from_lines(LINES, order=3, vocab_size=4000)
  assert lm.logp(BOS + "日", "暮") > lm.logp(BOS + "日", "幕") + 3
  assert lm.logp("日暮", "苍") > lm.logp("日暮", "东") - 1  # both seen after 日暮
  assert lm.score("日暮苍山远") > lm.score("日幕苍山远") + 3
  assert lm.logp("山远", EOS) > lm.logp("山远", "山")  # lines end after 山远
  unseen = lm.logp(BOS, "羸")
  assert math.isfinite(unseen) and unseen < lm.logp(BOS, "日")


def test_lm_save_load_roundtrip(tmp_path):
  lm = CharNgramLM.from_lines(LINES, order=4, vocab_size=100)
  lm.save(str(tmp_path / "lm.json"))
  back = CharNgramLM.load(str(tmp_path / "lm.json"))
  for ctx, c in [(BOS, "日"), ("日暮苍", "山"), ("xyz", "日"), ("山远", EOS)]:
    assert back.logp(ctx, c) == lm.logp(ctx, c)
  (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
  with pytest.raises(UserError, match="bad.json"):
    CharNgramLM.load(str(tmp_path / "bad.json"))


def test_training_lines_are_the_corpus_rows_only(tmp_path):
  (tmp_path / "splits").mkdir()
  (tmp_path / "splits" / "train.txt").write_text(
      "0\tcorpus\t日暮苍山远\n1\tbalance\t远山苍暮日\n2\tcorpus\t天寒白屋贫\n", encoding="utf-8")
  assert lm_lib.training_lines(str(tmp_path)) == ["日暮苍山远", "天寒白屋贫"]
  (tmp_path / "splits" / "train.txt").write_text("0\tcorpus\t日暮\n1 corpus 天寒\n", encoding="utf-8")
  with pytest.raises(UserError, match=r"train.txt:2"):
    lm_lib.training_lines(str(tmp_path))
  with pytest.raises(UserError, match="datagen build"):
    lm_lib.training_lines(str(tmp_path / "nowhere"))


def _frames(charset, rows):
  """rows: per frame {char or '' (blank): prob} -> top-K log-probs, classes, blank log-probs."""
  k = max(len(r) for r in rows)
  top_lp = np.full((len(rows), k), -1e9, np.float32)
  top_ids = np.zeros((len(rows), k), np.int32)
  blank = np.full((len(rows),), -1e9, np.float32)
  for t, r in enumerate(rows):
    rest = 1.0 - sum(r.values())
    for j, (c, p) in enumerate(sorted(r.items(), key=lambda kv: -kv[1])):
      top_lp[t, j] = math.log(p)
      top_ids[t, j] = 0 if c == "" else charset.classes(c)[0]
      if c == "":
        blank[t] = math.log(p)
    assert rest > -1e-6
  return top_lp, top_ids, blank


CS = Charset(sorted(set("".join(LINES)) | set("幕羸赢")))


def test_beam_without_lm_matches_greedy_on_a_clear_line():
  rows = [{"日": 0.9, "": 0.1}, {"": 0.95, "日": 0.05}, {"暮": 0.8, "幕": 0.15, "": 0.05}, {"": 0.99}]
  top_lp, top_ids, blank = _frames(CS, rows)
  greedy = CS.text(decode.collapse(top_ids[:, 0]))
  assert greedy == "日暮"
  assert decode.beam_search(top_lp, top_ids, blank, len(rows), CS) == "日暮"


def test_prefix_search_sums_the_paths_of_a_text():
  """Best path: blank, blank ('' at 0.36); the text '日' has paths 日日, 日-, -日: 0.16+0.24+0.24."""
  rows = [{"": 0.6, "日": 0.4}, {"": 0.6, "日": 0.4}]
  top_lp, top_ids, blank = _frames(CS, rows)
  assert CS.text(decode.collapse(top_ids[:, 0])) == ""
  assert decode.beam_search(top_lp, top_ids, blank, 2, CS) == "日"


def test_beam_collapses_repeats_and_keeps_a_doubled_character():
  sure = lambda c: {c: 0.98, "": 0.02} if c else {"": 0.98, "日": 0.02}
  for frames, want in [("日日", "日"), ("日 日", "日日"), ("日日 日", "日日"), ("日暮", "日暮")]:
    rows = [sure(c.strip()) for c in frames]
    top_lp, top_ids, blank = _frames(CS, rows)
    assert decode.beam_search(top_lp, top_ids, blank, len(rows), CS) == want, frames
  # `length` cuts the padding frames off
  rows = [sure("日"), sure(""), sure("暮"), sure("暮")]
  top_lp, top_ids, blank = _frames(CS, rows)
  assert decode.beam_search(top_lp, top_ids, blank, 2, CS) == "日"


def test_lm_fixes_a_confusion_the_image_leaves_open():
  """The image slightly prefers 幕 after 日; the LM of lines holding 日暮 picks 暮."""
  lm = CharNgramLM.from_lines(LINES, order=3, vocab_size=CS.num_classes)
  rows = [{"日": 0.95, "": 0.05}, {"": 0.95, "日": 0.05}, {"幕": 0.5, "暮": 0.45, "": 0.05}, {"": 0.95, "幕": 0.05},
          {"苍": 0.9, "": 0.1}, {"山": 0.9, "": 0.1}, {"": 0.9, "山": 0.1}, {"远": 0.9, "": 0.1}]
  top_lp, top_ids, blank = _frames(CS, rows)
  assert CS.text(decode.collapse(top_ids[:, 0])) == "日幕苍山远"
  assert decode.beam_search(top_lp, top_ids, blank, len(rows), CS) == "日幕苍山远"
  assert decode.beam_search(top_lp, top_ids, blank, len(rows), CS, lm=lm, lm_weight=0.5) == "日暮苍山远"
  # A clear image is not overruled by a weak LM: 羸 never occurs in the lines.
  rows[2] = {"羸": 0.97, "": 0.03}
  top_lp, top_ids, blank = _frames(CS, rows)
  assert decode.beam_search(top_lp, top_ids, blank, len(rows), CS, lm=lm, lm_weight=0.3) == "日羸苍山远"


def test_settings_merge_and_refuse_bad_values():
  import ml_collections
  old = ml_collections.ConfigDict({"train": {}})  # a workdir from before config.decode
  assert decode.settings(old) == decode.DEFAULTS
  c = ml_collections.ConfigDict({"decode": dict(decode.DEFAULTS, decoder="beam", lm_weight=0.3)})
  s = decode.settings(c, {"lm_weight": None, "beam": 4})
  assert s["decoder"] == "beam" and s["lm_weight"] == 0.3 and s["beam"] == 4
  with pytest.raises(UserError, match="beam"):
    decode.settings(c, {"beam": 0})
  with pytest.raises(UserError, match="'viterbi'"):
    decode.settings(c, {"decoder": "viterbi"})


def test_config_defaults_are_the_decoders_defaults():
  """configs/common.py's decode section and decode.DEFAULTS (used for older workdirs) agree."""
  from configs.common import base_config
  assert dict(base_config().decode) == decode.DEFAULTS


def test_decoding_for_builds_the_lm_once_and_names_the_way_out(tmp_path):
  import ml_collections
  data = tmp_path / "data"
  (data / "splits").mkdir(parents=True)
  (data / "splits" / "train.txt").write_text("".join(f"{i}\tcorpus\t{t}\n" for i, t in enumerate(LINES)),
                                             encoding="utf-8")
  wd = tmp_path / "wd"
  wd.mkdir()
  c = ml_collections.ConfigDict({"data_dir": str(data), "decode": dict(decode.DEFAULTS, decoder="beam", lm_weight=0.3)})
  assert decode.decoding_for(c, str(wd), str(data), CS, {"decoder": "greedy"}) is None
  kw = decode.decoding_for(c, str(wd), str(data), CS)
  assert kw["lm"].order == 3 and kw["lm_weight"] == 0.3 and (wd / "lm3.json").exists()
  assert decode.decoding_for(c, str(wd), str(data), CS, {"lm_weight": 0.0})["lm"] is None
  # the saved LM serves later calls without the data; another order needs the data again
  kw2 = decode.decoding_for(c, str(wd), str(tmp_path / "gone"), CS)
  assert kw2["lm"].logp(BOS + "日", "暮") == kw["lm"].logp(BOS + "日", "暮")
  with pytest.raises(UserError, match="--decoder greedy"):
    decode.decoding_for(c, str(wd), str(tmp_path / "gone"), CS, {"lm_order": 4})
