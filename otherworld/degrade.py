"""The harsh degradation model of the other world: a line as a scan or a phone photo sees it.

Written apart from datagen's augmentation (datagen/render.py) and sharing no function with it:
the text is drawn by Skia (otherworld/draw.py) into a coverage mask through a canvas matrix
(rotation, slant, slight perspective), the paper by Skia's Perlin-noise and gradient shaders, the
blur by Skia's image filter, the JPEG by Skia's encoder; the rest is numpy.  Every choice comes
from the numpy Generator passed in.

One degraded image combines, each drawn per image:
  paper     a coloured background, flat, gradient, fractal-noise paper or turbulence texture,
            sometimes a second colour band (a form field, a sticker edge), light or dark
  ink       a colour at least `MIN_CONTRAST` grey levels from the paper's mean luminance
  weight    bolder (stroke around the glyphs) or thinner (coverage raised to a power)
  geometry  rotation up to 3 degrees, slant, slight perspective; uneven margins, some zero
  clutter   ruled lines, a soft shadow, uneven illumination (a falloff or a spot)
  camera    turned whole with black corner wedges (as the original's gen_pic.py did)
  optics    Gaussian blur (Skia), down-sampling to 19-28 px of text height (kept small, as a
            low-resolution photo is), colour sensor noise, salt-and-pepper specks
  storage   JPEG at quality 12-40 (Skia's encoder; >= 20 for text under 23 px)
"""
import math

import numpy as np

from otherworld import draw

MIN_CONTRAST = 70.0  # luminance, 0..255: every degraded line stays legible to a person


def _lum(c):
  return float(np.dot(c, [0.299, 0.587, 0.114]))


def _colours(rng):
  """(paper RGB, ink RGB), float, at least MIN_CONTRAST apart in luminance."""
  for _ in range(100):
    dark_paper = rng.random() < 0.15
    paper = rng.uniform(0, 90, 3) if dark_paper else rng.uniform(140, 255, 3)
    ink = rng.uniform(150, 255, 3) if dark_paper else rng.uniform(0, 110, 3)
    if abs(_lum(paper) - _lum(ink)) >= MIN_CONTRAST + 30:  # the texture takes up to ~30 of it
      return paper, ink
  return np.array([245.0, 245, 240]), np.array([20.0, 20, 20])


def _paper(rng, h, w, base):
  """[h, w, 3] float background around colour `base`."""
  skia = draw._skia()
  kind = rng.choice(["flat", "gradient", "fractal", "turbulence"], p=[0.2, 0.25, 0.35, 0.2])
  bg = np.broadcast_to(base, (h, w, 3)).astype(np.float32).copy()
  if kind == "gradient":
    other = np.clip(base + rng.uniform(-60, 60, 3), 0, 255)
    t = np.linspace(0, 1, w, dtype=np.float32)[None, :, None] if rng.random() < 0.7 else \
        np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    bg = bg * (1 - t) + other.astype(np.float32) * t
  elif kind in ("fractal", "turbulence"):
    freq = float(rng.uniform(0.02, 0.25))
    make = skia.PerlinNoiseShader.MakeFractalNoise if kind == "fractal" else skia.PerlinNoiseShader.MakeTurbulence
    shader = make(freq, freq * rng.uniform(0.5, 2.0), int(rng.integers(1, 5)), float(rng.uniform(0, 1000)))
    surface = skia.Surface(w, h)
    surface.getCanvas().drawPaint(skia.Paint(Shader=shader))
    tex = draw.rgb(surface).astype(np.float32).mean(axis=2, keepdims=True) / 255.0 - 0.5
    bg = bg + tex * rng.uniform(30, 90) * rng.uniform(0.6, 1.0, 3)
  if rng.random() < 0.15:  # a band of another colour across part of the line
    y0, y1 = sorted(rng.integers(0, h + 1, 2))
    bg[y0:y1] = bg[y0:y1] * 0.5 + np.clip(base + rng.uniform(-40, 40, 3), 0, 255) * 0.5
  return bg


