"""Make the bundled font subsets in datagen/fonts/ from full CJK fonts (a maintainer's tool).

    python tools/subset_fonts.py --src FULL_FONTS_DIR --out datagen/fonts

Each subset keeps: every character of the vendored corpus (datagen/corpus/THUOCL_poem.txt) that
the font has, printable ASCII, and common CJK punctuation; glyph outlines, metrics and TrueType
hinting are kept (FreeType renders a subset exactly as the full font), embedded bitmaps, layout
tables and names of other faces are dropped.  A .ttc is cut down to the one face named below.
The run writes SUBSETS.txt with each subset's sha256 and the command; rerun it after the corpus
changes.
"""
import argparse
import hashlib
import os
import pathlib
import sys

from fontTools import subset
from fontTools.ttLib import TTFont

# (source file, face index in a .ttc, bundled name, style, license file)
FONTS = [
    ("NotoSansCJK-Regular.ttc", 2, "NotoSansCJKsc-Regular-subset.otf", "hei / sans", "LICENSE.fonts-noto-cjk.txt"),
    ("wqy-zenhei.ttc", 0, "wqy-zenhei-subset.ttf", "hei / sans", "LICENSE.fonts-wqy-zenhei.txt"),
    ("gbsn00lp.ttf", 0, "gbsn00lp-subset.ttf", "song / serif", "LICENSE.fonts-arphic-gbsn00lp.txt"),
    ("gkai00mp.ttf", 0, "gkai00mp-subset.ttf", "kai", "LICENSE.fonts-arphic-gkai00mp.txt"),
    ("SmileySans-Oblique.ttf", 0, "SmileySans-Oblique-subset.ttf", "display hei, oblique", "LICENSE.fonts-smiley-sans.txt"),
    # The eleven added for robustness (issue 18); their sources are already GB2312 subsets.
    ("TW-Sung-98_1-gb2312.ttf", 0, "TW-Sung-subset.ttf", "song / ming (Taiwan MOE)", "LICENSE.fonts-cns11643-sung.txt"),
    ("HanaMinA-gb2312.ttf", 0, "HanaMinA-subset.ttf", "mincho / song (GlyphWiki)", "LICENSE.fonts-hanazono.txt"),
    ("TW-Kai-98_1-gb2312.ttf", 0, "TW-Kai-subset.ttf", "kai (Taiwan MOE)", "LICENSE.fonts-cns11643-kai.txt"),
    ("MaShanZheng-Regular-gb2312.ttf", 0, "MaShanZheng-subset.ttf", "brush kai", "LICENSE.fontsource-ma-shan-zheng.txt"),
    ("NotoSansCJK-Light-gb2312.otf", 0, "NotoSansCJKsc-Light-subset.otf", "hei, light weight", "LICENSE.fonts-noto-cjk-extra.txt"),
    ("NotoSansCJK-Black-gb2312.otf", 0, "NotoSansCJKsc-Black-subset.otf", "hei, black weight", "LICENSE.fonts-noto-cjk-extra.txt"),
    ("ZCOOLXiaoWei-Regular-gb2312.ttf", 0, "ZCOOLXiaoWei-subset.ttf", "display song", "LICENSE.fontsource-zcool-xiaowei.txt"),
    ("ZCOOLQingKeHuangYou-Regular-gb2312.ttf", 0, "ZCOOLQingKeHuangYou-subset.ttf", "condensed display hei", "LICENSE.fontsource-zcool-qingke-huangyou.txt"),
    ("ZCOOLKuaiLe-Regular-gb2312.ttf", 0, "ZCOOLKuaiLe-subset.ttf", "rounded display", "LICENSE.fontsource-zcool-kuaile.txt"),
    ("LongCang-Regular-gb2312.ttf", 0, "LongCang-subset.ttf", "handwritten running script", "LICENSE.fontsource-long-cang.txt"),
    ("unifont-gb2312.otf", 0, "unifont-subset.otf", "16x16 pixel", "LICENSE.fonts-unifont.txt"),
]
PUNCT = "，。！？、；：“”‘’（）《》〈〉【】—…·「」『』"


