"""Font files: the bundled subsets, a user's own files or folders, and glyph coverage.

A font is used for a line only if it has a real glyph for every character of it: the character
is in the font's cmap *and* FreeType draws a non-empty outline for it.  A font missing a
character never renders that line (no tofu box or blank under a label); such skips are counted.
"""
import dataclasses
import functools
import hashlib
import importlib.resources
import pathlib

from datagen.errors import DatagenError

FONT_SUFFIXES = (".ttf", ".otf", ".ttc", ".otc")
# Bundled subsets (datagen/fonts/SUBSETS.txt says how they were made): the first round's five,
# then the eleven of issue 18.  The holdout fonts never draw a training image; validation/test
# render with them too (an unseen-font check), and so does the other-world validation set
# (`otherworld`), which uses only them.  One of each family the others teach: a hei (WenQuanYi),
# a song/mincho (HanaMinA; TW-Sung, SungtiL and ZCOOL XiaoWei stay in training) and a kai (TW-Kai;
# KaitiM and Ma Shan Zheng stay in training).
BUNDLED = (
    "NotoSansCJKsc-Regular-subset.otf",
    "gbsn00lp-subset.ttf",
    "gkai00mp-subset.ttf",
    "SmileySans-Oblique-subset.ttf",
    "wqy-zenhei-subset.ttf",
    "TW-Sung-subset.ttf",
    "HanaMinA-subset.ttf",
    "TW-Kai-subset.ttf",
    "MaShanZheng-subset.ttf",
    "NotoSansCJKsc-Light-subset.otf",
    "NotoSansCJKsc-Black-subset.otf",
    "ZCOOLXiaoWei-subset.ttf",
    "ZCOOLQingKeHuangYou-subset.ttf",
    "ZCOOLKuaiLe-subset.ttf",
    "LongCang-subset.ttf",
    "unifont-subset.otf",
)
DEFAULT_HOLDOUT = ("wqy-zenhei-subset", "HanaMinA-subset", "TW-Kai-subset")


@dataclasses.dataclass(frozen=True)
class FontSpec:
  path: str
  index: int = 0

  @property
  def name(self) -> str:
    """Short name used in records and metrics: file stem (+ '#index' for a collection face)."""
    stem = pathlib.Path(self.path).stem
    return f"{stem}#{self.index}" if self.index else stem


def bundled_dir() -> pathlib.Path:
  return pathlib.Path(str(importlib.resources.files("datagen") / "fonts"))


def default_fonts():
  return [FontSpec(str(bundled_dir() / f)) for f in BUNDLED]


def parse_font_args(args):
  """`--fonts` values: font files, `FILE.ttc:INDEX` for a collection face, or folders."""
  specs = []
  for arg in args:
    path, index = arg, 0
    head, sep, tail = arg.rpartition(":")
    if sep and tail.isdigit() and not pathlib.Path(arg).exists():
      path, index = head, int(tail)
    p = pathlib.Path(path)
    if p.is_dir():
      found = sorted(f for f in p.iterdir() if f.suffix.lower() in FONT_SUFFIXES)
      if not found:
        raise DatagenError(f"font folder {p} holds no {'/'.join(FONT_SUFFIXES)} files")
      specs.extend(FontSpec(str(f.resolve())) for f in found)
    elif p.exists():
      specs.append(FontSpec(str(p.resolve()), index))
    else:
      raise DatagenError(f"font {path} does not exist; give a .ttf/.otf/.ttc file, FILE.ttc:INDEX "
                         "or a folder of fonts to --fonts")
  names = [s.name for s in specs]
  dup = {n for n in names if names.count(n) > 1}
  if dup:
    raise DatagenError(f"two fonts share the name {sorted(dup)[0]!r}; rename one file")
  return specs


@functools.lru_cache(maxsize=None)
def sha256_font(path: str) -> str:
  return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def load_font(spec: FontSpec, size: int):
  from PIL import ImageFont
  try:
    return ImageFont.truetype(spec.path, size=size, index=spec.index,
                              layout_engine=ImageFont.Layout.BASIC)
  except OSError as e:
    raise DatagenError(f"font {spec.path} (face {spec.index}) cannot be opened by FreeType "
                       f"({e}); check the file, or leave it out of --fonts") from None


def coverage(spec: FontSpec, chars) -> frozenset:
  """The characters of `chars` this font really draws (cmap entry and a non-empty outline)."""
  from fontTools.ttLib import TTFont, TTLibError
  try:
    tt = TTFont(spec.path, fontNumber=spec.index, lazy=True)
    cmap = tt.getBestCmap() or {}
    tt.close()
  except (TTLibError, OSError, AssertionError, IndexError) as e:
    raise DatagenError(f"font {spec.path} (face {spec.index}) is unreadable: {e}; check the "
                       "file, or leave it out of --fonts") from None
  font = load_font(spec, 24)
  ok = set()
  for c in chars:
    if ord(c) in cmap and font.getmask(c).getbbox() is not None:
      ok.add(c)
  return frozenset(ok)
