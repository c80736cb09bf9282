"""`datagen import`: a user's data in the original example's layout -> the same TFRecord dataset.

Input folder (the original crnn_chinese layout):
  chinese.txt          one character per line (its order is kept: file index = line number)
  Train/sample.txt     `relative/path.jpg<space>label` per line, paths relative to the folder
  Test/sample.txt      same; optional Validation/sample.txt (else validation is carved from
                       Train by label text, seeded, so no validation text is also a training one)
"""
import collections
import io
import pathlib
import time

import numpy as np
from PIL import Image, ImageOps

from datagen import build, records, render
from datagen.charset import Charset
from datagen.errors import DatagenError

SPLIT_DIRS = (("train", "Train"), ("validation", "Validation"), ("test", "Test"))


MAX_PIXELS = 40_000_000  # per image, read from its header before it is decoded (--max-pixels)
MAX_BYTES = 64 * 1024 * 1024  # per image file, from its size before it is read


def _inside(path, root):
  path, root = pathlib.Path(path).resolve(), pathlib.Path(root).resolve()
  return path == root or root in path.parents


def read_sample_txt(path, charset, root, allow_outside=False):
  """-> [(image path, label, line number)]; errors name the file and line.  Image paths must stay
  inside `root` (the --src folder; `..`, absolute paths and links that leave it are refused before
  anything is opened) unless `allow_outside`."""
  out = []
  try:
    text = pathlib.Path(path).read_text(encoding="utf-8-sig")
  except UnicodeDecodeError:
    raise DatagenError(f"{path}: not UTF-8; save sample.txt as UTF-8") from None
  for n, raw in enumerate(text.splitlines(), start=1):
    if not raw.strip():
      continue
    parts = raw.strip().split(maxsplit=1)
    if len(parts) != 2:
      raise DatagenError(f"{path}:{n}: expected '<image path> <label>', got {raw!r}")
    rel, label = parts[0], parts[1].strip()
    if "\x00" in rel:
      raise DatagenError(f"{path}:{n}: image path {rel!r} holds a NUL character; fix the line")
    for c in label:
      if c not in charset:
        raise DatagenError(f"{path}:{n}: label {label!r} has {c!r} (U+{ord(c):04X}), which is not in "
                           "chinese.txt; add it to chinese.txt or fix the label")
    img = pathlib.Path(root) / rel
    if not allow_outside:
      outside = [q for q in (img, pathlib.Path(path).parent / rel) if not _inside(q, root)]
      if outside:
        raise DatagenError(f"{path}:{n}: image path {rel!r} leads outside --src {root} ({outside[0].resolve()}); "
                           "keep the images inside the source folder, or pass --allow-outside-src if you trust "
                           "this sample.txt")
    try:
      if not img.is_file():
        alt = pathlib.Path(path).parent / rel
        if not alt.is_file():
          raise DatagenError(f"{path}:{n}: image {rel} not found (looked for a file in {root} and "
                             f"{pathlib.Path(path).parent})")
        img = alt
    except OSError as e:  # a name too long for the file system, ...
      raise DatagenError(f"{path}:{n}: image path {rel!r} cannot be looked up ({e.strerror})") from None
    out.append((img, label, n))
  return out


def load_image_bytes(img_path, where, channels, max_pixels=MAX_PIXELS, max_bytes=MAX_BYTES):
  """Decodes fully (a truncated file fails here) and returns (JPEG bytes with `channels`, height,
  width, frames).  Bounded before decoding: the file's size, then the pixel count its header
  declares.  EXIF rotation is applied (as crnn-predict does); of a multi-frame file (an animated
  GIF, a multi-page TIFF) the first frame is taken and `frames` says how many it had (the import
  counts them in its log)."""
  p = pathlib.Path(img_path)
  try:
    size = p.stat().st_size
    if size > max_bytes:
      raise DatagenError(f"{where}: image {img_path} is {size} bytes, over the limit of {max_bytes}; shrink it "
                         "or remove its line")
    raw = p.read_bytes()
    im = Image.open(io.BytesIO(raw))
    if im.width * im.height > max_pixels:
      raise DatagenError(f"{where}: image {img_path} declares {im.width}x{im.height} pixels, over the limit of "
                         f"{max_pixels} (--max-pixels); a text line needs far fewer: crop or shrink it, or remove "
                         "its line")
    im.load()
  except Image.DecompressionBombError as e:
    raise DatagenError(f"{where}: image {img_path} declares a pixel count over the limit of {max_pixels} "
                       f"(--max-pixels; Pillow: {e}); a decompression bomb or not a text line: remove its "
                       "line") from None
  except DatagenError:
    raise
  except Exception as e:  # noqa: BLE001 -- Pillow's plugins raise a zoo on damaged files (TypeError, KeyError, ...)
    raise DatagenError(f"{where}: image {img_path} is unreadable or truncated ({type(e).__name__}: {e}); "
                       "re-export it or remove its line") from None
  if im.width == 0 or im.height == 0:
    raise DatagenError(f"{where}: image {img_path} is empty ({im.width}x{im.height})")
  try:
    return _as_jpeg(im, raw, channels)
  except Exception as e:  # noqa: BLE001 -- EXIF parsing and JPEG encoding fail in many ways on odd files
    raise DatagenError(f"{where}: image {img_path} cannot be converted ({type(e).__name__}: {e}); re-export it "
                       "(a text line as PNG or JPEG) or remove its line") from None


