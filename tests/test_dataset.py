"""End-to-end: `datagen build` on a small corpus, read back through tfds."""
import collections
import io
import json
import re
import types

import numpy as np
import pytest
from PIL import Image

from datagen import build, cli, fonts as fonts_lib, records, render, split as split_lib
from datagen.charset import Charset
from datagen.errors import DatagenError

from conftest import FAST, build as build_data, small_corpus_lines, write_corpus


def _records(data_dir, split):
  import tensorflow_datasets as tfds
  b = tfds.builder_from_directory(str(data_dir))
  ds = b.as_dataset(split=split, shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()})
  return list(tfds.as_numpy(ds))


def test_layout_and_tfds_metadata(small_data):
  import tensorflow_datasets as tfds
  b = tfds.builder_from_directory(str(small_data))
  meta = json.loads((small_data / "meta.json").read_text(encoding="utf-8"))
  for split in ("train", "validation", "test"):
    info = b.info.splits[split]
    assert info.num_shards % 8 == 0
    assert info.num_examples == meta["counts"][split]["images"] == sum(info.shard_lengths)
  assert (small_data / "preview.png").exists() and Image.open(small_data / "preview.png").width > 100
  for name in ("chinese.txt", "char_dict/char_dict.json", "char_dict/ord_2_index_map.json",
               "char_dict/index_2_ord_map.json", "splits/train.txt", "dataset_info.json"):
    assert (small_data / name).exists(), name
  assert meta["corpus"]["sha256"] and all(len(f["sha256"]) == 64 for f in meta["fonts"])
  assert {"numpy", "pillow", "tensorflow"} <= set(meta["versions"])
  assert meta["counts"]["train"]["sources"]["balance"] > 0


def test_records_hold_rendered_bytes_text_and_labels(small_data):
  cs = Charset.read(small_data)
  meta = json.loads((small_data / "meta.json").read_text(encoding="utf-8"))
  fonts = {f.name: f for f in fonts_lib.default_fonts()}
  knobs = render.RenderConfig(**meta["render"])
  build._init_worker(list(fonts.values()), knobs, meta["seed"], 32, 0.25)
  names = list(fonts)
  checked = 0
  examples = [("train", e) for e in _records(small_data, "train")[:10]]
  examples += [("test", e) for e in _records(small_data, "test")]
  for split, ex in examples:
    text = ex["text"].decode()
    assert cs.decode(ex["label"]) == text
    # Render the same job again in this process: the stored bytes are exactly what it makes.
    job = build.Job(split, int(ex["line_id"]), ex["source"].decode(), text, int(ex["variant"]), names.index(ex["font"].decode()))
    jpeg, h, w = build._render_job(job)
    assert jpeg == ex["image"]
    # ... and the pixels read back are exactly the pixels of the renderer's JPEG.
    import tensorflow as tf
    via_tf = tf.io.decode_jpeg(ex["image"], channels=1, dct_method=records.JPEG_DCT_METHOD).numpy()[..., 0]
    via_pil = np.asarray(Image.open(io.BytesIO(jpeg)))
    assert via_tf.shape == (h, w) == via_pil.shape
    assert np.array_equal(via_tf, via_pil)
    checked += 1
  assert checked == len(examples) >= 11


def test_decoded_through_tfds_features(small_data):
  import tensorflow_datasets as tfds
  b = tfds.builder_from_directory(str(small_data))
  ex = next(iter(tfds.as_numpy(b.as_dataset(split="validation").take(1))))
  assert ex["image"].dtype == np.uint8 and ex["image"].ndim == 3 and ex["image"].shape[-1] == 1
  assert isinstance(ex["text"], bytes) and ex["label"].dtype == np.int64


def test_no_image_of_a_held_out_line_in_training(small_data):
  train = _records(small_data, "train")
  held = _records(small_data, "validation") + _records(small_data, "test")
  train_ids = {int(e["line_id"]) for e in train}
  train_texts = {e["text"] for e in train}
  assert not train_ids & {int(e["line_id"]) for e in held}
  assert not train_texts & {e["text"] for e in held}
  train_chars = {c for t in train_texts for c in t.decode()}
  assert all(set(e["text"].decode()) <= train_chars for e in held)
  splits = split_lib.read_splits(small_data)
  assert {l.line_id for l in splits["train"]} == train_ids  # every training line was rendered


def test_holdout_font_only_in_validation_and_test(small_data):
  holdout = set(fonts_lib.DEFAULT_HOLDOUT)
  assert len(holdout) == 3
  train_fonts = {e["font"].decode() for e in _records(small_data, "train")}
  eval_fonts = {e["font"].decode() for e in _records(small_data, "test") + _records(small_data, "validation")}
  assert not holdout & train_fonts
  assert len(train_fonts) == 13  # every training font draws training lines
  assert holdout & eval_fonts  # with 2 eval variants of 16 fonts per line, some held-out ones appear


