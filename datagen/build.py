"""The render step: plan every image, render in parallel processes, write shards and meta.json.

Determinism: each image is a pure function of (seed, split, line_id, variant, font, knobs).
Plans are made in the parent process; workers render jobs in any order, `imap` hands results
back in plan order, and shard boundaries are fixed by plan position (records.SplitWriter), so
the TFRecord bytes are identical for any `--workers`.
"""
import collections
import dataclasses
import json
import multiprocessing
import os
import pathlib
import platform
import sys
import time

import numpy as np

from datagen import charset as charset_lib
from datagen import fonts as fonts_lib
from datagen import records, render
from datagen.errors import DatagenError
from datagen.split import SPLIT_CODES, SPLITS

META_FORMAT = "crnn-jax-data/1"


@dataclasses.dataclass(frozen=True)
class Job:
  split: str
  line_id: int
  source: str
  text: str
  variant: int
  font: int  # index into the build's font list


@dataclasses.dataclass
class RenderOptions:
  seed: int = 0
  variants: int = 8
  eval_variants: int = 5
  target_height: int = 32
  frames_per_pixel: float = 0.125
  examples_per_shard: int = 2048
  workers: int = 0  # 0 = os.cpu_count()
  # {font name: weight} for the training variants (fonts not named weigh 1); empty = each
  # line's variants cycle through its fonts.  Validation/test images always cycle.
  font_weights: dict = dataclasses.field(default_factory=dict)
  write_images: bool = False
  knobs: render.RenderConfig = dataclasses.field(default_factory=render.RenderConfig)


def plan_split(split, lines, fonts, coverage, font_ids, variants, seed, weights=None):
  """Jobs for one split + skip counts.  Variant v of a line uses the (offset + v)-th font that
  covers the line, so a line's variants spread over fonts; `offset` is seeded per line.

  With `weights` ({font index: weight > 0}; indices not named weigh 1) a line's variants are
  shared out in proportion to the weights of the fonts that cover it instead: systematic
  sampling of the cumulative weights at `variants` evenly spaced points from a seeded start, so
  each font gets its share of every line within one variant (10 variants at weights 1, 1, 1.6,
  1.6 give 2 or 1, 2 or 1, 3 or 4, 3 or 4)."""
  jobs, font_skips, no_font = [], collections.Counter(), []
  code = SPLIT_CODES[split]
  for line in lines:
    chars = set(line.text)
    eligible = [f for f in font_ids if chars <= coverage[f]]
    for f in font_ids:
      if f not in eligible:
        font_skips[fonts[f].name] += 1
    if not eligible:
      no_font.append(line)
      continue
    rng = np.random.default_rng([seed, code, line.line_id, 0xF0])
    if weights:
      w = np.array([float(weights.get(f, 1.0)) for f in eligible])
      points = (rng.random() + np.arange(variants)) / variants
      picks = np.minimum(np.searchsorted(np.cumsum(w) / w.sum(), points, side="right"), len(eligible) - 1)
      picks = rng.permutation(picks)  # which variant (it seeds the render) gets which font
    else:
      picks = (int(rng.integers(len(eligible))) + np.arange(variants)) % len(eligible)
    for v in range(variants):
      jobs.append(Job(split, line.line_id, line.source, line.text, v, eligible[int(picks[v])]))
  if split == "train" and jobs:
    # Shuffle once, seeded, so each shard mixes lines, fonts and variants.
    perm = np.random.default_rng([seed, 0x5EED]).permutation(len(jobs))
    jobs = [jobs[i] for i in perm]
  return jobs, font_skips, no_font


_WORKER = {}


def _init_worker(font_specs, knobs, seed, target_height, frames_per_pixel):
  _WORKER.update(fonts=font_specs, knobs=knobs, seed=seed, th=target_height,
                 fpp=frames_per_pixel, cache={})


