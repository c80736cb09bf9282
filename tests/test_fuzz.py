"""Fuzzing (hypothesis, derandomized and bounded: the same few hundred cases on every run, ~1 min)
the readers of untrusted input: the image loader of crnn-predict / crnn-serve, datagen import's
image loader, and the sample.txt / chinese.txt parsers.  Each either returns a sound result or
raises its own one-line error (ImageError / DatagenError / UserError) -- never another exception --
and an image it returns never holds more pixels than the bound checked before decoding."""
import io
import resource
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from crnn_jax import inference
from crnn_jax.charset import Charset
from crnn_jax.errors import UserError
from datagen import importer
from datagen.charset import Charset as DatagenCharset
from datagen.errors import DatagenError

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
MAX_PIXELS = 200_000


def _seed_images():
  """A small text-line-like image in every format the loaders accept (and a 2-frame GIF)."""
  a = np.full((24, 80), 230, np.uint8)
  a[6:18, 10:70:7] = 20
  im = Image.fromarray(a)
  out = []
  for fmt, kw in (("PNG", {}), ("JPEG", {"quality": 80}), ("BMP", {}), ("TIFF", {}), ("WEBP", {}),
                  ("GIF", {"save_all": True, "append_images": [Image.fromarray(255 - a)]})):
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    out.append(buf.getvalue())
  rgba = Image.new("RGBA", (40, 16), (0, 0, 0, 0))
  buf = io.BytesIO()
  rgba.save(buf, "PNG")
  out.append(buf.getvalue())
  return out


SEEDS = _seed_images()


def _png_with_size(w, h):
  """A PNG whose header declares w x h (CRC fixed, so the header is believed) over a tiny body."""
  raw = SEEDS[0]
  ihdr = struct.pack(">II", w, h) + raw[24:29]
  chunk = b"IHDR" + ihdr
  return raw[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + raw[33:]


@st.composite
def damaged_images(draw):
  kind = draw(st.sampled_from(["mutate", "truncate", "size", "random", "splice"]))
  if kind == "random":
    return draw(st.binary(max_size=3000))
  if kind == "size":
    return _png_with_size(draw(st.integers(0, 2**31 - 1)), draw(st.integers(0, 2**31 - 1)))
  data = bytearray(draw(st.sampled_from(SEEDS)))
  if kind == "truncate":
    return bytes(data[:draw(st.integers(0, len(data)))])
  if kind == "splice":
    at = draw(st.integers(0, len(data)))
    return bytes(data[:at] + draw(st.binary(max_size=200)) + data[at:])
  for _ in range(draw(st.integers(1, 12))):
    i = draw(st.integers(0, len(data) - 1))
    data[i] = draw(st.integers(0, 255))
  return bytes(data)


def test_the_seed_images_read():
  for data in SEEDS:
    g = inference.open_image(data, max_pixels=MAX_PIXELS)
    assert g.dtype == np.uint8 and g.ndim == 2 and g.size > 0


@FUZZ
@given(data=damaged_images())
def test_open_image_never_raises_anything_but_image_error(data):
  try:
    g = inference.open_image(data, max_pixels=MAX_PIXELS, max_bytes=1 << 20)
  except inference.ImageError as e:
    assert str(e) and e.kind in ("unsupported", "too_large", "unreadable")
    return
  assert g.dtype == np.uint8 and g.ndim == 2 and 0 < g.size <= MAX_PIXELS


@FUZZ
@given(data=damaged_images())
def test_import_image_loader_never_raises_anything_but_datagen_error(data, tmp_path):
  p = tmp_path / "x.img"
  p.write_bytes(data)
  try:
    jpeg, h, w, frames = importer.load_image_bytes(p, "Train sample.txt:1", 1, max_pixels=MAX_PIXELS)
  except DatagenError as e:
    assert str(p) in str(e) and "sample.txt:1" in str(e)
    return
  assert 0 < h * w <= MAX_PIXELS and frames >= 1
  assert Image.open(io.BytesIO(jpeg)).size == (w, h)


def test_fuzzing_the_loaders_stays_within_a_bounded_memory():
  """The peak resident memory of this process grows by less than 300 MB over a pass of the image
  fuzzing (a 1,048-byte PNG that declares 1,000,000 x 1 pixels once took 8.8 GB)."""
  before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  for w, h in ((1_000_000, 1), (50_000, 50_000), (300_000, 1), (2**31 - 1, 2**31 - 1), (1, 2**31 - 1)):
    with pytest.raises(inference.ImageError) as e:
      inference.open_image(_png_with_size(w, h), max_pixels=MAX_PIXELS)
    assert e.value.kind == "too_large"
  test_open_image_never_raises_anything_but_image_error()
  grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
  assert grown_mb < 300, grown_mb


CHARSET = DatagenCharset.from_texts(["更上一层楼", "民以食为天"])


@st.composite
def sample_txt(draw):
  """sample.txt bytes: lines of path + label with odd paths, labels, separators and encodings."""
  paths = st.sampled_from(["pic/0.jpg", "../x.jpg", "/etc/passwd", "pic/../../x.jpg", "pic/ 0.jpg", "", " ",
                           "pic/missing.jpg", "pic\\0.jpg", "./pic/0.jpg", "pic/0.jpg\x00"])
  labels = st.text(alphabet=st.sampled_from(list("更上一层楼民以食为天") + ["a", " ", "\t", "\u3000", "\ufeff", "😀"]),
                   max_size=8)
  lines = draw(st.lists(st.tuples(paths, st.sampled_from([" ", "\t", "  ", ""]), labels), max_size=6))
  text = "\n".join(p + sep + lab for p, sep, lab in lines) + draw(st.sampled_from(["", "\n", "\r\n"]))
  data = text.encode(draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16"])), errors="surrogatepass")
  if draw(st.booleans()):
    data += draw(st.binary(max_size=20))
  return data


@FUZZ
@given(data=sample_txt())
def test_sample_txt_parser_never_raises_anything_but_datagen_error(data, tmp_path):
  src = tmp_path / "src"
  (src / "pic").mkdir(parents=True, exist_ok=True)
  (src / "Train").mkdir(exist_ok=True)
  (src / "pic" / "0.jpg").write_bytes(SEEDS[1])
  path = src / "Train" / "sample.txt"
  path.write_bytes(data)
  try:
    rows = importer.read_sample_txt(path, CHARSET, src)
  except DatagenError as e:
    assert str(path) in str(e)
    return
  for img, label, n in rows:
    assert img.resolve().is_relative_to(src.resolve()) and img.is_file()
    assert label and all(c in CHARSET for c in label) and n >= 1


@FUZZ
@given(data=st.one_of(st.binary(max_size=300),
                      st.text(max_size=40).map(lambda t: t.encode("utf-8", errors="surrogatepass")),
                      st.lists(st.sampled_from(["一", "二", "一", "ab", "", " ", "\ufeff", "😀"]), max_size=8)
                      .map(lambda cs: "\n".join(cs).encode("utf-8"))))
def test_chinese_txt_readers_never_raise_anything_but_their_own_error(data, tmp_path):
  path = tmp_path / "chinese.txt"
  path.write_bytes(data)
  for read, error in ((Charset.read, UserError), (DatagenCharset.read_txt, DatagenError)):
    try:
      cs = read(path)
    except error as e:
      assert str(path) in str(e)
    else:
      assert len(set(cs.chars)) == len(cs.chars) and all(len(c) == 1 for c in cs.chars)
