"""Rendering one text line into an image: FreeType (through Pillow) + seeded augmentation.

Every random choice comes from the numpy Generator passed in, which the caller seeds from
(seed, split, line_id, variant): an image depends on nothing else, so any number of worker
processes produces the same bytes.  `RenderConfig` lists every knob with its default; the CLI
builds its flags from the same fields (`datagen render --help`).

The pipeline for one image:
  1. draw the characters one by one (font size, character spacing, optional stroke = bold)
     into an alpha mask, on the ideographic em box (not the ink box, so "一" is as tall a
     line as "龍"; not the font's ascent + descent, which differ between fonts);
  2. one perspective transform that combines shear, rotation and corner jitter, mapping the
     line box plus random margins onto the output canvas;
  3. background (flat, gradient or texture) and text colour with a minimum contrast, in
     grayscale or colour; optional inversion (light on dark);
  4. optional stroke-weight change and ruled lines (mask), drop shadow, uneven illumination, and a
     turn of the finished image with black corner wedges;
  5. blur, low-resolution resampling, Gaussian noise;
  6. JPEG at a random quality: the stored bytes are exactly what the renderer produced.
"""
import dataclasses
import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


# CJK glyphs are designed in an em square whose top is ~0.88 em above the baseline (and bottom
# ~0.12 em below).  Using it as the line box, rather than the font's ascent + descent (1.45 em
# for Noto Sans CJK, 1.0 em for the Arphic fonts), gives every font the same glyph-to-height ratio.
EM_ASCENT = 0.88


def knob(default, help, lo=0.0, hi=None):  # noqa: A002 - `help` is the argparse word
  """A RenderConfig field: its default, its --help text and its allowed range [lo, hi] (checked by
  datagen's flag parser; a probability is in [0, 1])."""
  return dataclasses.field(default=default, metadata={"help": help, "lo": lo, "hi": hi})


