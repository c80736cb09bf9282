"""The inference core (crnn_jax/inference.py): what it loads and imports, its preprocessing against
the tf.data evaluation path, buckets, confidences, and bad images."""
import io
import json
import logging
import pathlib
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

from crnn_jax import decode, inference
from crnn_jax.charset import Charset

from conftest import why

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def workdir(reading_workdir):
  return reading_workdir


def _examples(data_dir, n):
  import tensorflow_datasets as tfds
  b = tfds.builder_from_directory(str(data_dir))
  ds = b.as_dataset(split="train", decoders={"image": tfds.decode.SkipDecoding()}).take(n)
  return [(ex["image"], ex["text"].decode()) for ex in tfds.as_numpy(ds)]


def test_reading_a_line_imports_no_training_code_optimizer_or_tensorflow(workdir, overfit_data, tmp_path):
  jpeg, _ = _examples(overfit_data, 1)[0]
  (tmp_path / "line.jpg").write_bytes(jpeg)
  code = (f"import json, sys\nfrom crnn_jax import inference\nr = inference.load({str(workdir)!r})\n"
          f"res = r.read([{str(tmp_path / 'line.jpg')!r}])\n"
          "print(json.dumps([res[0].text, sorted(m for m in sys.modules if m.split('.')[0] in "
          "('tensorflow', 'optax', 'tensorflow_datasets') or m in ('crnn_jax.train', 'crnn_jax.input_pipeline'))]))")
  p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert p.returncode == 0, why(p.stderr)
  text, loaded = json.loads(p.stdout.strip().splitlines()[-1])
  assert isinstance(text, str) and loaded == []


def test_only_the_weights_reading_needs_are_restored(workdir):
  r = inference.load(workdir)
  assert set(r.variables) == {"params", "batch_stats"} and r.weights == "ema" and r.step == 250
  # The EMA, not the raw weights (they differ after a few steps with decay 0.9).
  raw = inference.load(workdir, weights="raw")
  assert raw.weights == "raw"
  diff = [np.abs(np.asarray(a) - np.asarray(b)).max() for a, b in
          zip(*(__import__("jax").tree.leaves(x.variables["params"]) for x in (r, raw)))]
  assert max(diff) > 0


@pytest.mark.parametrize("h,w", [(57, 221), (40, 217), (32, 100), (20, 64), (118, 948), (31, 5), (300, 7000), (16, 3000)])
def test_resize_is_tf_image_resize_with_antialias(h, w):
  import tensorflow as tf
  g = np.random.default_rng(h * w).integers(0, 256, (h, w), np.uint8)
  ours = inference.to_input(g, 32, 8)
  new_w = inference.resized_width(h, w, 32, 8)
  theirs = tf.image.resize(tf.cast(g[..., None], tf.float32) / 255.0, [32, new_w], antialias=True).numpy()[..., 0]
  assert ours.shape == theirs.shape == (32, new_w)
  np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_a_line_far_wider_than_high_is_refused_from_its_header():
  """A 1 KB PNG of 1,000,000 x 1 once asked for 116 TiB (a traceback) when resized to height 32;
  20,000 x 40 (500:1) is refused too, naming the ratio; 16,000 x 40 (400:1) reads."""
  from PIL import Image
  for w, h in ((1_000_000, 1), (20_000, 40)):
    buf = io.BytesIO()
    Image.new("L", (w, h), 255).save(buf, "PNG")
    with pytest.raises(inference.ImageError, match=rf"{w}x{h}: \d+ times as wide as high, over the limit of 400") as e:
      inference.open_image(buf.getvalue())
    assert e.value.kind == "too_large"
  with pytest.raises(inference.ImageError, match="times as wide as high"):
    inference.to_input(np.zeros((1, 5000), np.uint8), 32, 8)  # an array skips the header check
  assert inference.to_input(np.full((40, 16_000), 255, np.uint8), 32, 8).shape == (32, 12_800)


def test_grey_and_colour_jpegs_decode_as_tf_decode_jpeg_does():
  import tensorflow as tf
  from PIL import Image
  rng = np.random.default_rng(0)
  for mode, shape in (("L", (40, 150)), ("RGB", (40, 150, 3))):
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, np.uint8), mode).save(buf, "JPEG", quality=70)
    ours = inference.open_image(buf.getvalue())
    theirs = tf.io.decode_jpeg(buf.getvalue(), channels=1, dct_method="INTEGER_ACCURATE").numpy()[..., 0]
    np.testing.assert_array_equal(ours, theirs)


