"""The reading path: one module from a trained workdir to text with confidences.

    from crnn_jax import inference
    reader = inference.load("runs/poem_cpu")                  # parameters (EMA) + batch statistics only
    [r] = reader.read(["line.jpg"])                          # paths, bytes, PIL images or uint8 arrays
    r.text, r.confidence, r.char_confidences, r.alternatives, r.timing_ms

What it owns, and what uses it (crnn-predict, crnn-eval, crnn-export, crnn-serve; `train.py` for its
periodic evaluation):
- `load`: config.json + chinese.txt + an orbax *partial* restore of what reading needs (the EMA of
  {params, batch_stats} when the run kept one, else the raw ones): no optimizer, no Adam moments.
- `open_image` / `to_input`: any image -> grey uint8 -> `input.height` rows keeping the aspect
  ratio, with the antialiased bilinear (triangle) filter of tf.image.resize(antialias=True), which
  the tf.data evaluation path uses: the same pixels to ~1e-6 (tests/test_inference.py).
- `Steps`: the jitted model steps (greedy: best class and its probability per frame; top-K
  log-probabilities for beam search), on one device or a mesh.
- `Reader.read`: width buckets (a line wider than the largest gets a bucket of its own, made on
  demand and logged; never squeezed), batches, greedy or beam + LM decoding, per-character
  confidences, optional n-best alternatives, timings.

Nothing here imports the training module, optax or TensorFlow (tests/test_inference.py checks
`sys.modules` after loading a workdir and reading an image).
"""
import dataclasses
import functools
import io
import json
import logging
import math
import os
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from crnn_jax import decode as decode_lib
from crnn_jax import model as model_lib
from crnn_jax.charset import Charset
from crnn_jax.errors import UserError

log = logging.getLogger("crnn_jax.inference")

# Decoded images must be at most this many pixels (checked from the header, before decoding):
# a 40-megapixel photo of a line is generous; a decompression bomb is refused.
MAX_PIXELS = 40_000_000
# Width over height: a Chinese character is about as wide as high, so 400 holds a line of ~200
# characters with their spacing (the model reads up to input.max_label_length, 24 by default).
MAX_ASPECT = 400
# What open_image accepts (Pillow's format names); anything else is refused unread.
FORMATS = ("PNG", "JPEG", "BMP", "WEBP", "TIFF", "GIF")
# Widths above the largest bucket are rounded up to a multiple of this (pixels at input.height),
# so that lines of similar lengths share one compiled shape.
EXTRA_BUCKET_STEP = 128
# What one device call costs beyond its rows, in rows x pixels of width: on a 2-core CPU a call
# costs ~3 ms more than its rows, and a 160-px row ~3 ms (BENCHMARKS.md, "Serving under load").
# `Reader.plan` merges neighbouring width buckets into one call when that is cheaper.
CALL_COST_PX = 160


class ImageError(ValueError):
  """An image that cannot be read.  `kind`: "unsupported" (not an accepted format), "too_large"
  (bytes or pixels over the limit) or "unreadable" (truncated, corrupt, empty)."""

  def __init__(self, message, kind="unreadable"):
    super().__init__(message)
    self.kind = kind


