"""Drawing a text line with Skia: the other world's renderer (evaluation only).

Training images are drawn by FreeType through Pillow (datagen/render.py).  This module draws with
Skia instead: its own glyph cache, hinting, edging (aliased / antialiased / subpixel), gamma and
path rasteriser, glyphs laid out by Skia's font metrics and placed by a Skia canvas matrix.  It
shares no code with datagen.  Fonts are opened through Skia's empty custom font manager, so the
machine's fontconfig and installed fonts play no part.

`Layout` is everything one line's geometry depends on; the clean and the degraded image of a
(line, font) pair share it, so the two differ only by the degradation.
"""
import dataclasses
import functools

import numpy as np


def _skia():
  import skia
  return skia


@functools.lru_cache(maxsize=None)
def typeface(path: str, index: int = 0):
  skia = _skia()
  tf = skia.FontMgr.New_Custom_Empty().makeFromFile(path, index)
  if tf is None:
    raise ValueError(f"Skia cannot open the font {path} (face {index})")
  return tf


def has_glyphs(path: str, text: str, index: int = 0) -> bool:
  """Every character of `text` maps to a glyph with a non-empty outline in this font."""
  skia = _skia()
  font = skia.Font(typeface(path, index), 24)
  for g in font.textToGlyphs(text):
    if g == 0 or font.getPath(g) is None or font.getPath(g).isEmpty():
      return False
  return True


@dataclasses.dataclass(frozen=True)
class Layout:
  size: float          # em size in pixels
  tracking: float      # extra advance per character, x size
  hinting: str         # none | slight | normal | full
  edging: str          # alias | antialias | subpixel
  scale_x: float       # horizontal glyph scale (condensed / expanded setting)
  margins: tuple       # left, top, right, bottom in pixels (may be ~0: text at the edge)


def sample_layout(rng: np.random.Generator, degraded: bool) -> Layout:
  """A line's geometry: clean lines are set plainly; degraded ones get uneven, tighter margins."""
  size = float(rng.uniform(26, 44))
  tracking = float(rng.uniform(-0.04, 0.3))
  hinting = ("none", "slight", "normal", "full")[int(rng.integers(4))]
  edging = ("alias", "antialias", "antialias", "subpixel")[int(rng.integers(4))]
  scale_x = float(rng.uniform(0.9, 1.1))
  if degraded:
    m = rng.uniform([0.0, 0.0, 0.0, 0.0], [1.2, 0.7, 1.2, 0.7]) * size
    m = np.where(rng.random(4) < [0.3, 0.2, 0.3, 0.2], 0.0, m)  # text touching an edge
  else:
    m = rng.uniform([0.15, 0.1, 0.15, 0.1], [0.6, 0.35, 0.6, 0.35]) * size
  return Layout(size, tracking, hinting, edging, scale_x, tuple(float(v) for v in m))


def make_font(path: str, index: int, layout: Layout, embolden=False):
  skia = _skia()
  font = skia.Font(typeface(path, index), layout.size)
  font.setHinting({"none": skia.FontHinting.kNone, "slight": skia.FontHinting.kSlight,
                   "normal": skia.FontHinting.kNormal, "full": skia.FontHinting.kFull}[layout.hinting])
  font.setEdging({"alias": skia.Font.Edging.kAlias, "antialias": skia.Font.Edging.kAntiAlias,
                  "subpixel": skia.Font.Edging.kSubpixelAntiAlias}[layout.edging])
  font.setSubpixel(layout.edging != "alias")
  font.setScaleX(layout.scale_x)
  font.setEmbolden(embolden)
  return font


def text_blob(text: str, font, layout: Layout):
  """(TextBlob at origin (0, baseline), ink width, line height, baseline y)."""
  skia = _skia()
  glyphs = font.textToGlyphs(text)
  widths = font.getWidths(glyphs)
  step = layout.tracking * layout.size
  xs, x = [], 0.0
  for w in widths:
    xs.append(x)
    x += w + step
  width = max(1.0, x - step)
  metrics = font.getMetrics()
  # CJK faces differ wildly in ascent/descent: use the em box (0.88 / 0.12 of the size) around the
  # baseline, widened to the font's own extent where its glyphs reach further.
  ascent = max(0.88 * layout.size, min(-metrics.fAscent, 1.1 * layout.size))
  descent = max(0.12 * layout.size, min(metrics.fDescent, 0.35 * layout.size))
  builder = skia.TextBlobBuilder()
  builder.allocRunPosH(font, glyphs, xs, ascent)
  return builder.make(), width, ascent + descent, ascent


def draw_clean(text: str, path: str, index: int, layout: Layout):
  """The clean image: near-black text on near-white, no transform.  -> uint8 RGB [H, W, 3]."""
  skia = _skia()
  font = make_font(path, index, layout)
  blob, width, height, _ = text_blob(text, font, layout)
  left, top, right, bottom = layout.margins
  w = int(np.ceil(left + width + right))
  h = int(np.ceil(top + height + bottom))
  surface = skia.Surface(max(w, 1), max(h, 1))
  canvas = surface.getCanvas()
  canvas.clear(skia.Color(250, 250, 248))
  canvas.drawTextBlob(blob, left, top, skia.Paint(AntiAlias=True, Color=skia.Color(20, 20, 24)))
  return rgb(surface)


def rgb(surface) -> np.ndarray:
  """A raster surface as a uint8 RGB array (Skia stores N32: BGRA or RGBA by platform)."""
  skia = _skia()
  img = surface.makeImageSnapshot()
  arr = img.toarray(colorType=skia.ColorType.kRGBA_8888_ColorType)
  return np.ascontiguousarray(arr[..., :3])