def test_reader_gives_the_evaluation_paths_pixels_logits_and_texts(workdir, overfit_data):
  """The same lines through tf.data (crnn-eval, training's evaluation) and through the core
  (crnn-predict, export, serve): the same pixels, logits within 1e-4, the same greedy texts."""
  import jax
  from crnn_jax import evaluate
  r = inference.load(workdir, decoding={"decoder": "greedy"})
  config = r.config
  rows = []
  for b, n, (x, f) in evaluate.eval_batches(r.steps, config, overfit_data, "train", max_examples=24):
    lg = np.asarray(jax.device_get(r.steps.logits(r.variables, x, f)))
    for i in range(n):
      w = int(b["frames"][i]) * r.stride
      rows.append((b["text"][i].decode(), b["image"][i, :, :w, 0], lg[i, :int(b["frames"][i])]))
  jpegs = {}
  for jpeg, text in _examples(overfit_data, 48):
    jpegs.setdefault(text, []).append(jpeg)
  # eval_batches groups by bucket, so match rows to the split's images by pixels.
  ours = [r.prepare(j) for js in jpegs.values() for j in js]
  matched = 0
  for text, img, logits in rows:
    # (eval_batches' rows carry frames, not the resized width: compare the frames' columns)
    w = img.shape[1]
    cand = [o for o in ours if o.shape[1] // r.stride == w // r.stride and np.abs(o[:, :w] - img).max() < 1e-5]
    assert cand, f"no image of {text!r} gives the tf.data pixels"
    mine = r.logits([cand[0]])[0]
    assert mine.shape == logits.shape
    np.testing.assert_allclose(mine, logits, atol=1e-4)
    assert r.read([inference.Prepared(cand[0])])[0].text == \
        decode.greedy_batch(logits.argmax(-1)[None], [logits.shape[0]], r.charset)[0]
    matched += 1
  assert matched == len(rows) >= 16


def test_a_line_wider_than_every_bucket_is_read_in_full(workdir, caplog):
  r = inference.load(workdir)
  wide = np.full((32, 1000), 255, np.uint8)
  wide[8:24, ::7] = 0
  x = r.prepare(wide)
  assert x.shape == (32, 1000) and r.buckets[-1] < 1000
  with caplog.at_level(logging.WARNING, logger="crnn_jax.inference"):
    [(idx, images, frames)] = list(r.batches([x]))
    res = r.read([wide])[0]
  assert images.shape[2] == 1024 and int(frames[0]) == 1000 // r.stride  # not squeezed
  np.testing.assert_array_equal(images[0, :, :1000, 0], x)
  assert "wider than the largest width bucket" in caplog.text
  assert res.width == 1000 and isinstance(res.text, str)


def test_batches_are_padded_to_powers_of_two(workdir):
  r = inference.load(workdir)
  assert [r.batch_rows(n) for n in (1, 2, 3, 5, 8, 9, 100)] == [1, 2, 4, 8, 8, 8, 8]  # eval.batch_size 8
  lines = [r.prepare(np.full((32, w), 200, np.uint8)) for w in (100, 150, 120, 250)]
  shapes = [(idx, im.shape[:3]) for idx, im, _ in r.batches(lines, merge=False)]  # one call per bucket
  assert shapes == [([0, 2], (2, 32, 128)), ([1], (1, 32, 192)), ([3], (1, 32, 256))]


def test_neighbouring_buckets_share_a_call_when_that_is_cheaper(workdir):
  """Reader.plan: CALL_COST_PX per call + rows x width; the same texts and logits either way."""
  r = inference.load(workdir)
  line = lambda w: r.prepare(np.full((32, w), 200, np.uint8))  # noqa: E731
  assert inference.CALL_COST_PX == 160 and r.buckets == [128, 192, 256] and r.max_batch == 8
  # 128 + 192 apart: 2 x 160 + 128 + 192 = 640 > 160 + 2 x 192 = 544 -> one call at 192.
  assert r.plan([line(100), line(150)]) == [([0, 1], 192)]
  # 8 lines at 128 and 2 at 256 (at most 8 rows a call): 160 + 8 x 128 + 160 + 2 x 256 = 1856,
  # cheaper than any call mixing them (e.g. 6 at 128 padded to 8 + 4 rows at 256: 2528).
  ws = [100, 250, 100, 100, 250, 100, 100, 100, 100, 100]
  assert r.plan([line(w) for w in ws]) == [([0, 2, 3, 5, 6, 7, 8, 9], 128), ([1, 4], 256)]
  # 6 at 128 alone: 2 + 4 rows (160 + 256 + 160 + 512 = 1088) beat one call padded to 8 (1184).
  assert sorted(len(idx) for idx, _ in r.plan([line(100)] * 6)) == [2, 4]
  # Never more than eval.batch_size rows in one call.
  plan = r.plan([line(100)] * 20)
  assert sorted(i for idx, _ in plan for i in idx) == list(range(20)) and max(len(i) for i, _ in plan) <= 8
  # A line reads the same in a wider call: the logits and texts of random lines, merged or not
  # (one per bucket: 3 calls, 1056; merged: 2 calls, 960 -- 128 + 192 at 192 or 192 + 256 at 256).
  rng = np.random.default_rng(0)
  rows = [r.prepare(np.where(rng.random((32, w)) < 0.2, 0, 255).astype(np.uint8)) for w in (100, 150, 250)]
  assert len(r.plan(rows)) == 2 and len(r.plan(rows, merge=False)) == 3
  for a, b in zip(r.logits(rows), r.logits(rows, merge=False)):
    np.testing.assert_allclose(a, b, atol=1e-4)
  assert [x.text for x in r.read_prepared(rows)] == [x.text for x in r.read_prepared(rows, merge=False)]


def test_greedy_confidences_follow_the_runs():
  best = np.array([0, 3, 3, 0, 3, 5, 5, 0, 0, 9])
  prob = np.array([.9, .6, .8, .9, .7, .5, .4, .9, .9, .3])
  classes, conf, spans = decode.greedy_confidences(best, prob, 9)
  assert classes == decode.collapse(best, 9) == [3, 3, 5]
  assert conf == [.8, .7, .5] and spans == [[1, 3], [4, 5], [5, 7]]


def test_forced_alignment_gives_the_greedy_confidences_for_the_greedy_text():
  rng = np.random.default_rng(1)
  T, C, K = 30, 12, 4
  logits = rng.normal(size=(T, C)) * 3
  logits[::3, 0] += 4  # some blanks
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  ids = np.argsort(-logp, -1)[:, :K]
  vals = np.take_along_axis(logp, ids, -1)
  classes, conf, spans = decode.greedy_confidences(ids[:, 0], np.exp(vals[:, 0]), T)
  aconf, aspans = decode.align_confidences(vals, ids, logp[:, 0], T, classes)
  np.testing.assert_allclose(aconf, conf, rtol=1e-9)
  assert aspans == spans


def test_nbest_is_sorted_and_starts_with_the_beam_search_text():
  cs = Charset(list("abcdefghijk"))
  rng = np.random.default_rng(2)
  logp = np.log(rng.dirichlet(np.ones(12) * 0.3, size=20))
  ids = np.argsort(-logp, -1)[:, :5]
  vals = np.take_along_axis(logp, ids, -1)
  nbest = decode.beam_nbest(vals, ids, logp[:, 0], 20, cs, beam=6)
  scores = [s for _, s in nbest]
  assert scores == sorted(scores, reverse=True) and len(nbest) == 6
  assert cs.text(list(nbest[0][0])) == decode.beam_search(vals, ids, logp[:, 0], 20, cs, beam=6)


def test_readings_carry_confidences_alternatives_and_timings(workdir, overfit_data):
  r = inference.load(workdir)
  jpeg, _ = _examples(overfit_data, 1)[0]
  g, b = r.read([jpeg], decoder="greedy")[0], r.read([jpeg], decoder="beam", alternatives=3)[0]
  for res in (g, b):
    assert len(res.char_confidences) == len(res.text)
    assert all(0.0 <= c <= 1.0 for c in res.char_confidences) and 0.0 <= res.confidence <= 1.0
    assert set(res.timing_ms) == {"preprocess", "model", "decode"} and res.step == 250
  assert g.decoder == "greedy" and g.alternatives is None
  assert b.decoder in ("beam", "beam+lm") and 1 <= len(b.alternatives) <= 3
  assert b.alternatives[0][0] == b.text and abs(sum(p for _, p in b.alternatives) - 1) < 1e-6
  d = b.to_dict()
  assert json.loads(json.dumps(d, ensure_ascii=False))["text"] == b.text


def _png_header_only(w, h):
  def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
  return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) + \
      chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def test_bad_images_are_refused_with_the_reason(tmp_path):
  from PIL import Image
  with pytest.raises(inference.ImageError) as e:
    inference.open_image(_png_header_only(100_000, 100_000))  # a decompression bomb: refused unread
  assert e.value.kind == "too_large" and "10000000000 pixels" in str(e.value)
  with pytest.raises(inference.ImageError) as e:
    inference.open_image(b"%PDF-1.4 not an image")
  assert e.value.kind == "unsupported"
  with pytest.raises(inference.ImageError) as e:
    inference.open_image(b"x" * 100, max_bytes=10)
  assert e.value.kind == "too_large"
  buf = io.BytesIO()
  Image.new("L", (50, 20), 128).save(buf, "JPEG")
  with pytest.raises(inference.ImageError) as e:
    inference.open_image(buf.getvalue()[:60])
  assert e.value.kind == "unreadable"
  with pytest.raises(inference.ImageError):
    inference.open_image(tmp_path / "missing.png")
  with pytest.raises(inference.ImageError):
    inference.open_image(b"")