def _mask(text, path, index, layout, rng, pad):
  """(coverage of the text in [0, 1], [h, w], what it drew): drawn through a rotation/slant/
  perspective matrix; bolder strokes by a stroke width, thinner by a power of the coverage."""
  skia = draw._skia()
  font = draw.make_font(path, index, layout, embolden=rng.random() < 0.15)
  blob, width, height, _ = draw.text_blob(text, font, layout)
  left, top, right, bottom = layout.margins
  angle = float(rng.uniform(-3, 3)) if rng.random() < 0.6 else 0.0  # (was 4: PP-OCRv6 missed long lines past 3.5)
  skew = float(rng.uniform(-0.2, 0.2)) if rng.random() < 0.25 else 0.0
  # Where the text box lands: its corners through the matrix, then the margins around them.
  m = skia.Matrix()
  m.setRotate(angle, width / 2, height / 2)
  m.preSkew(skew, 0, width / 2, height / 2)
  if rng.random() < 0.3:
    persp = skia.Matrix()
    d = rng.uniform(-0.08, 0.08, (4, 2)) * height
    src = [skia.Point(0, 0), skia.Point(width, 0), skia.Point(width, height), skia.Point(0, height)]
    dst = [skia.Point(p.x() + float(dx), p.y() + float(dy)) for p, (dx, dy) in zip(src, d)]
    persp.setPolyToPoly(src, dst)
    m.preConcat(persp)
  corners = [m.mapXY(x, y) for x, y in ((0, 0), (width, 0), (width, height), (0, height))]
  xs, ys = [p.x() for p in corners], [p.y() for p in corners]
  w = int(math.ceil(max(xs) - min(xs) + left + right)) + 2 * pad
  h = int(math.ceil(max(ys) - min(ys) + top + bottom)) + 2 * pad
  surface = skia.Surface(max(w, 1), max(h, 1))
  canvas = surface.getCanvas()
  canvas.clear(skia.ColorBLACK)
  canvas.translate(pad + left - min(xs), pad + top - min(ys))
  canvas.concat(m)
  paint = skia.Paint(AntiAlias=True, Color=skia.ColorWHITE)
  weight = rng.random()
  if weight < 0.2:  # bolder
    paint.setStyle(skia.Paint.kStrokeAndFill_Style)
    paint.setStrokeWidth(float(rng.uniform(0.02, 0.07)) * layout.size)
  canvas.drawTextBlob(blob, 0, 0, paint)
  if rng.random() < 0.12:  # a ruled line under (or over) the text
    y = height + float(rng.uniform(0.02, 0.2)) * layout.size if rng.random() < 0.7 else \
        -float(rng.uniform(0.02, 0.15)) * layout.size
    rule = skia.Paint(AntiAlias=True, Color=skia.ColorWHITE, StrokeWidth=float(rng.uniform(1, 3)))
    canvas.drawLine(-left * 0.8, y, width + right * 0.8, y, rule)
  cov = draw.rgb(surface)[..., 0].astype(np.float32) / 255.0
  thin = 0.0
  if 0.2 <= weight < 0.4:  # thinner: antialiased edges fade
    thin = float(rng.uniform(1.5, 2.6))
    cov = cov ** thin
  return cov, dict(angle=round(angle, 2), skew=round(skew, 3), bold=weight < 0.2, thin=round(thin, 2))


def _skia_image(img):
  """A uint8 RGB array as an opaque skia.Image."""
  skia = draw._skia()
  rgba = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
  return skia.Image.fromarray(np.ascontiguousarray(rgba), colorType=skia.ColorType.kRGBA_8888_ColorType)


def _blur(img, sigma):
  """Skia's Gaussian blur image filter over a uint8 RGB image."""
  skia = draw._skia()
  h, w = img.shape[:2]
  src = _skia_image(img)
  surface = skia.Surface(w, h)
  paint = skia.Paint(ImageFilter=skia.ImageFilters.Blur(sigma, sigma, skia.TileMode.kClamp))
  surface.getCanvas().drawImage(src, 0, 0, skia.SamplingOptions(), paint)
  return draw.rgb(surface)


def _resize(img, w, h, linear=True):
  skia = draw._skia()
  src = _skia_image(img)
  sampling = (skia.SamplingOptions(skia.FilterMode.kLinear, skia.MipmapMode.kLinear) if linear
              else skia.SamplingOptions(skia.FilterMode.kNearest))
  surface = skia.Surface(w, h)
  surface.getCanvas().drawImageRect(src, skia.Rect.MakeWH(w, h), sampling)
  return draw.rgb(surface)


