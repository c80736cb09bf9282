"""Every bad input gets one clear line naming the file, line or value and what to do."""
import json
import shutil

import pytest

from datagen import cli, fonts as fonts_lib

from conftest import FAST, small_corpus_lines, write_corpus


def run(capsys, *argv):
  code = cli.main(list(argv))
  err = capsys.readouterr().err
  return code, err


@pytest.fixture
def tiny_corpus(tmp_path):
  return write_corpus(tmp_path / "c.txt", small_corpus_lines(20))


def _build(tmp_path, corpus, *extra):
  return ["build", "--out", str(tmp_path / "out"), "--corpus", str(corpus), *FAST, "--workers", "1",
          "--validation-fraction", "0.1", "--test-fraction", "0.1", *extra]


def _assert_one_line(code, err, *needles):
  assert code == 2
  lines = [l for l in err.splitlines() if l.startswith("datagen: error:")]
  assert len(lines) == 1 and "Traceback" not in err, err
  for n in needles:
    assert n in lines[0], (n, lines[0])


def test_missing_font(tmp_path, tiny_corpus, capsys):
  code, err = run(capsys, *_build(tmp_path, tiny_corpus, "--fonts", str(tmp_path / "nope.ttf")))
  _assert_one_line(code, err, "nope.ttf", "does not exist")


def test_unreadable_font(tmp_path, tiny_corpus, capsys):
  bad = tmp_path / "broken.ttf"
  bad.write_bytes(b"this is not a font" * 100)
  code, err = run(capsys, *_build(tmp_path, tiny_corpus, "--fonts", str(bad)))
  _assert_one_line(code, err, "broken.ttf", "leave it out of --fonts")


def test_font_lacking_characters_for_every_line(tmp_path, tiny_corpus, capsys):
  from fontTools import subset
  from fontTools.ttLib import TTFont
  tt = TTFont(fonts_lib.default_fonts()[0].path)
  s = subset.Subsetter()
  s.populate(unicodes=range(0x20, 0x7F))  # Latin only
  s.subset(tt)
  latin = tmp_path / "latin.otf"
  tt.save(str(latin))
  code, err = run(capsys, *_build(tmp_path, tiny_corpus, "--fonts", fonts_lib.default_fonts()[0].path, str(latin)))
  _assert_one_line(code, err, "latin.otf", "lacks characters for every line")


def test_corpus_line_without_tab(tmp_path, capsys):
  c = tmp_path / "c.txt"
  c.write_text("更上一层楼\t10\n民以食为天\n", encoding="utf-8")
  code, err = run(capsys, *_build(tmp_path, c))
  _assert_one_line(code, err, "c.txt:2", "'民以食为天'", "no tab")


def test_empty_corpus(tmp_path, capsys):
  c = tmp_path / "empty.txt"
  c.write_text("\n\n", encoding="utf-8")
  code, err = run(capsys, *_build(tmp_path, c))
  _assert_one_line(code, err, "empty.txt", "empty")


def test_missing_corpus(tmp_path, capsys):
  code, err = run(capsys, *_build(tmp_path, tmp_path / "none.txt"))
  _assert_one_line(code, err, "none.txt", "--corpus")


def _original_layout(tmp_path, small_data):
  """A user's folder in the original example's layout, made from rendered images."""
  src = tmp_path / "orig"
  (src / "Train").mkdir(parents=True)
  (src / "Test").mkdir()
  (src / "pic").mkdir()
  shutil.copy(small_data / "chinese.txt", src / "chinese.txt")
  import tensorflow_datasets as tfds
  b = tfds.builder_from_directory(str(small_data))
  ds = b.as_dataset(split="train", decoders={"image": tfds.decode.SkipDecoding()}).take(6)
  rows = []
  for i, ex in enumerate(tfds.as_numpy(ds)):
    (src / "pic" / f"{i}.jpg").write_bytes(ex["image"])
    rows.append(f"pic/{i}.jpg {ex['text'].decode()}")
  (src / "Train" / "sample.txt").write_text("\n".join(rows[:4]) + "\n", encoding="utf-8")
  (src / "Test" / "sample.txt").write_text("\n".join(rows[4:]) + "\n", encoding="utf-8")
  return src


