"""`otherworld build`: the other-world validation set, for evaluation only.

    otherworld build --data DATA_DIR --out OUT [--fonts F ...] [--seed S] [--lines validation test]

Draws DATA_DIR's held-out lines (its splits/validation.txt and splits/test.txt: corpus lines no
training image shows) with Skia (otherworld/draw.py) in fonts kept out of training (default: the
three fonts datagen holds out, WenQuanYi Zen Hei, HanaMinA and TW-Kai), each line once per font,
clean and degraded by otherworld/degrade.py.  OUT is a folder crnn-eval reads like a DATA_DIR:
  chinese.txt + char_dict/        DATA_DIR's character set, copied (the model's classes)
  crnn_poem-{val,test}_{clean,degraded}.tfrecord-*   RGB JPEG lines, datagen's feature keys
  dataset_info.json, features.json, meta.json, preview.png

    crnn-eval --workdir W --data OUT --split val_degraded

A font that drew training images of DATA_DIR (meta.json, role "train") is refused: this set
measures reading in unseen fonts.  The bytes are a pure function of (DATA_DIR's lines and
charset, fonts, seed) on a given Skia/numpy version: tests/test_otherworld.py builds twice.
"""
import argparse
import json
import pathlib
import shutil
import sys
import time

import numpy as np

from otherworld import degrade, draw

SPLITS = {"validation": "val", "test": "test"}
DEFAULT_FONTS = ("wqy-zenhei-subset.ttf", "HanaMinA-subset.ttf", "TW-Kai-subset.ttf")
FORMAT = "crnn-jax-otherworld/1"


class OtherworldError(Exception):
  pass


def _default_font_paths():
  from datagen import fonts as datagen_fonts  # only to find the bundled files
  return [str(datagen_fonts.bundled_dir() / f) for f in DEFAULT_FONTS]


def read_lines(data_dir, split):
  """[(line_id, text)] of DATA_DIR/splits/<split>.txt (datagen's `line_id<TAB>source<TAB>text`)."""
  path = pathlib.Path(data_dir, "splits", f"{split}.txt")
  if not path.exists():
    raise OtherworldError(f"{path} does not exist: --data must be a DATA_DIR made by `datagen build`")
  out = []
  for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
    parts = raw.split("\t")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[2]:
      raise OtherworldError(f"{path}:{n}: expected line_id<TAB>source<TAB>text, got {raw!r}")
    out.append((int(parts[0]), parts[2]))
  return out


def _check_fonts(data_dir, fonts):
  meta_path = pathlib.Path(data_dir, "meta.json")
  if not meta_path.exists():
    return
  import hashlib
  meta = json.loads(meta_path.read_text(encoding="utf-8"))
  trained = {f["sha256"]: f["name"] for f in meta.get("fonts", []) if f.get("role") == "train"}
  for path in fonts:
    digest = hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()
    if digest in trained:
      raise OtherworldError(f"font {path} drew training images of {data_dir} (as {trained[digest]}); "
                            "the other-world set uses fonts kept out of training: pick a --holdout-fonts font")


def render_one(text, font_path, seed, code, line_id, font_idx):
  """(clean jpeg, degraded jpeg, params) of one (line, font); a pure function of its arguments."""
  rng = np.random.default_rng([seed, code, line_id, font_idx, 0x07])
  layout = draw.sample_layout(rng, degraded=False)
  clean = draw.draw_clean(text, font_path, 0, layout)
  clean_jpeg = degrade.encode_jpeg(clean, 92)
  rng_d = np.random.default_rng([seed, code, line_id, font_idx, 0xD6])
  layout_d = draw.sample_layout(rng_d, degraded=True)
  img, quality, params = degrade.degrade(text, font_path, 0, layout_d, rng_d)
  return clean_jpeg, degrade.encode_jpeg(img, quality), params


def _job(args):
  return render_one(*args)