# ---- images ---------------------------------------------------------------------------------
def open_image(src, max_pixels=MAX_PIXELS, max_bytes=None, max_aspect=MAX_ASPECT):
  """A path, bytes, a PIL image or a numpy array ([h, w] grey or [h, w, 3|4] colour, uint8) ->
  uint8 [h, w] grey.  Colour becomes grey (JPEGs are decoded to grey by libjpeg, as tf.data's
  decode_jpeg(channels=1) does); transparency is laid on white; EXIF rotation is applied.  Bytes and
  files are checked before decoding: size (`max_bytes`), format (FORMATS) and pixel count
  (`max_pixels`, from the header) and aspect (`max_aspect`: width over height; a 1,000,000 x 1 PNG
  of 1 KB once asked for 8.8 GB when resized to the model's height).  Raises ImageError saying why."""
  from PIL import Image, ImageOps, UnidentifiedImageError
  if isinstance(src, np.ndarray):
    return _array_to_gray(src)
  if isinstance(src, Image.Image):
    return _pil_to_gray(src)
  if isinstance(src, (str, os.PathLike)):
    try:
      size = os.path.getsize(src)
    except FileNotFoundError:
      raise ImageError("no such file") from None
    if max_bytes is not None and size > max_bytes:
      raise ImageError(f"{size} bytes, over the limit of {max_bytes}", "too_large")
    with open(src, "rb") as f:
      data = f.read()
  else:
    data = bytes(src)
    if max_bytes is not None and len(data) > max_bytes:
      raise ImageError(f"{len(data)} bytes, over the limit of {max_bytes}", "too_large")
  if not data:
    raise ImageError("empty file")
  try:
    im = Image.open(io.BytesIO(data), formats=FORMATS)
  except Image.DecompressionBombError as e:  # Pillow's own limit, past ours: refused from the header too
    raise ImageError(f"over the pixel limit of {max_pixels}: {e}", "too_large") from None
  except UnidentifiedImageError:
    raise ImageError(f"not an image in one of the accepted formats ({', '.join(FORMATS)})", "unsupported") from None
  except Exception as e:  # noqa: BLE001 -- Pillow's plugins raise a zoo on damaged files (TypeError, KeyError, ...)
    raise ImageError(f"not a readable image ({type(e).__name__}: {e})") from None
  w, h = im.size
  if w == 0 or h == 0:
    raise ImageError(f"empty image ({w}x{h})")
  if max_pixels is not None and w * h > max_pixels:
    raise ImageError(f"{w}x{h} = {w * h} pixels, over the limit of {max_pixels}", "too_large")
  if max_aspect is not None and w > max_aspect * h:
    raise ImageError(f"{w}x{h}: {w / h:.0f} times as wide as high, over the limit of {max_aspect} (a line of "
                     f"~{max_aspect // 2} characters at most); crop it into lines", "too_large")
  try:
    if im.format == "JPEG" and im.mode in ("RGB", "YCbCr", "L"):
      im.draft("L", None)  # libjpeg's own grey output (the luma plane), as tf.io.decode_jpeg(channels=1)
    frames = getattr(im, "n_frames", 1)
    if frames > 1:
      name = os.fspath(src) if isinstance(src, (str, os.PathLike)) else f"an image of {len(data)} bytes"
      log.warning("%s has %d frames (an animated GIF or a multi-page TIFF): the first is read", name, frames)
    im.load()
    im = ImageOps.exif_transpose(im)
    return _pil_to_gray(im)
  except ImageError:
    raise
  except Exception as e:  # noqa: BLE001 -- Pillow's plugins raise a zoo on damaged files (TypeError, KeyError, ...)
    raise ImageError(f"not a readable image ({type(e).__name__}: {e})") from None


def _pil_to_gray(im):
  if im.mode.startswith("I") or im.mode == "F":
    # 16/32-bit integer or float grey (a 16-bit PNG or TIFF): Pillow's convert("L") clips at 255, so
    # grey ink on 16 bits came out white.  Scaled from the full 16-bit range (or [0, 1] for floats
    # up to 1), clipped otherwise.
    a = np.asarray(im, np.float64)
    if im.mode.startswith("I;16") or (im.mode == "I" and a.max(initial=0) > 255):
      a = a / 257.0
    elif im.mode == "F" and a.max(initial=0) <= 1.0:
      a = a * 255.0
    g = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    if g.size == 0:
      raise ImageError(f"empty image ({im.width}x{im.height})")
    return g
  if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
    from PIL import Image
    rgba = im.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    im = Image.alpha_composite(white, rgba)
  g = np.asarray(im.convert("L"), np.uint8)
  if g.size == 0:
    raise ImageError(f"empty image ({im.width}x{im.height})")
  return g


def _array_to_gray(a):
  a = np.asarray(a)
  if a.ndim == 3 and a.shape[-1] == 1:
    a = a[..., 0]
  if a.ndim == 2:
    g = a
  elif a.ndim == 3 and a.shape[-1] in (3, 4):
    from PIL import Image
    return _pil_to_gray(Image.fromarray(a.astype(np.uint8), "RGB" if a.shape[-1] == 3 else "RGBA"))
  else:
    raise ImageError(f"an array of shape {a.shape}: give [h, w] grey or [h, w, 3|4] colour")
  if g.size == 0:
    raise ImageError(f"empty image ({g.shape[1]}x{g.shape[0]})")
  if g.dtype != np.uint8:
    if np.issubdtype(g.dtype, np.floating) and g.max(initial=0) <= 1.0:
      g = np.round(g * 255.0)
    g = np.clip(g, 0, 255).astype(np.uint8)
  return g


@functools.lru_cache(maxsize=1024)
def _triangle_weights(in_size, out_size):
  """[out_size, in_size] float32 weights (cached, read-only: lines of one height or width share them) of tf.image.resize(antialias=True) with the bilinear
  (triangle) kernel, computed in float32 as TensorFlow's ScaleAndTranslate computes them: sample i
  sits at (i + 0.5) / scale with scale = out / in; the kernel widens by 1 / scale when shrinking;
  each row is normalised to sum 1."""
  f32 = np.float32
  scale = f32(out_size) / f32(in_size)
  inv_scale = f32(1.0) / scale
  one_over_kernel_scale = f32(1.0) / max(inv_scale, f32(1.0))
  sample = (np.arange(out_size, dtype=f32) + f32(0.5)) * inv_scale
  pos = (np.arange(in_size, dtype=f32) + f32(0.5))[None, :] - sample[:, None]
  w = np.maximum(f32(0.0), f32(1.0) - np.abs(pos * one_over_kernel_scale)).astype(f32)
  total = w.sum(1, keepdims=True, dtype=f32)
  w = np.where(np.abs(total) >= 1000 * np.finfo(f32).tiny, w * (f32(1.0) / np.where(total != 0, total, 1)), 0)
  inside = (sample >= 0) & (sample <= in_size)
  w = np.where(inside[:, None], w, 0).astype(f32)
  w.flags.writeable = False
  return w