def test_transparent_and_colour_images_become_grey_on_white():
  from PIL import Image
  rgba = Image.new("RGBA", (40, 20), (0, 0, 0, 0))  # transparent black: white once laid on white
  rgba.paste((0, 0, 0, 255), (10, 5, 20, 15))
  g = inference.open_image(rgba)
  assert g[0, 0] == 255 and g[10, 15] == 0
  rgb = np.zeros((10, 10, 3), np.uint8)
  rgb[..., 1] = 255
  assert inference.open_image(rgb)[0, 0] == 150  # ITU-R 601 luma of pure green
  assert inference.open_image(np.ones((4, 4), np.float32))[0, 0] == 255


def test_exif_rotation_16_bit_grey_and_multi_frame_files(tmp_path, caplog):
  """A JPEG stored sideways with EXIF orientation 6 reads upright; 16-bit grey is scaled, not clipped
  to white; of an animated GIF the first frame is read, with a warning naming the file."""
  import logging
  from PIL import Image
  upright = np.full((20, 60), 255, np.uint8)
  upright[5:15, 5:15] = 0  # ink at the left end
  stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # 60 high, 20 wide
  exif = Image.Exif()
  exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
  buf = io.BytesIO()
  stored.save(buf, "JPEG", exif=exif, quality=95)
  g = inference.open_image(buf.getvalue())
  assert g.shape == (20, 60) and g[10, 10] < 64 and g[10, 50] > 192
  deep = Image.fromarray(np.full((10, 30), 20000, np.uint16))  # grey ink on 16 bits: ~78 of 255
  path16 = tmp_path / "deep.png"
  deep.save(path16)
  assert 60 < int(inference.open_image(path16)[0, 0]) < 100
  frames = [Image.new("L", (30, 10), v) for v in (0, 255)]
  gif = tmp_path / "anim.gif"
  frames[0].save(gif, save_all=True, append_images=frames[1:])
  with caplog.at_level(logging.WARNING, logger="crnn_jax.inference"):
    assert int(inference.open_image(gif)[0, 0]) == 0
  assert "anim.gif has 2 frames" in caplog.text and "the first is read" in caplog.text