def _turn_with_wedges(img, angle):
  """The whole image turned by `angle` degrees about its centre, same size, black corners."""
  skia = draw._skia()
  h, w = img.shape[:2]
  src = _skia_image(img)
  surface = skia.Surface(w, h)
  canvas = surface.getCanvas()
  canvas.clear(skia.ColorBLACK)
  canvas.rotate(angle, w / 2, h / 2)
  canvas.drawImage(src, 0, 0, skia.SamplingOptions(skia.FilterMode.kLinear))
  return draw.rgb(surface)


def encode_jpeg(img, quality):
  skia = draw._skia()
  data = _skia_image(img).encodeToData(skia.EncodedImageFormat.kJPEG, int(quality))
  if data is None:
    raise RuntimeError("Skia's JPEG encoder returned nothing")
  return bytes(data)


def degrade(text, path, index, layout, rng):
  """-> (uint8 RGB [H, W, 3], JPEG quality to store it at, params dict)."""
  paper, ink = _colours(rng)
  cov, drawn = _mask(text, path, index, layout, rng, pad=0)
  h, w = cov.shape
  bg = _paper(rng, h, w, paper)
  a = cov[..., None]
  if rng.random() < 0.15:  # a soft shadow: the coverage moved down-right, blurred, half-strength
    dy, dx = (max(1, int(round(layout.size * f))) for f in rng.uniform(0.04, 0.1, 2))
    sh = np.zeros_like(cov)
    sh[dy:, dx:] = cov[:h - dy, :w - dx]
    sh = _blur(np.repeat((sh * 255).astype(np.uint8)[..., None], 3, 2), float(rng.uniform(0.8, 2.0)))
    sa = sh[..., :1].astype(np.float32) / 255.0 * float(rng.uniform(0.3, 0.6))
    bg = bg * (1 - sa) + (bg * 0.5 + ink * 0.5) * sa
  img = bg * (1 - a) + ink.astype(np.float32) * a
  if rng.random() < 0.35:  # uneven illumination
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if rng.random() < 0.5:
      ang = rng.uniform(0, 2 * np.pi)
      f = (xx / w) * np.cos(ang) + (yy / h) * np.sin(ang)
      f = (f - f.min()) / max(1e-6, float(np.ptp(f)))
    else:
      cx, cy = rng.uniform(0, w), rng.uniform(0, h)
      f = np.exp(-(((xx - cx) / (0.6 * w)) ** 2 + ((yy - cy) / (1.5 * h)) ** 2))
      f = 1 - f
    img = img * (1 - float(rng.uniform(0.2, 0.45)) * f)[..., None]
  img = np.clip(img + 0.5, 0, 255).astype(np.uint8)
  wedge = 0.0
  if rng.random() < 0.2:
    wedge = float(rng.uniform(-3, 3))
    img = _turn_with_wedges(img, wedge)
  sigma = float(rng.uniform(0.4, 1.3)) * layout.size / 32 if rng.random() < 0.6 else 0.0
  if sigma:
    img = _blur(img, sigma)
  # A low-resolution capture, stored small: 19-28 px of text.  Smaller text at the lowest JPEG
  # qualities was not legible any more (PP-OCRv6 read 33% of 14-18 px lines at q < 15; 96.4% of
  # 23-26 px lines; BENCHMARKS.md, "Robust reading").
  text_px = float(rng.uniform(19, 28)) if rng.random() < 0.5 else layout.size
  if text_px < layout.size:
    f = text_px / layout.size
    img = _resize(img, max(1, round(w * f)), max(1, round(h * f)), linear=rng.random() < 0.8)
  noise = float(rng.uniform(3, 16)) if rng.random() < 0.7 else 0.0
  if noise:
    img = np.clip(img + rng.normal(0, noise, img.shape) + 0.5, 0, 255).astype(np.uint8)
  if rng.random() < 0.15:  # specks
    n = int(img.shape[0] * img.shape[1] * rng.uniform(0.002, 0.01))
    ys, xs = rng.integers(0, img.shape[0], n), rng.integers(0, img.shape[1], n)
    img[ys, xs] = np.where(rng.random((n, 1)) < 0.5, 0, 255)
  quality = int(rng.integers(12, 41))
  if text_px < min(23.0, layout.size):  # both at once: small text keeps q >= 20
    quality = max(quality, 20)
  params = dict(paper=[round(float(v)) for v in paper], ink=[round(float(v)) for v in ink], blur=round(sigma, 3),
                text_px=round(text_px, 1), noise=round(noise, 2), wedge=round(wedge, 2), jpeg=quality,
                contrast=round(abs(_lum(paper) - _lum(ink))), size=layout.size, **drawn)
  return img, quality, params