@functools.lru_cache(maxsize=256)
def _triangle_band(in_size, out_size):
  """`_triangle_weights` kept to its band: (first input index [out], weights [out, K]) with K the
  kernel's reach, the same float32 formula and normalisation.  Memory O(out x K), not O(out x in):
  a 6,400-px-wide line's dense matrix was 164 MB (and a 1,000,000 x 1 image's 116 TiB)."""
  f32 = np.float32
  scale = f32(out_size) / f32(in_size)
  inv_scale = f32(1.0) / scale
  support = max(float(inv_scale), 1.0)
  one_over_kernel_scale = f32(1.0) / max(inv_scale, f32(1.0))
  sample = (np.arange(out_size, dtype=f32) + f32(0.5)) * inv_scale
  k = int(math.ceil(2 * support)) + 2
  start = np.floor(sample - f32(support) - f32(0.5)).astype(np.int64)
  idx = start[:, None] + np.arange(k)[None, :]  # [out, K] input columns
  pos = (idx.astype(f32) + f32(0.5)) - sample[:, None]
  w = np.maximum(f32(0.0), f32(1.0) - np.abs(pos * one_over_kernel_scale)).astype(f32)
  w = np.where((idx >= 0) & (idx < in_size), w, f32(0.0))
  total = w.sum(1, keepdims=True, dtype=f32)
  w = np.where(np.abs(total) >= 1000 * np.finfo(f32).tiny, w * (f32(1.0) / np.where(total != 0, total, 1)), 0)
  inside = (sample >= 0) & (sample <= in_size)
  w = np.where(inside[:, None], w, 0).astype(f32)
  idx = np.clip(idx, 0, in_size - 1)
  idx.flags.writeable = False
  w.flags.writeable = False
  return idx, w


def resized_width(h, w, height, stride):
  """The width a line h x w gets at `height` rows (rounded as the tf.data path rounds; at least
  one frame)."""
  return max(stride, int(np.round(np.float32(w) * np.float32(height) / np.float32(h))))


def to_input(gray, height, stride):
  """uint8 [h, w] -> float32 [height, w'] in [0, 1]: the aspect ratio kept (w' =
  `resized_width`), the antialiased bilinear filter of the tf.data path."""
  g = np.asarray(gray, np.float32) / 255.0
  h, w = g.shape
  if w > MAX_ASPECT * h:  # arrays given in-process skip open_image's header checks
    raise ImageError(f"{w}x{h}: {w / h:.0f} times as wide as high, over the limit of {MAX_ASPECT}; crop it into "
                     "lines", "too_large")
  new_w = resized_width(h, w, height, stride)
  rows = _triangle_weights(h, height) @ g  # [height, w]: height x h weights, small
  idx, wts = _triangle_band(w, new_w)
  return np.einsum("hok,ok->ho", rows[:, idx], wts).astype(np.float32)


# ---- device steps ---------------------------------------------------------------------------
def class_argmax(logits):
  """`jnp.argmax(logits, -1)` as int32 (the first maximum), as a max and a min of class indices:
  two plain reductions that XLA's CPU backend vectorises, where argmax's (value, index) reduction
  over 3,790 classes took ~45% of the inference step (BENCHMARKS.md, "Training step")."""
  best = jnp.max(logits, axis=-1, keepdims=True)
  k = logits.shape[-1]
  ids = jnp.min(jnp.where(logits == best, jnp.arange(k, dtype=jnp.int32), k), axis=-1)
  return jnp.minimum(ids, k - 1)  # a NaN row has no maximum: the last class, not out of range


def greedy_step(variables, images, frames, *, model):
  """Greedy decoding's device half: the best class per frame [B, T] int32 and its probability
  [B, T] float32 (collapsing happens on the host)."""
  logits = model.apply(variables, images, frames, train=False)
  best = jnp.max(logits, axis=-1)
  prob = 1.0 / jnp.sum(jnp.exp(logits - best[..., None]), axis=-1)
  return class_argmax(logits), prob


def topk_step(variables, images, frames, *, model, k):
  """Beam search's device half: the k best log-probabilities per frame and their classes
  [B, T, k], and the blank's log-probability [B, T] (the host needs no [B, T, classes] array)."""
  logits = model.apply(variables, images, frames, train=False)
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  vals, ids = jax.lax.top_k(logp, k)
  return vals, ids.astype(jnp.int32), logp[..., 0]


def logits_step(variables, images, frames, *, model):
  return model.apply(variables, images, frames, train=False)