@dataclasses.dataclass(frozen=True)
class RenderConfig:
  """Augmentation knobs.  Ranges are sampled uniformly; probabilities are per image.

  A knob added since the first round (edge_prob, wedge_prob, weight_prob, rule_prob, shadow_prob,
  shade_prob) draws random numbers only when it is on: at 0 the image is byte for byte what the
  renderer drew before the knob existed (tests/test_render_knobs.py).  Defaults are the robust
  setting of issue 18 (harsher than the first round's, which were tuned on our own test split);
  BENCHMARKS.md, "Robust reading", has the measurements on the other-world validation set.
  """
  size_min: int = knob(28, "smallest font size in pixels", lo=6, hi=400)
  size_max: int = knob(40, "largest font size in pixels", lo=6, hi=400)
  spacing_min: float = knob(-0.05, "smallest extra space between characters, x font size", lo=-0.5, hi=3.0)
  spacing_max: float = knob(0.5, "largest extra space between characters, x font size", lo=-0.5, hi=3.0)
  margin_x_max: float = knob(1.0, "left/right margin drawn from [0.02, this] x font size", lo=0.02, hi=10.0)
  margin_y_max: float = knob(0.45, "top/bottom margin drawn from [0.02, this] x font size", lo=0.02, hi=5.0)
  edge_prob: float = knob(0.25, "probability, per side, that the text touches (or is cut by up to 4 percent of "
                                "the font size at) the image's left/right edge; half of it for top/bottom", lo=0.0, hi=1.0)
  rotate_deg: float = knob(3.0, "rotation drawn from [-this, this] degrees", lo=0.0, hi=45.0)
  shear_max: float = knob(0.25, "horizontal shear (italic slant) drawn from [-this, this]", lo=0.0, hi=1.0)
  perspective: float = knob(0.06, "corner jitter of the perspective warp, x line height", lo=0.0, hi=0.5)
  wedge_prob: float = knob(0.1, "probability of turning the finished image by up to wedge_deg without "
                                "growing it, black corner wedges (the original's gen_pic.py)", lo=0.0, hi=1.0)
  wedge_deg: float = knob(2.5, "largest turn of wedge_prob, degrees", lo=0.0, hi=45.0)
  stroke_prob: float = knob(0.15, "probability of a 1-pixel stroke (bold look)", lo=0.0, hi=1.0)
  weight_prob: float = knob(0.3, "probability of a stroke-weight change (thinner or bolder by up to weight_max)", lo=0.0, hi=1.0)
  weight_max: float = knob(0.6, "largest stroke-weight change in pixels (erode/dilate of the glyph mask)", lo=0.0, hi=3.0)
  rule_prob: float = knob(0.1, "probability of ruled lines in the text colour: underline, overline or a box", lo=0.0, hi=1.0)
  gradient_prob: float = knob(0.25, "probability of a linear-gradient background", lo=0.0, hi=1.0)
  texture_prob: float = knob(0.35, "probability of a paper-like noise texture background", lo=0.0, hi=1.0)
  texture_amp: float = knob(30.0, "strength of gradient/texture (grey levels)", lo=0.0, hi=255.0)
  min_contrast: float = knob(90.0, "least luminance difference between text and background", lo=0.0, hi=255.0)
  invert_prob: float = knob(0.1, "probability of light text on a dark background", lo=0.0, hi=1.0)
  shadow_prob: float = knob(0.1, "probability of a soft drop shadow behind the text", lo=0.0, hi=1.0)
  shade_prob: float = knob(0.25, "probability of uneven illumination (a smooth light falloff across the image)", lo=0.0, hi=1.0)
  shade_amp: float = knob(0.35, "darkest point of the illumination falloff, 1 - this", lo=0.0, hi=1.0)
  blur_prob: float = knob(0.4, "probability of a Gaussian blur", lo=0.0, hi=1.0)
  blur_max: float = knob(1.3, "largest blur radius in pixels", lo=0.0, hi=10.0)
  lowres_prob: float = knob(0.25, "probability of down-then-up sampling (low resolution look)", lo=0.0, hi=1.0)
  lowres_min: float = knob(0.5, "smallest down-sampling factor of the low-resolution look", lo=0.05, hi=1.0)
  noise_prob: float = knob(0.5, "probability of additive Gaussian noise", lo=0.0, hi=1.0)
  noise_max: float = knob(14.0, "largest noise standard deviation (grey levels)", lo=0.0, hi=128.0)
  jpeg_min: int = knob(20, "lowest JPEG quality", lo=1, hi=100)
  jpeg_max: int = knob(95, "highest JPEG quality", lo=1, hi=100)
  color: bool = knob(False, "store RGB images (colour text/background) instead of grayscale")
  mild_prob: float = knob(0.3, "probability that an image is drawn with the first round's milder knobs "
                               "(render.FIRST_ROUND) instead of these: easy examples beside the harsh ones", lo=0.0, hi=1.0)


# The first round's defaults (tuned on our own test split, made milder to reach its hour's target):
# `RenderConfig(**FIRST_ROUND)` draws what datagen drew before issue 18.
FIRST_ROUND = dict(spacing_max=0.35, margin_x_max=0.6, margin_y_max=0.35, edge_prob=0.0, rotate_deg=2.0,
                   wedge_prob=0.0, weight_prob=0.0, rule_prob=0.0, texture_prob=0.3, texture_amp=20.0,
                   min_contrast=100.0, shadow_prob=0.0, shade_prob=0.0, blur_prob=0.35, blur_max=0.8,
                   lowres_prob=0.1, lowres_min=0.6, noise_max=8.0, jpeg_min=60, mild_prob=0.0)


def _on(rng, p):
  """True with probability p; draws nothing when p is 0 (so a knob at 0 changes no later draw)."""
  return p > 0 and rng.random() < p