def test_import_keeps_sample_txt_paths_inside_src(tmp_path, small_data, capsys):
  """`..`, an absolute path and a link that leave --src are refused, naming the line, unless
  --allow-outside-src."""
  src = _original_layout(tmp_path, small_data)
  outside = tmp_path / "elsewhere.jpg"
  shutil.copy(src / "pic" / "0.jpg", outside)
  (src / "pic" / "link.jpg").symlink_to(outside)
  train = (src / "Train" / "sample.txt").read_text(encoding="utf-8").splitlines()
  label = train[0].split(maxsplit=1)[1]
  for bad in ("../elsewhere.jpg", str(outside), "pic/link.jpg"):
    (src / "Train" / "sample.txt").write_text("\n".join(train + [f"{bad} {label}"]) + "\n", encoding="utf-8")
    code, err = run(capsys, "import", "--src", str(src), "--out", str(tmp_path / f"o{len(bad)}"),
                    "--validation-fraction", "0")
    _assert_one_line(code, err, "sample.txt:5", "outside --src", "--allow-outside-src")
  code, err = run(capsys, "import", "--src", str(src), "--out", str(tmp_path / "ok"), "--validation-fraction", "0",
                  "--allow-outside-src")
  assert code == 0, err


def test_import_bounds_an_image_before_decoding_it(tmp_path, small_data, capsys):
  """A 69-byte PNG that declares 50,000 x 50,000 pixels, and one over --max-pixels: one line each,
  nothing decoded."""
  import struct
  import zlib
  src = _original_layout(tmp_path, small_data)

  def png(w, h):
    def chunk(kind, data):
      return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
  (src / "pic" / "0.jpg").write_bytes(png(50_000, 50_000))
  code, err = run(capsys, "import", "--src", str(src), "--out", str(tmp_path / "o1"), "--validation-fraction", "0")
  _assert_one_line(code, err, "pic/0.jpg", "2500000000 pixels", "over the limit")
  (src / "pic" / "0.jpg").write_bytes(png(4000, 400))
  code, err = run(capsys, "import", "--src", str(src), "--out", str(tmp_path / "o2"), "--validation-fraction", "0",
                  "--max-pixels", "1000000")
  _assert_one_line(code, err, "4000x400", "1000000")


def test_import_character_not_in_chinese_txt(tmp_path, small_data, capsys):
  src = _original_layout(tmp_path, small_data)
  shutil.copy(src / "pic" / "0.jpg", src / "pic" / "x.jpg")
  with open(src / "Test" / "sample.txt", "a", encoding="utf-8") as f:
    f.write("pic/x.jpg 龘龘\n")
  code, err = run(capsys, "import", "--src", str(src), "--out", str(tmp_path / "o"))
  _assert_one_line(code, err, "Test/sample.txt:3", "'龘'", "not in chinese.txt")


def test_import_truncated_image(tmp_path, small_data, capsys):
  src = _original_layout(tmp_path, small_data)
  p = src / "pic" / "1.jpg"
  p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
  code, err = run(capsys, "import", "--src", str(src), "--out", str(tmp_path / "o"))
  _assert_one_line(code, err, "sample.txt:2", "1.jpg", "unreadable or truncated")


def test_import_unreadable_image(tmp_path, small_data, capsys):
  src = _original_layout(tmp_path, small_data)
  (src / "pic" / "2.jpg").write_bytes(b"not an image")
  code, err = run(capsys, "import", "--src", str(src), "--out", str(tmp_path / "o"))
  _assert_one_line(code, err, "sample.txt:3", "2.jpg", "unreadable")