class Steps:
  """The jitted steps of one model.  `mesh` None: one device, any batch size.  A mesh: the batch
  split over its `data` axis (rows a multiple of its size), the variables replicated; the outputs
  stay split in one process (device_get assembles them), replicated across processes."""

  def __init__(self, model, mesh=None):
    self.model, self.mesh = model, mesh
    if mesh is None:
      self._jit = jax.jit
    else:
      from crnn_jax import mesh as mesh_lib
      rep, dat = mesh_lib.replicated(mesh), mesh_lib.data_sharded(mesh)
      out = dat if jax.process_count() == 1 else rep
      self._jit = functools.partial(jax.jit, in_shardings=(rep, dat, dat), out_shardings=out)
    self.greedy = self._jit(functools.partial(greedy_step, model=model))
    self.logits = self._jit(functools.partial(logits_step, model=model))
    self._topk = {}

  def topk(self, k):
    """The jitted `topk_step` for k candidates per frame (compiled on first use)."""
    if k not in self._topk:
      self._topk[k] = self._jit(functools.partial(topk_step, model=self.model, k=k))
    return self._topk[k]

  @property
  def devices(self):
    return 1 if self.mesh is None else self.mesh.size

  def put(self, images, frames):
    """Host rows -> what the steps take (global arrays on a mesh)."""
    if self.mesh is None:
      return images, frames
    from crnn_jax import mesh as mesh_lib
    g = mesh_lib.global_batch({"image": images, "frames": frames}, self.mesh)
    return g["image"], g["frames"]


# ---- results --------------------------------------------------------------------------------
@dataclasses.dataclass
class Reading:
  """One line read.  `confidence`: the mean of the characters' confidences (PaddleOCR's line
  score; for an empty text, the mean probability of the blank); `char_confidences`: per
  character, the highest probability over the frames its best path gives it; `alternatives`:
  the beam's n-best [(text, share)], share = its probability among them (when asked for);
  `timing_ms`: this line's share of its batch's preprocess / model / decode time."""
  text: str
  confidence: float
  char_confidences: list
  decoder: str
  alternatives: list = None
  timing_ms: dict = None
  width: int = 0          # the line's width in pixels at the model's input height
  step: int = None        # the checkpoint step that read it

  def to_dict(self):
    d = dataclasses.asdict(self)
    d["confidence"] = round(float(self.confidence), 6)
    d["char_confidences"] = [round(float(c), 6) for c in self.char_confidences]
    if self.alternatives is not None:
      d["alternatives"] = [{"text": t, "share": round(float(p), 6)} for t, p in self.alternatives]
    if self.timing_ms is not None:
      d["timing_ms"] = {k: round(float(v), 3) for k, v in self.timing_ms.items()}
    return d


def _line_confidence(char_conf, blank_prob):
  if char_conf:
    return float(np.mean(char_conf))
  return float(np.mean(blank_prob)) if len(blank_prob) else 0.0