def _render_job(job: Job):
  """-> (jpeg bytes, height, width) or None when the label cannot fit the image's frames."""
  w = _WORKER
  rng = np.random.default_rng([w["seed"], SPLIT_CODES[job.split], job.line_id, job.variant])
  size = render.draw_size(rng, w["knobs"])
  key = (job.font, size)
  font = w["cache"].get(key)
  if font is None:
    font = w["cache"][key] = fonts_lib.load_font(w["fonts"][job.font], size)
  jpeg, h, width, _ = render.render_line(job.text, font, rng, w["knobs"])
  if render.frames_available(h, width, w["th"], w["fpp"]) < render.frames_needed(job.text):
    return None
  return jpeg, h, width


# Bytes a record adds to its JPEG (the text, label, font and ids; TFRecord framing), measured on
# data/poem18b: 1.07x the JPEG bytes + ~90 bytes.
RECORD_OVERHEAD = (1.07, 90)


def check_disk_space(out_dir, jobs, fonts, opts, log, sample=24):
  """Before rendering: the dataset's size estimated from `sample` images rendered here (spread over
  the jobs, the same seeds as the real ones) against the free space of `out_dir`'s disk.  Too little
  space is one DatagenError naming both; the estimate goes to the manifest (for the message of a
  disk that fills up anyway, `estimated_bytes`) and the log."""
  import shutil
  if not jobs:
    return 0
  _init_worker(fonts, opts.knobs, opts.seed, opts.target_height, opts.frames_per_pixel)
  picked = [jobs[i * len(jobs) // min(sample, len(jobs))] for i in range(min(sample, len(jobs)))]
  sizes = [len(r[0]) for r in map(_render_job, picked) if r is not None] or [0]
  per_image = sum(sizes) / len(sizes)
  need = len(jobs) * (per_image * RECORD_OVERHEAD[0] + RECORD_OVERHEAD[1])
  if opts.write_images:
    need += len(jobs) * (per_image + 4096)  # one more file per image (a file system block each)
  free = shutil.disk_usage(out_dir).free
  from datagen import manifest
  manifest.update(out_dir, estimated_bytes=int(need))
  log(f"disk: the dataset needs about {need / 1e6:.0f} MB ({len(jobs)} images at ~{per_image / 1e3:.1f} kB, "
      f"estimated from {len(picked)} rendered); {free / 1e6:.0f} MB free")
  if free < need * 1.05:
    raise DatagenError(f"{out_dir}: not enough disk space: the dataset needs about {need / 1e6:.0f} MB ({len(jobs)} "
                       f"images at ~{per_image / 1e3:.1f} kB each, estimated from {len(picked)} rendered) and its disk "
                       f"has {free / 1e6:.0f} MB free; free some space or choose another --out, then run the same "
                       "command again")
  return need


def _results(jobs, fonts, opts, pool):
  if pool is None:
    _init_worker(fonts, opts.knobs, opts.seed, opts.target_height, opts.frames_per_pixel)
    return map(_render_job, jobs)
  return pool.imap(_render_job, jobs, chunksize=64)


def versions():
  import PIL
  from PIL import features as pil_features
  out = {"python": platform.python_version(), "numpy": np.__version__, "pillow": PIL.__version__,
         "freetype": pil_features.version("freetype2")}
  for mod in ("tensorflow", "tensorflow_datasets"):
    m = sys.modules.get(mod)
    if m is not None:
      out[mod] = m.__version__
  from datagen import __version__
  out["datagen"] = __version__
  return out


def check_font_weights(weights, fonts, holdout):
  """Refuses a weight for an unknown or held-out font, or one that is not a positive number."""
  names = {f.name for f in fonts}
  for name, w in weights.items():
    if name not in names:
      raise DatagenError(f"--font-weights {name}={w}: no font is called {name!r} (fonts: {sorted(names)})")
    if name in holdout:
      raise DatagenError(f"--font-weights {name}={w}: {name} is a --holdout-fonts font, it renders no "
                         "training images; leave it out of --font-weights")
    if not (w > 0 and np.isfinite(w)):
      raise DatagenError(f"--font-weights {name}={w}: a weight must be a positive number")


def render_dataset(out_dir, splits, charset, fonts, holdout, opts: RenderOptions, extra_meta=None,
                   log=print):
  """Renders `splits` ({name: [Line]}) into shards in `out_dir` and writes meta.json.

  `fonts` is the list of FontSpec; names in `holdout` render validation/test images only.
  """
  from tqdm import tqdm
  out_dir = pathlib.Path(out_dir)
  unknown = set(holdout) - {f.name for f in fonts}
  if unknown:
    raise DatagenError(f"--holdout-fonts {sorted(unknown)} are not among the fonts "
                       f"{[f.name for f in fonts]}")
  all_chars = sorted({c for lines in splits.values() for l in lines for c in l.text})
  for lines in splits.values():
    for line in lines:
      charset.encode(line.text)  # raises naming the character if the charset lacks it
  log(f"checking glyph coverage of {len(fonts)} fonts over {len(all_chars)} characters")
  coverage = [fonts_lib.coverage(f, all_chars) for f in fonts]
  for f, cov in zip(fonts, coverage):
    n_lines = sum(1 for lines in splits.values() for l in lines if set(l.text) <= cov)
    if n_lines == 0:
      lacking = "".join(c for c in all_chars if c not in cov)[:20]
      raise DatagenError(f"font {f.path} lacks characters for every line (missing e.g. {lacking!r}); "
                         "it cannot render anything: leave it out of --fonts")
  train_ids = [i for i, f in enumerate(fonts) if f.name not in holdout]
  all_ids = list(range(len(fonts)))
  if not train_ids:
    raise DatagenError("every font is a --holdout-fonts font; keep at least one for training")
  check_font_weights(opts.font_weights, fonts, holdout)

  plans = {}
  for split in SPLITS:
    if split in splits:
      ids, k = (train_ids, opts.variants) if split == "train" else (all_ids, opts.eval_variants)
      weights = ({i: opts.font_weights[f.name] for i, f in enumerate(fonts) if f.name in opts.font_weights}
                 if split == "train" else None)
      plans[split] = plan_split(split, splits[split], fonts, coverage, ids, k, opts.seed, weights)
  check_disk_space(out_dir, [j for jobs, _, _ in plans.values() for j in jobs], fonts, opts, log)

  records.remove_shards(out_dir)
  channels = 3 if opts.knobs.color else 1
  workers = opts.workers or os.cpu_count() or 1
  ctx = multiprocessing.get_context("spawn")
  pool = (ctx.Pool(workers, _init_worker, (fonts, opts.knobs, opts.seed, opts.target_height,
                                           opts.frames_per_pixel)) if workers > 1 else None)
  counts, skips, infos = {}, {"font_lacks_glyph": {}, "no_font_for_line": {}, "infeasible_label": {}}, []
  samples = {}
  t0 = time.time()
  try:
    for split in SPLITS:
      if split not in splits:
        continue
      jobs, font_skips, no_font = plans[split]
      skips["font_lacks_glyph"][split] = dict(sorted(font_skips.items()))
      skips["no_font_for_line"][split] = len(no_font)
      if no_font:
        log(f"WARNING {split}: {len(no_font)} lines have no font that draws all their characters "
            f"and are not rendered, e.g. {[l.text for l in no_font[:5]]}")
      if not jobs:
        log(f"WARNING {split}: no images to render ({len(splits[split])} lines); the split is left out")
        counts[split] = {"lines": len(splits[split]), "images": 0, "shards": 0, "bytes": 0}
        skips["infeasible_label"][split] = 0
        continue
      total = records.num_shards(len(jobs), opts.examples_per_shard)
      writer = records.SplitWriter(out_dir, split, len(jobs), total, channels)
      rejected = 0
      pics = []
      # (closed on an error too: the error's line then starts a line of its own)
      with tqdm(total=len(jobs), desc=f"render {split}", unit="img", dynamic_ncols=True,
                mininterval=2.0, file=sys.stderr) as bar:
        for pos, (job, res) in enumerate(zip(jobs, _results(jobs, fonts, opts, pool))):
          bar.update(1)
          if res is None:
            rejected += 1
            continue
          jpeg, _, _ = res
          writer.write(pos, {"image": jpeg, "text": job.text, "label": charset.encode(job.text),
                             "font": fonts[job.font].name, "variant": job.variant,
                             "line_id": job.line_id, "source": job.source})
          if opts.write_images:
            pics.append(_write_image(out_dir, job, fonts[job.font].name, jpeg))
      writer.close()
      if opts.write_images:
        _write_sample_txt(out_dir, split, pics)
      skips["infeasible_label"][split] = rejected
      if sum(writer.shard_lengths) == 0:
        log(f"WARNING {split}: every image was rejected as infeasible; the split is left out")
        records.remove_shards(out_dir, split)
      else:
        infos.append(writer.split_info())
      counts[split] = {"lines": len(splits[split]), "images": sum(writer.shard_lengths),
                       "shards": total, "bytes": writer.num_bytes,
                       "sources": dict(collections.Counter(l.source for l in splits[split]))}
      log(f"{split}: {counts[split]['images']} images of {len(splits[split])} lines in {total} shards "
          f"({writer.num_bytes / 1e6:.1f} MB); {rejected} rejected as infeasible for CTC "
          f"(frames per pixel {opts.frames_per_pixel} at height {opts.target_height})")
  finally:
    if pool is not None:
      pool.close()
      pool.join()
  seconds = time.time() - t0
  records.write_metadata(out_dir, infos, channels,
                         description="Chinese text lines rendered by crnn-jax datagen")
  meta = {
      "format": META_FORMAT,
      "seed": opts.seed,
      "variants": opts.variants,
      **({"font_weights": dict(opts.font_weights)} if opts.font_weights else {}),
      "eval_variants": opts.eval_variants,
      "target_height": opts.target_height,
      "frames_per_pixel": opts.frames_per_pixel,
      "channels": channels,
      "num_chars": len(charset),
      "fonts": [{"name": f.name, "file": os.path.basename(f.path), "index": f.index,
                 "sha256": fonts_lib.sha256_font(f.path),
                 "role": "holdout" if f.name in holdout else "train",
                 "chars_covered": len(c)} for f, c in zip(fonts, coverage)],
      "render": dataclasses.asdict(opts.knobs),
      "counts": counts,
      "skips": skips,
      "render_seconds": round(seconds, 1),
      "versions": versions(),
  }
  meta.update(extra_meta or {})
  write_meta(out_dir, meta)
  n = sum(c["images"] for c in counts.values())
  log(f"rendered {n} images in {seconds:.0f} s ({n / max(seconds, 1e-9):.0f} images/s, {workers} workers)")
  return meta


def _write_image(out_dir, job, font_name, jpeg):
  rel = f"pic/{job.line_id}/{job.variant}_{font_name}.jpg"
  path = out_dir / rel
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(jpeg)
  return rel, job.text


def _write_sample_txt(out_dir, split, pics):
  folder = out_dir / {"train": "Train", "validation": "Validation", "test": "Test"}[split]
  folder.mkdir(parents=True, exist_ok=True)
  with open(folder / "sample.txt", "w", encoding="utf-8") as f:
    for rel, text in sorted(pics):
      f.write(f"{rel} {text}\n")


def write_meta(out_dir, meta):
  with open(pathlib.Path(out_dir) / "meta.json", "w", encoding="utf-8") as f:
    json.dump(meta, f, ensure_ascii=False, indent=2)
    f.write("\n")


def read_meta(out_dir):
  path = pathlib.Path(out_dir) / "meta.json"
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except ValueError as e:
    raise DatagenError(f"{path} is not valid JSON ({e}); delete it or the whole folder") from None


def load_charset(out_dir):
  return charset_lib.Charset.read(out_dir)