def test_import_works_on_a_good_folder(tmp_path, small_data, capsys):
  """Also: a JPEG stored sideways with EXIF orientation is imported upright, a 16-bit PNG keeps its
  grey (not clipped to white), an animated GIF gives its first frame with a NOTE counting it."""
  import io
  import numpy as np
  from PIL import Image
  src = _original_layout(tmp_path, small_data)
  lines = (src / "Train" / "sample.txt").read_text(encoding="utf-8").splitlines()
  grey = [np.asarray(Image.open(src / "pic" / f"{i}.jpg").convert("L")) for i in range(3)]
  exif = Image.Exif()
  exif[0x0112] = 6
  Image.fromarray(grey[0]).transpose(Image.Transpose.ROTATE_90).save(src / "pic" / "0.jpg", exif=exif, quality=95)
  Image.fromarray(grey[1].astype(np.uint16) * 257).save(src / "pic" / "1.png")
  Image.fromarray(grey[2]).save(src / "pic" / "2.gif", save_all=True,
                                append_images=[Image.fromarray(255 - grey[2])])
  lines[1] = lines[1].replace("pic/1.jpg", "pic/1.png")
  lines[2] = lines[2].replace("pic/2.jpg", "pic/2.gif")
  (src / "Train" / "sample.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
  code, err = run(capsys, "import", "--src", str(src), "--out", str(tmp_path / "o"), "--validation-fraction", "0")
  assert code == 0, err
  assert "NOTE: 1 images have several frames" in err and "2.gif (2)" in err, err
  import tensorflow_datasets as tfds
  b = tfds.builder_from_directory(str(tmp_path / "o"))
  assert b.info.splits["train"].num_examples == 4 and b.info.splits["test"].num_examples == 2
  got = {}
  for ex in tfds.as_numpy(b.as_dataset(split="train", decoders={"image": tfds.decode.SkipDecoding()})):
    got[int(ex["line_id"])] = np.asarray(Image.open(io.BytesIO(ex["image"])).convert("L"), np.float32)
  for i in range(3):  # line ids count from 1 in sample.txt order
    assert got[i + 1].shape == grey[i].shape, i  # upright again (0), the same size (1, 2)
    assert abs(got[i + 1] - grey[i]).mean() < 6, i  # the same picture: not white, not the second frame


def test_data_dir_holding_a_different_dataset(tmp_path, tiny_corpus, capsys):
  out = tmp_path / "out"
  out.mkdir()
  (out / "chinese.txt").write_text("一\n二\n", encoding="utf-8")
  # A chinese.txt with no trace of a datagen build is the user's: refused, even with --overwrite.
  for extra in ((), ("--overwrite",)):
    code, err = run(capsys, *_build(tmp_path, tiny_corpus, *extra))
    _assert_one_line(code, err, str(out), "chinese.txt", "datagen did not write")
    assert (out / "chinese.txt").read_text(encoding="utf-8") == "一\n二\n"  # untouched
  (out / "chinese.txt").unlink()
  code, err = run(capsys, *_build(tmp_path, tiny_corpus))
  assert code == 0, err
  # A datagen build in `out`: another one with other settings needs --overwrite, which removes what
  # the first wrote (datagen_manifest.json) and leaves the user's own files beside it.
  (out / "my_notes.txt").write_text("mine", encoding="utf-8")
  code, err = run(capsys, *_build(tmp_path, tiny_corpus, "--seed", "3"))
  _assert_one_line(code, err, "other settings", "--overwrite")
  code, err = run(capsys, *_build(tmp_path, tiny_corpus, "--seed", "3", "--overwrite"))
  assert code == 0 and "removed" in err, err
  assert (out / "my_notes.txt").read_text(encoding="utf-8") == "mine"
  assert json.loads((out / "datagen_manifest.json").read_text())["status"] == "done"
  # A user's file inside a folder datagen writes: refused, named, nothing removed.
  (out / "splits" / "my_split.csv").write_text("x", encoding="utf-8")
  before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
  code, err = run(capsys, *_build(tmp_path, tiny_corpus, "--seed", "4", "--overwrite"))
  _assert_one_line(code, err, "splits/my_split.csv")
  assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before


def test_overwrite_never_removes_a_users_folders_with_datagens_names(tmp_path, tiny_corpus, capsys):
  """Train/, Test/, pic/, splits/ of the user's own (no datagen build there): refused with
  --overwrite, every file kept."""
  out = tmp_path / "out"
  for d in ("Train", "Test", "pic", "splits"):
    (out / d).mkdir(parents=True)
    (out / d / "sample.txt").write_text("a.jpg 1\n", encoding="utf-8")
  (out / "pic" / "a.jpg").write_bytes(b"\xff\xd8 not really")
  before = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
  code, err = run(capsys, *_build(tmp_path, tiny_corpus, "--overwrite"))
  _assert_one_line(code, err, "datagen did not write", "Test")
  assert {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_import_into_its_own_source_is_refused(tmp_path, small_data, capsys):
  src = _original_layout(tmp_path, small_data)
  before = {str(p.relative_to(src)): p.read_bytes() for p in src.rglob("*") if p.is_file()}
  for out in (src, src / "dataset"):
    code, err = run(capsys, "import", "--src", str(src), "--out", str(out), "--overwrite")
    _assert_one_line(code, err, "same folder or one holds the other")
  code, err = run(capsys, "import", "--src", str(src / "Train"), "--out", str(src), "--overwrite")
  _assert_one_line(code, err, "same folder or one holds the other")
  assert {str(p.relative_to(src)): p.read_bytes() for p in src.rglob("*") if p.is_file()} == before


def test_bad_knob_values(tmp_path, tiny_corpus, capsys):
  code, err = run(capsys, *_build(tmp_path, tiny_corpus, "--size-min", "50", "--size-max", "20"))
  _assert_one_line(code, err, "--size-min 50")
  code, err = run(capsys, *_build(tmp_path, tiny_corpus, "--holdout-fonts", "nosuchfont"))
  _assert_one_line(code, err, "nosuchfont")


def test_a_disk_that_fills_up_is_one_line_and_the_same_command_starts_the_build_again(tmp_path, tiny_corpus,
                                                                                      capsys, monkeypatch):
  """Too little free space for the estimated dataset: refused before rendering, both sizes named.
  The disk filling up mid-render (OSError ENOSPC from the shard writer, as a real full disk gives --
  TensorFlow's ResourceExhaustedError "No space left on device" -- on a tmpfs): one line naming the
  folder and the estimate; the manifest says unfinished; the same command then starts the build again
  and writes the shards a clean build writes."""
  import collections
  import errno
  import shutil
  from datagen import records
  real_usage = shutil.disk_usage
  Usage = collections.namedtuple("Usage", "total used free")
  monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(10**9, 10**9 - 1000, 1000))
  code, err = run(capsys, *_build(tmp_path, tiny_corpus))
  _assert_one_line(code, err, "not enough disk space", "needs about", "0 MB free", "run the same command again")
  assert not list((tmp_path / "out").glob("*.tfrecord-*"))
  monkeypatch.setattr(shutil, "disk_usage", real_usage)

  real_write, calls = records.SplitWriter.write, {"n": 0}

  def full_disk(self, position, example):
    calls["n"] += 1
    if calls["n"] > 20:
      raise OSError(errno.ENOSPC, "No space left on device", str(self.data_dir))
    return real_write(self, position, example)
  monkeypatch.setattr(records.SplitWriter, "write", full_disk)
  code, err = run(capsys, *_build(tmp_path, tiny_corpus))
  _assert_one_line(code, err, f"out of disk space writing into {tmp_path / 'out'}", "the dataset needs about",
                   "run the same command again")
  assert json.loads((tmp_path / "out" / "datagen_manifest.json").read_text())["status"] == "writing"
  monkeypatch.setattr(records.SplitWriter, "write", real_write)
  code, err = run(capsys, *_build(tmp_path, tiny_corpus))
  assert code == 0 and "unfinished build with these same settings" in err and "starting it again" in err, err
  assert json.loads((tmp_path / "out" / "datagen_manifest.json").read_text())["status"] == "done"
  clean = tmp_path / "clean"
  assert cli.main([a if a != str(tmp_path / "out") else str(clean) for a in _build(tmp_path, tiny_corpus)]) == 0
  shards = sorted(p.name for p in (tmp_path / "out").glob("*.tfrecord-*"))
  assert shards and shards == sorted(p.name for p in clean.glob("*.tfrecord-*"))
  for name in shards:
    assert (tmp_path / "out" / name).read_bytes() == (clean / name).read_bytes(), name
  # Other settings over the unfinished build: named, the way out said.
  calls["n"] = 0
  monkeypatch.setattr(records.SplitWriter, "write", full_disk)
  assert run(capsys, *_build(tmp_path, tiny_corpus, "--seed", "5", "--overwrite"))[0] == 2
  monkeypatch.setattr(records.SplitWriter, "write", real_write)
  code, err = run(capsys, *_build(tmp_path, tiny_corpus, "--seed", "6"))
  _assert_one_line(code, err, "unfinished build with other settings (seed differ)", "--overwrite")


def test_a_corpus_line_too_long_to_draw_is_one_line(tmp_path, capsys):
  """2,500 characters: once Pillow's "broken data stream" traceback mid-render (a JPEG is at most
  65,535 px wide); now refused before anything is written, naming the corpus line and the limit."""
  c = tmp_path / "c.txt"
  c.write_text("更上一层楼\t100\n" + "民以食为天" * 500 + "\t101\n", encoding="utf-8")
  code, err = run(capsys, *_build(tmp_path, c))
  _assert_one_line(code, err, "c.txt:2", "a line of 2500 characters", "lines of up to 868", "split it")
  assert not (tmp_path / "out").exists()


def test_the_mild_images_keep_the_users_ranges_in_order():
  """--spacing-min above the first round's spacing_max (0.35), --jpeg-max below its jpeg_min (60):
  the mild images (mild_prob) once failed on numpy's uniform(high < low)."""
  import numpy as np
  from datagen import fonts as fonts_lib, render
  cfg = render.RenderConfig(spacing_min=0.5, spacing_max=0.6, jpeg_min=30, jpeg_max=40, mild_prob=1.0)
  font = fonts_lib.load_font(fonts_lib.default_fonts()[0], 30)
  for seed in range(3):
    jpeg, h, w, _ = render.render_line("更上一层楼", font, np.random.default_rng(seed), cfg)
    assert jpeg and h > 0 and w > 0