# ---- the reader -----------------------------------------------------------------------------
class Reader:
  """A model ready to read: config, charset, variables ({"params", "batch_stats"}), steps and the
  decoding settings (`decode.settings` + the LM)."""

  def __init__(self, config, charset, variables, decoding=None, lm=None, step=None, weights="raw",
               mesh=None, workdir=None, steps=None):
    """`steps`: the device steps (default: `Steps` of the config's model); an exported model
    brings its own (`load_exported`)."""
    self.config, self.charset, self.variables = config, charset, variables
    self.step, self.weights, self.workdir = step, weights, workdir
    self.settings = dict(decoding or decode_lib.settings(config))
    self._lm = lm
    if steps is None:
      self.model = model_lib.from_config(config, charset.num_classes)
      self.steps = Steps(self.model, mesh)
      self.stride = model_lib.width_stride(config.model.conv_pools)
    else:
      self.model, self.steps = None, steps
      self.stride = int(config.input.width_multiple)
    self.height = int(config.input.height)
    self.buckets = [int(b) for b in config.input.width_buckets]
    self.max_batch = int(config.eval.batch_size)
    self._warned_widths = set()

  @property
  def lm(self):
    """The character LM beam search fuses (None when lm_weight is 0): the run's, loaded on first use."""
    if self._lm is None and float(self.settings["lm_weight"]) != 0.0 and self.workdir is not None:
      from crnn_jax import lm as lm_lib
      self._lm = lm_lib.for_workdir(self.workdir, self.config.data_dir, int(self.settings["lm_order"]),
                                    self.charset.num_classes)
    return self._lm

  # -- preprocessing
  def prepare(self, image, **open_kw):
    """Any image `open_image` takes -> float32 [height, w] (the model's input row)."""
    return to_input(open_image(image, **open_kw), self.height, self.stride)

  def bucket(self, width):
    """The padded width a line `width` px wide is read at: the smallest bucket that holds it, or
    past the largest, a multiple of EXTRA_BUCKET_STEP (a shape of its own, logged once)."""
    for b in self.buckets:
      if b >= width:
        return b
    extra = int(math.ceil(width / EXTRA_BUCKET_STEP) * EXTRA_BUCKET_STEP)
    if extra not in self._warned_widths:
      self._warned_widths.add(extra)
      log.warning("a line %d px wide at height %d is wider than the largest width bucket (%d px): read in "
                  "full at width %d (a shape compiled on first use)", width, self.height, self.buckets[-1], extra)
    return extra

  def batch_rows(self, n):
    """Rows a batch of n lines is padded to: a power of two (few compiled shapes; small batches
    stay small), at most eval.batch_size, a multiple of the devices."""
    rows = min(self.max_batch, 1 << max(0, (n - 1).bit_length()))
    d = self.steps.devices
    return max(d, -(-rows // d) * d)

  def plan(self, inputs, merge=True):
    """float32 [height, w] lines -> [(indices, padded width)], one device call each.
    merge=False: one call per width bucket (chunks of eval.batch_size).  merge=True: lines sorted by
    bucket are cut into runs that minimise the estimated cost, CALL_COST_PX per call plus rows x width
    of each call (rows padded to `batch_rows`): a few lines of neighbouring buckets are read in one
    call at the widest of their widths rather than in several calls of one or two rows.  A line reads
    the same in a wider call (each line is padded with its own mean grey and masked to its length)."""
    width = [self.bucket(x.shape[1]) for x in inputs]
    order = sorted(range(len(inputs)), key=lambda i: (width[i], i))
    if not merge:
      by_bucket = {}
      for i in order:
        by_bucket.setdefault(width[i], []).append(i)
      return [(idx[s:s + self.max_batch], w) for w, idx in by_bucket.items()
              for s in range(0, len(idx), self.max_batch)]
    n = len(order)
    best, cut = [0.0] + [math.inf] * n, [0] * (n + 1)
    for j in range(1, n + 1):  # best[j]: the cheapest plan for the j narrowest lines
      w = width[order[j - 1]]
      for i in range(max(0, j - self.max_batch), j):
        c = best[i] + CALL_COST_PX + self.batch_rows(j - i) * w
        if c < best[j]:
          best[j], cut[j] = c, i
    groups, j = [], n
    while j > 0:
      groups.append((order[cut[j]:j], width[order[j - 1]]))
      j = cut[j]
    return groups[::-1]

  def batches(self, inputs, merge=True):
    """float32 [height, w] lines -> yields (indices, images [B, H, W, 1], frames [B]), one per call
    of `plan`, padded rows last (frames 1, images 0).  Each line is padded on the right with its mean
    grey, as the tf.data path pads."""
    for chunk, width in self.plan(inputs, merge):
      rows = self.batch_rows(len(chunk))
      images = np.zeros((rows, self.height, width, 1), np.float32)
      frames = np.ones((rows,), np.int32)
      for r, i in enumerate(chunk):
        x = inputs[i]
        images[r, :, :x.shape[1], 0] = x
        images[r, :, x.shape[1]:, 0] = x.mean(dtype=np.float32)
        frames[r] = x.shape[1] // self.stride
      yield chunk, images, frames

  # -- reading
  def decoder_name(self, decoder=None):
    d = decoder or self.settings["decoder"]
    return "beam+lm" if d == "beam" and float(self.settings["lm_weight"]) != 0.0 else d

  def read(self, images, decoder=None, alternatives=0, **open_kw):
    """images (anything `open_image` takes, or float32 [height, w] rows from `prepare` given as
    `Prepared`) -> a Reading each, in order.  `decoder`: "greedy" | "beam" (default: the run's
    config.decode); `alternatives` k > 0: the k best texts of the beam search too (a plain prefix
    search when decoding greedily).  Raises ImageError for an unreadable image: use
    `read_prepared` to handle images one by one."""
    t0 = time.perf_counter()
    inputs = [x.array if isinstance(x, Prepared) else self.prepare(x, **open_kw) for x in images]
    pre_ms = (time.perf_counter() - t0) * 1e3 / max(1, len(inputs))
    out = self.read_prepared(inputs, decoder=decoder, alternatives=alternatives)
    for r in out:
      r.timing_ms["preprocess"] = pre_ms
    return out

  def read_prepared(self, inputs, decoder=None, alternatives=0, merge=True):
    """float32 [height, w] rows -> a Reading each (see `read`; `merge`: see `plan`)."""
    decoder = decoder or self.settings["decoder"]
    if decoder not in ("greedy", "beam"):
      raise UserError(f"decoder {decoder!r} is not one of greedy, beam")
    name = self.decoder_name(decoder)
    out = [None] * len(inputs)
    use_topk = decoder == "beam" or alternatives > 0
    k = int(self.settings["topk"])
    beam_kw = {"beam": max(int(self.settings["beam"]), alternatives), "prune": float(self.settings["prune"]),
               "lm": self.lm if decoder == "beam" else None, "lm_weight": float(self.settings["lm_weight"]),
               "length_bonus": float(self.settings["length_bonus"])}
    plain_kw = dict(beam_kw, lm=None, lm_weight=0.0, length_bonus=0.0)
    for chunk, images, frames in self.batches(inputs, merge):
      t0 = time.perf_counter()
      x, f = self.steps.put(images, frames)
      if use_topk:
        vals, ids, blank = (np.asarray(a) for a in jax.device_get(self.steps.topk(k)(self.variables, x, f)))
      else:
        best, prob = (np.asarray(a) for a in jax.device_get(self.steps.greedy(self.variables, x, f)))
      t1 = time.perf_counter()
      for r, i in enumerate(chunk):
        n = int(frames[r])
        alts = None
        if decoder == "greedy":
          if use_topk:
            best_r, prob_r = ids[r, :, 0], np.exp(vals[r, :, 0])
          else:
            best_r, prob_r = best[r], prob[r]
          classes, conf, _ = decode_lib.greedy_confidences(best_r, prob_r, n)
          blank_p = np.where(best_r[:n] == 0, prob_r[:n], 0.0) if not classes else None
          if alternatives:
            alts = decode_lib.beam_nbest(vals[r], ids[r], blank[r], n, self.charset, **plain_kw)[:alternatives]
        else:
          nbest = decode_lib.beam_nbest(vals[r], ids[r], blank[r], n, self.charset, **beam_kw)
          classes = list(nbest[0][0])
          conf, _ = decode_lib.align_confidences(vals[r], ids[r], blank[r], n, classes)
          blank_p = np.exp(blank[r, :n]) if not classes else None
          alts = nbest[:alternatives] if alternatives else None
        if alts is not None:
          scores = np.asarray([s for _, s in alts], np.float64)
          share = np.exp(scores - scores.max())
          share /= share.sum()
          alts = [(self.charset.text(list(c)), float(p)) for (c, _), p in zip(alts, share)]
        out[i] = Reading(text=self.charset.text(classes), confidence=_line_confidence(conf, blank_p if blank_p is not None else []),
                         char_confidences=[float(c) for c in conf], decoder=name, alternatives=alts,
                         width=int(inputs[i].shape[1]), step=self.step)
      t2 = time.perf_counter()
      for i in chunk:
        out[i].timing_ms = {"preprocess": 0.0, "model": (t1 - t0) * 1e3 / len(chunk),
                            "decode": (t2 - t1) * 1e3 / len(chunk)}
    return out

  def logits(self, inputs, merge=True):
    """float32 [height, w] rows -> their logits, [frames, classes] float32 each (for comparing
    exported models with this one)."""
    out = [None] * len(inputs)
    for chunk, images, frames in self.batches(inputs, merge):
      x, f = self.steps.put(images, frames)
      lg = np.asarray(jax.device_get(self.steps.logits(self.variables, x, f)))
      for r, i in enumerate(chunk):
        out[i] = lg[r, :int(frames[r])]
    return out


@dataclasses.dataclass
class Prepared:
  """A line already turned into the model's input (`Reader.prepare`)."""
  array: np.ndarray


# ---- loading a workdir ----------------------------------------------------------------------
def read_config(workdir):
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise UserError(f"{workdir} is not a training workdir (no config.json); pass the --workdir of crnn-train")
  with open(path, encoding="utf-8") as f:
    return ml_collections.ConfigDict(json.load(f))


def abstract_variables(config, num_classes, sharding=None):
  """{"params", "batch_stats"} as ShapeDtypeStructs (no arrays made), on `sharding` (default: the
  first device)."""
  m = model_lib.from_config(config, num_classes)
  h, w = config.input.height, config.input.width_buckets[0]
  shapes = jax.eval_shape(lambda: m.init({"params": jax.random.PRNGKey(0)}, jnp.zeros((1, h, w, 1), jnp.float32),
                                         jnp.full((1,), w // model_lib.width_stride(config.model.conv_pools),
                                                  jnp.int32), train=False))
  sharding = sharding or jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding),
                      {"params": shapes["params"], "batch_stats": shapes["batch_stats"]})