def _homography(src, dst):
  """3x3 H with H @ src_i ~ dst_i for four point pairs."""
  a, b = [], []
  for (x, y), (u, v) in zip(src, dst):
    a.append([x, y, 1, 0, 0, 0, -u * x, -u * y]); b.append(u)
    a.append([0, 0, 0, x, y, 1, -v * x, -v * y]); b.append(v)
  h = np.linalg.solve(np.asarray(a, np.float64), np.asarray(b, np.float64))
  return np.append(h, 1.0).reshape(3, 3)


def _colours(rng, cfg):
  """(background, text) luminance or RGB triples, at least `min_contrast` apart in luminance."""
  bg_l = rng.uniform(cfg.min_contrast + 40, 255)
  fg_l = rng.uniform(0, bg_l - cfg.min_contrast)
  if rng.random() < cfg.invert_prob:
    bg_l, fg_l = 255 - bg_l, 255 - fg_l
  if not cfg.color:
    return np.array([bg_l]), np.array([fg_l])

  def tint(lum):
    # A colour of the wanted luminance: a random hue scaled to it, clipped to [0, 255].
    hue = rng.uniform(0.5, 1.5, size=3)
    c = hue * lum / max(1e-3, float(hue @ [0.299, 0.587, 0.114]))
    return np.clip(c, 0, 255)
  return tint(bg_l), tint(fg_l)