def build(data_dir, out, fonts=None, seed=0, lines=("validation", "test"), workers=0, log=print):
  """Writes the set into `out`; returns its meta dict."""
  from datagen import records
  from datagen.charset import Charset
  fonts = [str(pathlib.Path(f).resolve()) for f in (fonts or _default_font_paths())]
  for f in fonts:
    if not pathlib.Path(f).is_file():
      raise OtherworldError(f"font {f} does not exist")
  _check_fonts(data_dir, fonts)
  for split in lines:
    if split not in SPLITS:
      raise OtherworldError(f"--lines {split}: choose from {sorted(SPLITS)}")
    read_lines(data_dir, split)  # a missing or malformed splits file is named before any work
  charset = Charset.read(data_dir)
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  records.remove_shards(out)
  shutil.copy(pathlib.Path(data_dir, "chinese.txt"), out / "chinese.txt")
  if pathlib.Path(data_dir, "char_dict").is_dir():
    shutil.copytree(pathlib.Path(data_dir, "char_dict"), out / "char_dict", dirs_exist_ok=True)
  names = [pathlib.Path(f).stem for f in fonts]
  infos, counts, skipped, samples = [], {}, {}, []
  t0 = time.time()
  import multiprocessing
  from tqdm import tqdm
  workers = workers or multiprocessing.cpu_count()
  pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
  try:
    for code, split in enumerate(lines):
      jobs, skip = [], 0
      for line_id, text in read_lines(data_dir, split):
        for fi, font in enumerate(fonts):
          if draw.has_glyphs(font, text):
            jobs.append((text, font, seed, code + 1, line_id, fi))
          else:
            skip += 1
      if skip:
        log(f"{split}: {skip} (line, font) pairs skipped: the font lacks a character")
      skipped[split] = skip
      prefix = SPLITS[split]
      total = records.num_shards(len(jobs), 4096)
      writers = {kind: records.SplitWriter(out, f"{prefix}_{kind}", len(jobs), total, 3)
                 for kind in ("clean", "degraded")}
      results = pool.imap(_job, jobs, chunksize=16) if pool else map(_job, jobs)
      for pos, (job, (clean, degraded, _)) in enumerate(
          zip(jobs, tqdm(results, total=len(jobs), desc=f"otherworld {split}", file=sys.stderr, mininterval=2))):
        text, font, _, _, line_id, fi = job
        for kind, jpeg in (("clean", clean), ("degraded", degraded)):
          writers[kind].write(pos, {"image": jpeg, "text": text, "label": charset.encode(text),
                                    "font": names[fi], "variant": 0 if kind == "clean" else 1,
                                    "line_id": line_id, "source": f"otherworld-{kind}"})
        if len(samples) < 24 and pos % 97 == 0:
          samples.append((text, names[fi], clean, degraded))
      for kind, w in writers.items():
        w.close()
        infos.append(w.split_info())
        counts[f"{prefix}_{kind}"] = {"lines": len({j[4] for j in jobs}), "images": sum(w.shard_lengths),
                                      "bytes": w.num_bytes}
  finally:
    if pool is not None:
      pool.close()
      pool.join()
  records.write_metadata(out, infos, 3, description="crnn-jax other-world evaluation set (Skia renderer, "
                                                     "held-out fonts, harsh degradations)")
  import PIL
  import skia
  import tensorflow as tf
  meta = {"format": FORMAT, "data_dir": str(data_dir), "seed": seed, "lines": list(lines),
          "fonts": [{"name": n, "file": pathlib.Path(f).name} for n, f in zip(names, fonts)],
          "counts": counts, "skipped_line_font_pairs": skipped, "seconds": round(time.time() - t0, 1),
          "versions": {"skia": skia.__version__, "numpy": np.__version__, "pillow": PIL.__version__,
                       "tensorflow": tf.__version__, "python": sys.version.split()[0]}}
  (out / "meta.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
  _preview(out / "preview.png", samples)
  n = sum(c["images"] for c in counts.values())
  log(f"otherworld: {n} images in {meta['seconds']:.0f} s -> {out} (splits {', '.join(counts)})")
  return meta


def _preview(path, samples):
  """Clean | degraded pairs, one row each, at 40 px height."""
  import io
  from PIL import Image
  rows = []
  for _, _, clean, degraded in samples:
    pair = []
    for jpeg in (clean, degraded):
      im = Image.open(io.BytesIO(jpeg)).convert("RGB")
      pair.append(im.resize((max(1, round(im.width * 40 / im.height)), 40)))
    rows.append(pair)
  if not rows:
    return
  cw = max(p[0].width for p in rows) + 12
  sheet = Image.new("RGB", (cw + max(p[1].width for p in rows) + 8, len(rows) * 46 + 6), (200, 200, 200))
  for i, (a, b) in enumerate(rows):
    sheet.paste(a, (4, 4 + i * 46))
    sheet.paste(b, (4 + cw, 4 + i * 46))
  sheet.save(path)


def main(argv=None):
  from datagen.errors import DatagenError
  ap = argparse.ArgumentParser(prog="otherworld", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = ap.add_subparsers(dest="cmd", required=True)
  b = sub.add_parser("build", help="draw the set")
  b.add_argument("--data", required=True, help="the DATA_DIR whose held-out lines and charset to use")
  b.add_argument("--out", required=True)
  b.add_argument("--fonts", nargs="*", default=None,
                 help=f"font files kept out of training (default: the bundled {', '.join(DEFAULT_FONTS)})")
  b.add_argument("--seed", type=int, default=0)
  b.add_argument("--lines", nargs="*", default=["validation", "test"], choices=sorted(SPLITS))
  b.add_argument("--workers", type=int, default=0, help="render processes (0 = one per core)")
  args = ap.parse_args(argv)
  try:
    build(args.data, args.out, args.fonts, args.seed, tuple(args.lines), args.workers)
  except (OtherworldError, DatagenError) as e:
    print(f"otherworld: error: {e}", file=sys.stderr)
    return 2
  return 0


def run():
  sys.exit(main())


if __name__ == "__main__":
  run()