def resolve_step(workdir, which="best"):
  """`which` (best | latest | a step number) -> (checkpoint folder, step).  best: the best
  validation checkpoint (the latest when the run kept none)."""
  import orbax.checkpoint as ocp
  latest = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  if str(which).isdigit():
    step = int(which)
    if step not in latest.all_steps():
      raise UserError(f"{workdir} keeps no checkpoint of step {step}; it keeps steps "
                      f"{sorted(latest.all_steps()) or 'none'} (train.keep_checkpoints sets how many)")
    return latest, step
  if which not in ("best", "latest"):
    raise UserError(f"checkpoint {which!r}: give best, latest or a step number")
  if which == "best" and os.path.isdir(os.path.join(workdir, "best")):
    best = ocp.CheckpointManager(os.path.join(workdir, "best"))
    if best.latest_step() is not None:
      return best, best.latest_step()  # the best manager keeps one checkpoint
  step = latest.latest_step()
  if step is None:
    raise UserError(f"{workdir} holds no checkpoint yet")
  return latest, step


def quiet_orbax_leftovers():
  """When orbax fails to read a damaged checkpoint, the reads it had in flight report themselves on
  other threads and at collection -- "Exception ignored in: <coroutine ...>", "Task exception was
  never retrieved", "Event loop is closed" -- a traceback each (dozens of screens), some of them
  before the failure reaches our handler.  Installed before a restore is tried: from then on such
  leftovers of orbax/tensorstore are dropped (the failure itself is reported once, by the caller);
  anything else goes to the previous hooks."""
  import sys
  prev = sys.unraisablehook
  if getattr(prev, "_crnn_quiet", False):
    return

  def hook(u):
    tb, files, names = u.exc_traceback, [], []
    while tb is not None:
      files.append(tb.tb_frame.f_code.co_filename)
      names.append(tb.tb_frame.f_code.co_name)
      tb = tb.tb_next
    if any("/orbax/" in f for f in files) or "orbax" in repr(u.object):
      return
    # tensorstore's reads still in flight finish on its own threads and hand their results to the
    # asyncio loop orbax ran them on, closed by then: each refusal is reported as unraisable with
    # no object.  Exactly that (RuntimeError from call_soon_threadsafe) is dropped.
    if (u.exc_type is RuntimeError and str(u.exc_value) == "Event loop is closed"
        and "call_soon_threadsafe" in names):
      return
    prev(u)
  hook._crnn_quiet = True
  sys.unraisablehook = hook

  # The orbax tasks and tensorstore futures that failed alongside the first one are logged by
  # asyncio when collected ("Task/Future exception was never retrieved", a traceback and the whole
  # tensorstore spec each).
  def drop_orbax_tasks(record):
    msg = record.getMessage()
    return not ("exception was never retrieved" in msg
                and any(k in msg for k in ("/orbax/", "TensorStore", "OCDBT", "tensorstore")))
  logging.getLogger("asyncio").addFilter(drop_orbax_tasks)