def _as_jpeg(im, raw, channels):
  frames = getattr(im, "n_frames", 1)
  mode = "L" if channels == 1 else "RGB"
  turned = im.getexif().get(0x0112, 1) not in (0, 1)  # EXIF orientation
  if im.format == "JPEG" and im.mode == mode and not turned:
    return raw, im.height, im.width, frames
  im = ImageOps.exif_transpose(im)
  if im.mode.startswith("I") or im.mode == "F":  # 16-bit grey: convert("L") would clip it to white
    a = np.asarray(im, np.float64)
    a = a / 257.0 if im.mode.startswith("I;16") or a.max(initial=0) > 255 else a * (255.0 if a.max(initial=0) <= 1 else 1)
    im = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
  if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
    im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im.convert("RGBA"))
  buf = io.BytesIO()
  im.convert(mode).save(buf, format="JPEG", quality=95)
  return buf.getvalue(), im.height, im.width, frames


def import_dataset(src, out, seed=0, validation_fraction=0.05, target_height=32,
                   frames_per_pixel=0.125, examples_per_shard=2048, color=False, log=print,
                   allow_outside_src=False, max_pixels=MAX_PIXELS):
  from tqdm import tqdm
  src, out = pathlib.Path(src), pathlib.Path(out)
  if not (src / "chinese.txt").exists():
    raise DatagenError(f"{src} has no chinese.txt (one character per line); the original layout "
                       "needs it beside Train/ and Test/")
  charset = Charset.read_txt(src / "chinese.txt")
  items = {}
  for split, folder in SPLIT_DIRS:
    path = src / folder / "sample.txt"
    if path.exists():
      items[split] = read_sample_txt(path, charset, src, allow_outside=allow_outside_src)
    elif split == "train":
      raise DatagenError(f"{path} is missing; the original layout has Train/sample.txt")
  if "validation" not in items and validation_fraction > 0:
    texts = sorted({label for _, label, _ in items["train"]})
    rng = np.random.default_rng([seed, 0x1A7])
    held = {texts[i] for i in rng.permutation(len(texts))[:int(round(len(texts) * validation_fraction))]}
    items["validation"] = [it for it in items["train"] if it[1] in held]
    items["train"] = [it for it in items["train"] if it[1] not in held]
  train_texts = {label for _, label, _ in items["train"]}
  overlap = {s: sum(1 for _, l, _ in items.get(s, []) if l in train_texts) for s in ("validation", "test")}
  if any(overlap.values()):
    log(f"WARNING: images whose label text is also a training label: {overlap} (your data's split)")

  out.mkdir(parents=True, exist_ok=True)
  charset.write(out)
  records.remove_shards(out)
  channels = 3 if color else 1
  counts, rejected, infos, multi = {}, {}, [], []
  t0 = time.time()
  line_id = 0
  for split, _ in SPLIT_DIRS:
    if split not in items:
      continue
    rows = items[split]
    writer = records.SplitWriter(out, split, len(rows), records.num_shards(len(rows), examples_per_shard),
                                 channels)
    rejected[split] = 0
    seen = collections.Counter()
    for pos, (img, label, n) in enumerate(tqdm(rows, desc=f"import {split}", unit="img", mininterval=2.0)):
      jpeg, h, w, frames = load_image_bytes(img, f"{split} sample.txt:{n}", channels, max_pixels=max_pixels)
      if frames > 1:
        multi.append(f"{split} sample.txt:{n} {img.name} ({frames})")
      line_id += 1
      if render.frames_available(h, w, target_height, frames_per_pixel) < render.frames_needed(label):
        rejected[split] += 1
        continue
      writer.write(pos, {"image": jpeg, "text": label, "label": charset.encode(label), "font": "import",
                         "variant": seen[label], "line_id": line_id, "source": "import"})
      seen[label] += 1
    writer.close()
    if sum(writer.shard_lengths):
      infos.append(writer.split_info())
    else:
      log(f"WARNING {split}: no image fits its label; the split is left out")
      records.remove_shards(out, split)
    counts[split] = {"lines": len(set(l for _, l, _ in rows)), "images": sum(writer.shard_lengths),
                     "shards": writer.total, "bytes": writer.num_bytes}
    log(f"{split}: {counts[split]['images']} images, {rejected[split]} rejected as infeasible for CTC")
  if multi:
    log(f"NOTE: {len(multi)} images have several frames (animated GIF, multi-page TIFF); the first frame of "
        f"each was imported: {', '.join(multi[:5])}{' ...' if len(multi) > 5 else ''}")
  records.write_metadata(out, infos, channels, description=f"imported from {src.name}")
  meta = {"format": build.META_FORMAT, "imported_from": str(src), "seed": seed,
          "target_height": target_height, "frames_per_pixel": frames_per_pixel, "channels": channels,
          "num_chars": len(charset), "fonts": [], "counts": counts,
          "skips": {"infeasible_label": rejected}, "multi_frame_first_taken": len(multi),
          "label_overlap_with_train": overlap,
          "render_seconds": round(time.time() - t0, 1), "versions": build.versions()}
  build.write_meta(out, meta)
  return meta