def _old_entry(path, name):
  """The entry for `name` in an existing SUBSETS.txt (entries are separated by blank lines)."""
  for block in path.read_text(encoding="utf-8").split("\n\n"):
    if block.startswith(name + " "):
      return block.rstrip("\n") + "\n"
  raise SystemExit(f"{path} has no entry for {name}: remake it (leave it out of --only)")


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--src", required=True, help="folder with the full fonts and their LICENSE.* files")
  ap.add_argument("--out", default="datagen/fonts")
  ap.add_argument("--corpus", default="datagen/corpus/THUOCL_poem.txt")
  ap.add_argument("--only", nargs="*", default=None, metavar="SUBSET",
                  help="remake only these bundled files (e.g. TW-Sung-subset.ttf); SUBSETS.txt keeps the "
                       "others' entries as they are")
  args = ap.parse_args()
  text = pathlib.Path(args.corpus).read_text(encoding="utf-8")
  chars = {c for line in text.splitlines() for c in line.split("\t")[0]}
  wanted = sorted({ord(c) for c in chars} | set(range(0x20, 0x7F)) | {ord(c) for c in PUNCT})
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  notes = []
  for src, index, name, style, lic in FONTS:
    if args.only is not None and name not in args.only:
      notes.append(_old_entry(out / "SUBSETS.txt", name))
      continue
    # recalcTimestamp=False: the head table keeps the source's date, so a rerun gives the same bytes.
    font = TTFont(os.path.join(args.src, src), fontNumber=index, lazy=False, recalcTimestamp=False)
    cmap = font.getBestCmap()
    have = [u for u in wanted if u in cmap]
    opts = subset.Options()
    opts.layout_features = []          # no GSUB/GPOS: we draw one glyph per character
    opts.hinting = True                # keep TrueType instructions: same raster as the full font
    opts.drop_tables += ["EBDT", "EBLC", "EBSC", "CBDT", "CBLC", "sbix", "DSIG"]
    opts.name_IDs = ["*"]
    opts.name_languages = ["*"]
    opts.notdef_outline = True
    opts.recalc_bounds = True
    sub = subset.Subsetter(opts)
    sub.populate(unicodes=have)
    sub.subset(font)
    dst = out / name
    font.save(str(dst))
    (out / lic).write_bytes(pathlib.Path(args.src, lic).read_bytes())
    missing = [chr(u) for u in sorted({ord(c) for c in chars}) if u not in cmap]
    digest = hashlib.sha256(dst.read_bytes()).hexdigest()
    src_digest = hashlib.sha256(pathlib.Path(args.src, src).read_bytes()).hexdigest()
    notes.append(
        f"{name}  ({dst.stat().st_size:,} bytes, sha256 {digest})\n"
        f"  style: {style}; from {src} face {index} (sha256 {src_digest}); license: {lic}\n"
        f"  glyphs kept for {len(have)} code points; corpus characters missing: {len(missing)}"
        + (f"\n  missing: {''.join(missing)}" if missing else "") + "\n")
    print(notes[-1], file=sys.stderr)
  (out / "SUBSETS.txt").write_text(
      "Font subsets bundled with crnn-jax (made by tools/subset_fonts.py)\n"
      "Command: python tools/subset_fonts.py --src <folder with the full fonts> --out datagen/fonts\n"
      "Kept: corpus characters, printable ASCII, CJK punctuation; outlines, metrics and TrueType\n"
      "hinting as in the full font. Dropped: embedded bitmaps, OpenType layout tables, other faces\n"
      "of a .ttc. The full fonts are byte copies of Debian 12 packages (see each LICENSE file).\n\n"
      + "\n".join(notes), encoding="utf-8")


if __name__ == "__main__":
  main()