def test_predict_jsonl(workdir, overfit_data, tmp_path, capsys):
  from crnn_jax import predict
  for i, (jpeg, _) in enumerate(_examples(overfit_data, 3)):
    (tmp_path / f"{i}.jpg").write_bytes(jpeg)
  out = tmp_path / "out.jsonl"
  assert predict.main(["--workdir", str(workdir), "--format", "jsonl", "--alternatives", "2", "--output", str(out),
                       str(tmp_path / "0.jpg"), str(tmp_path / "1.jpg"), str(tmp_path / "2.jpg")]) == 0
  rows = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
  assert [r["path"] for r in rows] == [str(tmp_path / f"{i}.jpg") for i in range(3)]
  assert out.read_text(encoding="utf-8").splitlines() == [json.dumps(r, ensure_ascii=False) for r in rows]
  for r in rows:
    assert {"text", "confidence", "char_confidences", "alternatives", "decoder", "timing_ms", "width", "step"} <= set(r)
    assert len(r["char_confidences"]) == len(r["text"]) and len(r["alternatives"]) <= 2
    assert r["timing_ms"]["preprocess"] > 0


def test_predict_on_two_cpu_devices_reads_as_on_one(workdir, overfit_data, tmp_path):
  """crnn-predict --cpu-devices 2 (the default on 2 cores: each batch split over two XLA devices)
  in a fresh process gives the texts and confidences of --cpu-devices 1."""
  import os
  import subprocess
  import sys
  for i, (jpeg, _) in enumerate(_examples(overfit_data, 6)):
    (tmp_path / f"{i}.jpg").write_bytes(jpeg)
  env = dict(os.environ, XLA_FLAGS="")
  out = {}
  for n in (1, 2):
    p = subprocess.run([sys.executable, "-m", "crnn_jax.predict", "--workdir", str(workdir), "--cpu-devices", str(n),
                        "--decoder", "greedy", "--format", "jsonl", str(tmp_path)], capture_output=True, text=True,
                       env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    out[n] = [json.loads(l) for l in p.stdout.splitlines()]
  assert len(out[1]) == 6 and [r["text"] for r in out[1]] == [r["text"] for r in out[2]]
  np.testing.assert_allclose([r["confidence"] for r in out[1]], [r["confidence"] for r in out[2]], atol=1e-4)
  probe = "from crnn_jax.workdir import setup_cpu_devices; setup_cpu_devices(2); import jax; print(jax.device_count())"
  assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env,
                        timeout=120).stdout.strip() == "2"