def _background(rng, cfg, h, w, base):
  bg = np.broadcast_to(base.astype(np.float32), (h, w, base.size)).copy()
  r = rng.random()
  if r < cfg.gradient_prob:
    ramp = np.linspace(-1, 1, w if rng.random() < 0.7 else h, dtype=np.float32)
    ramp = ramp[None, :, None] if ramp.size == w else ramp[:, None, None]
    bg += ramp * rng.uniform(-cfg.texture_amp, cfg.texture_amp)
  elif r < cfg.gradient_prob + cfg.texture_prob:
    small = rng.normal(0, 1, size=(max(2, h // 6), max(2, w // 6))).astype(np.float32)
    tex = Image.fromarray(small, mode="F").resize((w, h), Image.Resampling.BICUBIC)
    fine = rng.normal(0, 0.35, size=(h, w)).astype(np.float32)
    bg += ((np.asarray(tex) + fine) * (cfg.texture_amp / 2))[..., None]
  return bg


def _stroke_weight(mask, delta):
  """Glyph mask thinner (delta < 0) or bolder (delta > 0) by about |delta| pixels: the antialiased
  mask is blurred by |delta| and re-thresholded below (bolder) or above (thinner) its middle."""
  soft = np.asarray(mask.filter(ImageFilter.GaussianBlur(abs(delta))), np.float32) / 255.0
  centre = 0.5 - 0.35 * math.copysign(min(1.0, abs(delta)), delta)
  out = np.clip((soft - centre) * 2.5 + 0.5, 0.0, 1.0)
  return Image.fromarray((out * 255 + 0.5).astype(np.uint8))


def _rules(draw, rng, box, width):
  """Ruled lines in the mask around the line box (x0, y0, x1, y1): underline, overline or a box."""
  x0, y0, x1, y1 = box
  gap = rng.uniform(0.04, 0.2) * (y1 - y0)
  kind = rng.integers(3)
  if kind in (0, 2):
    draw.line([(x0 - gap, y1 + gap), (x1 + gap, y1 + gap)], fill=255, width=width)
  if kind in (1, 2):
    draw.line([(x0 - gap, y0 - gap), (x1 + gap, y0 - gap)], fill=255, width=width)
  if kind == 2:
    draw.line([(x0 - gap, y0 - gap), (x0 - gap, y1 + gap)], fill=255, width=width)
    draw.line([(x1 + gap, y0 - gap), (x1 + gap, y1 + gap)], fill=255, width=width)


def _illumination(rng, h, w, amp):
  """[h, w, 1] light level in [1 - amp, 1]: a linear falloff or a soft spot, random direction."""
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
  if rng.random() < 0.5:
    ang = rng.uniform(0, 2 * math.pi)
    t = (xx / max(w, 1) - 0.5) * math.cos(ang) + (yy / max(h, 1) - 0.5) * math.sin(ang)
    field = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
  else:
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    r = np.hypot((xx - cx) / max(w, 1), (yy - cy) / max(h, 1) * (h / max(w, 1)))
    field = np.clip(r / max(1e-6, float(r.max())), 0, 1)
  return (1.0 - amp * rng.uniform(0.4, 1.0) * field)[..., None]


def render_line(text: str, font, rng: np.random.Generator, cfg: RenderConfig):
  """Renders `text` with a loaded `PIL.ImageFont.FreeTypeFont`.

  Returns (jpeg bytes, height, width, params dict).  The caller picks the font (and its size,
  see `draw_size`) so that fonts can be cached across images.
  """
  if _on(rng, cfg.mild_prob):
    mild = dataclasses.replace(cfg, **FIRST_ROUND)
    # kept in order against the user's other ends (--spacing-min 0.5 or --jpeg-max 50 once made
    # numpy's uniform fail on high < low)
    cfg = dataclasses.replace(mild, spacing_max=max(mild.spacing_max, cfg.spacing_min),
                              jpeg_min=min(mild.jpeg_min, cfg.jpeg_max))
  size = font.size
  spacing = rng.uniform(cfg.spacing_min, cfg.spacing_max) * size
  stroke = 1 if rng.random() < cfg.stroke_prob else 0
  advances = [font.getlength(c) for c in text]
  line_w = sum(advances) + spacing * (len(text) - 1) + 2 * stroke
  line_h = size + 2 * stroke  # the ideographic em box, the same for every font
  pad = int(math.ceil(0.6 * size)) + 2
  mask = Image.new("L", (int(math.ceil(line_w)) + 2 * pad, line_h + 2 * pad), 0)
  draw = ImageDraw.Draw(mask)
  x = float(pad + stroke)
  baseline = pad + stroke + EM_ASCENT * size
  for c, adv in zip(text, advances):
    draw.text((x, baseline), c, font=font, fill=255, stroke_width=stroke, stroke_fill=255, anchor="ls")
    x += adv + spacing
  weight = rng.uniform(-cfg.weight_max, cfg.weight_max) if _on(rng, cfg.weight_prob) else 0.0
  if weight:
    mask = _stroke_weight(mask, weight)
  x0, y0, x1, y1 = pad, pad, pad + line_w, pad + line_h
  if _on(rng, cfg.rule_prob):
    _rules(ImageDraw.Draw(mask), rng, (x0, y0, x1, y1), max(1, int(round(size * rng.uniform(0.03, 0.08)))))

  # Geometry: where the line box's corners land.  Shear about the box's middle row, rotate
  # about its centre, then jitter each corner (perspective).
  src = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)
  cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
  shear = rng.uniform(-cfg.shear_max, cfg.shear_max)
  theta = math.radians(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg))
  dst = src - [cx, cy]
  dst[:, 0] -= shear * dst[:, 1]
  rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
  dst = dst @ rot.T + rng.uniform(-cfg.perspective, cfg.perspective, size=(4, 2)) * line_h
  margins = rng.uniform(0.02, [cfg.margin_x_max, cfg.margin_y_max, cfg.margin_x_max,
                               cfg.margin_y_max]) * size
  if cfg.edge_prob > 0:
    # Text that touches the image's edge (or is cut a little), as crops from a detector or the
    # original's gen_pic.py (which draws from x = 0) make: per side, left/right at edge_prob.
    touch = rng.random(4) < np.array([1.0, 0.5, 1.0, 0.5]) * cfg.edge_prob
    margins = np.where(touch, rng.uniform(-0.04, 0.0, size=4) * size, margins)
  dst -= dst.min(axis=0)
  dst += margins[:2]
  out_w = max(1, int(math.ceil(dst[:, 0].max() + margins[2])))
  out_h = max(1, int(math.ceil(dst[:, 1].max() + margins[3])))
  inv = _homography(dst, src)  # PIL wants output -> input
  mask = mask.transform((out_w, out_h), Image.Transform.PERSPECTIVE, tuple((inv / inv[2, 2]).ravel()[:8]),
                        resample=Image.Resampling.BILINEAR)

  bg_c, fg_c = _colours(rng, cfg)
  bg = _background(rng, cfg, out_h, out_w, bg_c)
  alpha = np.asarray(mask, np.float32)[..., None] / 255.0
  if _on(rng, cfg.shadow_prob):
    # A soft copy of the text, offset down-right, halfway between background and text colour.
    off = rng.uniform(0.04, 0.12, size=2) * size
    shadow = mask.transform(mask.size, Image.Transform.AFFINE, (1, 0, -off[0], 0, 1, -off[1]),
                            resample=Image.Resampling.BILINEAR).filter(
                                ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0)))
    sa = np.asarray(shadow, np.float32)[..., None] / 255.0 * rng.uniform(0.3, 0.7)
    bg = bg * (1 - sa) + (bg + fg_c.astype(np.float32)) / 2 * sa
  img = bg * (1 - alpha) + fg_c.astype(np.float32) * alpha
  if _on(rng, cfg.shade_prob):
    img = img * _illumination(rng, out_h, out_w, cfg.shade_amp)
  img = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8).squeeze(-1) if not cfg.color
                        else np.clip(img, 0, 255).astype(np.uint8))
  wedge = rng.uniform(-cfg.wedge_deg, cfg.wedge_deg) if _on(rng, cfg.wedge_prob) else 0.0
  if wedge:
    img = img.rotate(wedge, resample=Image.Resampling.BICUBIC, expand=False, fillcolor=0)

  blur = rng.uniform(0.3, cfg.blur_max) if rng.random() < cfg.blur_prob else 0.0
  if blur:
    img = img.filter(ImageFilter.GaussianBlur(blur))
  lowres = rng.uniform(cfg.lowres_min, 0.8) if rng.random() < cfg.lowres_prob else 1.0
  if lowres < 1.0:
    small = (max(1, int(out_w * lowres)), max(1, int(out_h * lowres)))
    img = img.resize(small, Image.Resampling.BILINEAR).resize((out_w, out_h), Image.Resampling.BILINEAR)
  noise = rng.uniform(2, cfg.noise_max) if rng.random() < cfg.noise_prob else 0.0
  if noise:
    arr = np.asarray(img, np.float32)
    arr = arr + rng.normal(0, noise, size=arr.shape).astype(np.float32)
    img = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))
  quality = int(rng.integers(cfg.jpeg_min, cfg.jpeg_max + 1))
  buf = io.BytesIO()
  img.save(buf, format="JPEG", quality=quality)
  params = dict(size=size, spacing=round(spacing / size, 4), stroke=stroke, shear=round(shear, 4),
                rotate=round(math.degrees(theta), 3), blur=round(blur, 3), lowres=round(lowres, 3),
                noise=round(noise, 3), jpeg=quality, weight=round(weight, 3), wedge=round(wedge, 3))
  return buf.getvalue(), out_h, out_w, params


def draw_size(rng: np.random.Generator, cfg: RenderConfig) -> int:
  """The font size for one image (drawn first, so the caller can fetch a cached font)."""
  return int(rng.integers(cfg.size_min, cfg.size_max + 1))


def frames_needed(text: str) -> int:
  """CTC's minimum frame count: one per character plus a blank between equal neighbours."""
  return len(text) + sum(1 for a, b in zip(text, text[1:]) if a == b)


def frames_available(height: int, width: int, target_height: int, frames_per_pixel: float) -> int:
  """Frames the network emits for an image resized to `target_height`, keeping aspect ratio."""
  resized_w = max(1, int(round(width * target_height / height)))
  return int(math.floor(resized_w * frames_per_pixel))