def test_a_font_is_never_used_for_a_line_it_cannot_draw(small_data):
  meta = json.loads((small_data / "meta.json").read_text(encoding="utf-8"))
  cov = {f.name: fonts_lib.coverage(f, Charset.read(small_data).chars) for f in fonts_lib.default_fonts()}
  n_rare = 0
  for split in ("train", "validation", "test"):
    for e in _records(small_data, split):
      text = e["text"].decode()
      assert set(text) <= cov[e["font"].decode()], (text, e["font"])
      n_rare += bool(set(text) - cov["gbsn00lp-subset"])
  assert n_rare > 0  # the corpus has lines the Arphic fonts cannot draw ...
  assert meta["skips"]["font_lacks_glyph"]["train"]["gbsn00lp-subset"] > 0  # ... and they are counted


def test_a_cut_down_font_is_skipped_for_lines_it_lacks(tmp_path, small_corpus):
  # A real font file that lacks half of the corpus characters.
  from fontTools import subset
  from fontTools.ttLib import TTFont
  texts = small_corpus_lines()
  keep = {c for t in texts[: len(texts) // 2] for c in t}
  src = fonts_lib.default_fonts()[0]
  tt = TTFont(src.path)
  s = subset.Subsetter()
  s.populate(unicodes=[ord(c) for c in keep])
  s.subset(tt)
  cut = tmp_path / "cut.otf"
  tt.save(str(cut))
  out = build_data(tmp_path / "d", small_corpus, "--fonts", src.path, str(cut), "--workers", "1")
  meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
  assert meta["skips"]["font_lacks_glyph"]["train"]["cut"] > 0
  used = [e for s in ("train", "test") for e in _records(out, s) if e["font"] == b"cut"]
  assert used and all(set(e["text"].decode()) <= keep for e in used)


def test_byte_identical_whatever_the_worker_count(tmp_path, small_corpus, small_data):
  # Built by another Python process (1 worker) than small_data (this process, 2 workers): protobuf's
  # per-process map order once made every build's shard bytes differ.
  import subprocess
  import sys
  one = tmp_path / "one"
  out = subprocess.run([sys.executable, "-m", "datagen", "build", "--out", str(one), "--corpus", str(small_corpus),
                        "--min-char-count", "3", "--balance-power", "0", "--validation-fraction", "0.15",
                        "--test-fraction", "0.15", *FAST, "--workers", "1"],
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  names = sorted(p.name for p in small_data.glob(f"{records.DATASET_NAME}-*"))
  assert names == sorted(p.name for p in one.glob(f"{records.DATASET_NAME}-*")) and names
  for n in names:
    assert (one / n).read_bytes() == (small_data / n).read_bytes(), n


def test_infeasible_labels_are_rejected_and_counted(tmp_path, small_corpus):
  # 0.06 frames per pixel: a 32-px-high line of 5 characters gives ~2 frames per character
  # or less, so many labels cannot be carried through the network.
  out = build_data(tmp_path / "d", small_corpus, "--frames-per-pixel", "0.06", "--workers", "1")
  meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
  rejected = sum(meta["skips"]["infeasible_label"].values())
  assert rejected > 0
  kept = 0
  for split in ("train", "validation", "test"):
    for e in _records(out, split):
      im = Image.open(io.BytesIO(e["image"]))
      assert render.frames_available(im.height, im.width, 32, 0.06) >= render.frames_needed(e["text"].decode())
      kept += 1
  planned = sum(c["images"] for c in meta["counts"].values()) + rejected
  assert kept == planned - rejected


def test_frames_needed_counts_repeats():
  assert render.frames_needed("一日难再晨") == 5
  assert render.frames_needed("洋洋") == 3          # a blank must separate the doubled character
  assert render.frames_needed("声声声") == 5
  assert render.frames_available(32, 100, 32, 0.25) == 25


def test_same_settings_again_is_a_no_op_and_other_settings_are_refused(tmp_path, small_corpus, capsys):
  out = build_data(tmp_path / "d", small_corpus, "--workers", "1")
  before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
  assert cli.main(["build", "--out", str(out), "--corpus", str(small_corpus), "--min-char-count", "3",
                   "--balance-power", "0", "--validation-fraction", "0.15", "--test-fraction", "0.15", *FAST,
                   "--workers", "1"]) == 0
  assert "nothing to do" in capsys.readouterr().err
  assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
  code = cli.main(["build", "--out", str(out), "--corpus", str(small_corpus), "--seed", "7", *FAST])
  err = capsys.readouterr().err
  assert code == 2 and "other settings" in err and "seed" in err and "--overwrite" in err
  # The tests' small sets keep the floor (power 0, a fingerprint without the key, like datasets built
  # before the knob); the default power, 0.5, is another dataset.
  args = ["build", "--out", str(out), "--corpus", str(small_corpus), "--min-char-count", "3",
          "--validation-fraction", "0.15", "--test-fraction", "0.15", *FAST, "--workers", "1"]
  assert "balance_power" not in json.loads((out / "meta.json").read_text())["build_args"]
  assert cli.main(args) == 2
  err = capsys.readouterr().err
  assert "other settings" in err and "balance_power" in err and "min_char_count" not in err
  assert cli.main(args + ["--balance-power", "-1", "--overwrite"]) == 2
  assert "argument --balance-power: '-1': want a finite number in [0.0, 4.0]" in capsys.readouterr().err
  assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # refused before --overwrite


def test_write_images_then_import_gives_the_same_dataset(tmp_path, small_corpus, capsys):
  src = build_data(tmp_path / "orig", small_corpus, "--write-images", "--workers", "1")
  lines = (src / "Train" / "sample.txt").read_text(encoding="utf-8").splitlines()
  assert lines and all(l.startswith("pic/") and l.split(" ")[0].endswith(".jpg") for l in lines)
  assert (src / lines[0].split(" ")[0]).exists()
  out = tmp_path / "imported"
  assert cli.main(["import", "--src", str(src), "--out", str(out)]) == 0
  for split in ("train", "validation", "test"):
    a = sorted((e["text"], e["image"]) for e in _records(src, split))
    b = sorted((e["text"], e["image"]) for e in _records(out, split))
    assert a == b  # same texts, same JPEG bytes (grayscale JPEGs are kept as they are)
  assert Charset.read(out) == Charset.read(src)


def _plan(weights, variants=10, n_lines=400):
  Line = collections.namedtuple("Line", "line_id source text")
  fonts = [types.SimpleNamespace(name=n) for n in ("a", "b", "c", "d")]
  lines = [Line(i, "corpus", "字") for i in range(n_lines)]
  coverage = [{"字"}] * 4
  jobs, _, _ = build.plan_split("train", lines, fonts, coverage, [0, 1, 2, 3], variants, 0, weights)
  return jobs


def test_font_weights_share_out_each_lines_variants():
  base = _plan(None)
  per_font = collections.Counter(j.font for j in base)
  assert all(abs(n - 1000) < 60 for n in per_font.values()), per_font  # no weights: variants cycle
  assert _plan({}) == base  # an empty weighting is the same plan (datasets built before it match)
  jobs = _plan({2: 1.6, 3: 1.6})
  assert len(jobs) == len(base) and sorted((j.line_id, j.variant) for j in jobs) == sorted(
      (j.line_id, j.variant) for j in base)
  share = collections.Counter(j.font for j in jobs)
  # 10 variants in proportion 1 : 1 : 1.6 : 1.6 -> 1.92, 1.92, 3.08, 3.08 per line.
  for f, expect in ((0, 1.923), (1, 1.923), (2, 3.077), (3, 3.077)):
    assert abs(share[f] / 400 - expect) < 0.06, (f, share[f])
  by_line = collections.defaultdict(collections.Counter)
  for j in jobs:
    by_line[j.line_id][j.font] += 1
  for counts in by_line.values():  # every line gets its share within one variant
    assert counts[0] in (1, 2, 3) and counts[2] in (2, 3, 4), counts
  assert _plan({2: 1.6, 3: 1.6}) == jobs  # seeded


def test_font_weights_on_the_command_line(tmp_path, small_corpus):
  out = build_data(tmp_path / "w", small_corpus, "--font-weights", "gkai00mp-subset=3")
  meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
  assert meta["font_weights"] == {"gkai00mp-subset": 3.0}
  fonts = collections.Counter(e["font"].decode() for e in _records(out, "train"))
  assert fonts["gkai00mp-subset"] > max(n for f, n in fonts.items() if f != "gkai00mp-subset")
  for bad, says in ((["nosuchfont=2"], "no font is called 'nosuchfont'"),
                    (["gkai00mp-subset=0"], "must be a positive number"),
                    (["gkai00mp-subset"], "expected NAME=WEIGHT"),
                    ([f"{fonts_lib.DEFAULT_HOLDOUT[0]}=2"], "holdout")):
    with pytest.raises(DatagenError, match=re.escape(says)):
      cli.run(["build", "--out", str(tmp_path / "bad"), "--corpus", str(small_corpus), *FAST,
                "--font-weights", *bad])