def restore_intact(workdir, checkpoint, config, num_classes, weights="ema", sharding=None):
  """`restore_variables` of the checkpoint `resolve_step` names; when that one cannot be restored (a
  file missing or truncated) and it was asked for as best or latest, the newest intact step kept in
  checkpoints/ instead, with a warning naming the damaged one.  -> (variables, weights used, step).
  A damaged step asked for by number, or no intact step at all: one UserError line."""
  import orbax.checkpoint as ocp
  manager, step = resolve_step(workdir, checkpoint)
  tries = [(manager, step)]
  if not str(checkpoint).isdigit():
    kept = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
    tries += [(kept, s) for s in sorted(kept.all_steps(), reverse=True)
              if not (os.path.samefile(str(kept.directory), str(manager.directory)) and s == step)]
  damaged = []
  quiet_orbax_leftovers()
  for m, s in tries:
    try:
      variables, used = restore_variables(m, s, config, num_classes, weights, sharding)
    except UserError:
      raise
    except Exception as e:  # noqa: BLE001 -- orbax/tensorstore raise many types for a damaged checkpoint
      import gc
      gc.collect()
      first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
      damaged.append(f"step {s} in {m.directory} ({type(e).__name__}: {first})")
      if len(tries) > len(damaged):
        log.warning("checkpoint step %s in %s cannot be restored (%s: %s); trying the newest intact step kept "
                    "in checkpoints/ instead", s, m.directory, type(e).__name__, first)
      continue
    if damaged:
      log.warning("read checkpoint step %s instead of the damaged %s", s, "; ".join(damaged))
    return variables, used, s
  raise UserError(f"no checkpoint of {workdir} could be restored: {'; '.join(damaged)}. A damaged checkpoint "
                  "folder can be deleted; training again resumes from the newest intact one")


def restore_variables(manager, step, config, num_classes, weights="ema", sharding=None):
  """-> ({"params", "batch_stats"}, "ema" | "raw"): only those arrays are read from the
  checkpoint (orbax partial restore), the EMA ones when `weights` is "ema" and the run kept them."""
  import orbax.checkpoint as ocp
  if weights not in ("ema", "raw"):
    raise UserError(f"weights={weights!r}: choose ema or raw")
  use = "ema" if weights == "ema" and float(config.train.get("ema_decay", 0.0)) > 0 else "raw"
  abstract = abstract_variables(config, num_classes, sharding)
  item = {"ema": abstract} if use == "ema" else abstract
  restored = manager.restore(step, args=ocp.args.PyTreeRestore(
      item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True))
  variables = restored["ema"] if use == "ema" else restored
  bad = [jax.tree_util.keystr(path) for path, x in jax.tree_util.tree_leaves_with_path(variables)
         if not bool(np.all(np.isfinite(np.asarray(x))))]
  if bad:
    raise UserError(f"checkpoint step {step} in {manager.directory} holds non-finite {use} weights ({len(bad)} "
                    f"arrays, e.g. {bad[0]}): the run diverged before it was saved; read an earlier step "
                    "(--checkpoint STEP) or train again with a lower learning rate")
  return variables, use


def load(workdir, checkpoint="best", weights="ema", decoding=None, mesh=None):
  """A Reader for `workdir`'s checkpoint (best | latest | a step) with its EMA weights (or "raw").
  `decoding`: overrides of the run's config.decode (keys of `decode.DEFAULTS`; None values
  ignored).  The LM, when the decoding uses one, is the run's (W/lm<order>.json, built from the
  run's training lines the first time)."""
  workdir = os.path.abspath(workdir)
  config = read_config(workdir)
  charset = Charset.read(os.path.join(workdir, "chinese.txt"))
  sharding = None
  if mesh is not None:
    from crnn_jax import mesh as mesh_lib
    sharding = mesh_lib.replicated(mesh)
  variables, used, step = restore_intact(workdir, checkpoint, config, charset.num_classes, weights, sharding)
  reader = Reader(config, charset, variables, decoding=decode_lib.settings(config, decoding), step=int(step),
                  weights=used, mesh=mesh, workdir=workdir)
  if reader.settings["decoder"] == "beam":
    reader.lm  # noqa: B018 -- load it now: a missing LM or training text is an error at load time
  return reader


class ExportedSteps:
  """`Steps` over a `jax.export` artifact (crnn-export's stablehlo/model.jax_exported): the
  artifact gives the logits, numpy the rest; any batch size, one device."""

  devices = 1
  mesh = None

  def __init__(self, exported):
    self.exported = exported

  def logits(self, variables, images, frames):
    return np.asarray(self.exported.call(images, frames))

  def greedy(self, variables, images, frames):
    lg = self.logits(variables, images, frames)
    best = lg.max(-1)
    return lg.argmax(-1).astype(np.int32), 1.0 / np.exp(lg - best[..., None]).sum(-1)

  def topk(self, k):
    def fn(variables, images, frames):
      lg = self.logits(variables, images, frames).astype(np.float64)
      logp = lg - lg.max(-1, keepdims=True)
      logp = (logp - np.log(np.exp(logp).sum(-1, keepdims=True))).astype(np.float32)
      ids = np.argsort(-logp, axis=-1, kind="stable")[..., :k].astype(np.int32)
      return np.take_along_axis(logp, ids, -1), ids, logp[..., 0]
    return fn

  def put(self, images, frames):
    return images, frames


def load_exported(model_dir, decoding=None, batch_size=32):
  """A Reader over crnn-export's output folder (its contract.json, chinese.txt and
  stablehlo/model.jax_exported): no workdir, no checkpoint, no crnn-jax model code on the device
  path.  Decoding: greedy, or beam search without an LM (the LM belongs to a workdir)."""
  from jax import export as jexport
  model_dir = pathlib.Path(model_dir)
  path = model_dir / "stablehlo" / "model.jax_exported"
  if not (model_dir / "contract.json").exists() or not path.exists():
    raise UserError(f"{model_dir} is not crnn-export output with a StableHLO model (contract.json, "
                    "stablehlo/model.jax_exported): run crnn-export --workdir W --out DIR first")
  contract = json.loads((model_dir / "contract.json").read_text(encoding="utf-8"))
  charset = Charset.read(model_dir / "chinese.txt")
  if charset.num_classes != contract["num_classes"]:
    raise UserError(f"{model_dir}/chinese.txt has {len(charset)} characters; contract.json says "
                    f"{contract['num_classes']} classes (characters + blank)")
  inp = contract["input"]
  config = ml_collections.ConfigDict({
      "input": {"height": inp["height"], "width_multiple": inp["width_multiple"],
                "width_buckets": list(inp["width_buckets"])},
      "eval": {"batch_size": batch_size}, "decode": {"decoder": "greedy"}, "data_dir": None})
  settings = decode_lib.settings(config, dict(decoding or {}, lm_weight=0.0))
  exported = jexport.deserialize(path.read_bytes())
  return Reader(config, charset, None, decoding=settings, step=contract.get("checkpoint_step"),
                weights=contract.get("weights", "raw"), steps=ExportedSteps(exported))


def collect(paths, suffixes=(".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")):
  """Files and folders (searched recursively, sorted) -> image paths.  A folder holding no image
  file (by its suffix) is a UserError naming it and the suffixes (it once gave no output and exit 0)."""
  files = []
  for p in map(pathlib.Path, paths):
    if p.is_dir():
      found = sorted(f for f in p.rglob("*") if f.suffix.lower() in suffixes and f.is_file())
      if not found:
        raise UserError(f"{p} holds no image files (searched recursively for {', '.join(suffixes)})")
      files.extend(found)
    else:
      files.append(p)
  return files
