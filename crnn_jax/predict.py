"""crnn-predict: read text lines from image files.

    crnn-predict --workdir W [--output F.tsv] [--checkpoint best|latest] [--decoder greedy|beam] IMAGE_OR_DIR ...

PNG or JPEG of any size, grayscale or colour (a user's own crops, any height, with margins):
each is turned grayscale, resized to the model's input height keeping its aspect ratio and
batched by width bucket.  Prints `path<TAB>text` in the order given (folders: sorted, recursive).
Decoding follows the run's config.decode (beam search with the character LM the run saved as
W/lm<order>.json, for configs/poem_cpu.py) unless --decoder/--lm-weight/... say otherwise.
An unreadable, truncated or empty image gets one line on stderr and is counted; the exit status
is then 1.
"""
import argparse
import os
import pathlib
import sys

import numpy as np

SUFFIXES = (".png", ".jpg", ".jpeg")


def collect(paths):
  files = []
  for p in map(pathlib.Path, paths):
    if p.is_dir():
      files.extend(sorted(f for f in p.rglob("*") if f.suffix.lower() in SUFFIXES))
    else:
      files.append(p)
  return files


def load_gray(path, height):
  """-> float32 [height, w] in [0, 1], or raises ValueError with the reason."""
  from PIL import Image, UnidentifiedImageError
  try:
    with Image.open(path) as im:
      im.load()
      if im.width == 0 or im.height == 0:
        raise ValueError(f"empty image ({im.width}x{im.height})")
      g = im.convert("L")
  except FileNotFoundError:
    raise ValueError("no such file") from None
  except (UnidentifiedImageError, OSError, SyntaxError) as e:
    raise ValueError(f"not a readable PNG/JPEG ({e})") from None
  w = max(1, round(g.width * height / g.height))
  return np.asarray(g.resize((w, height), Image.Resampling.BILINEAR), np.float32) / 255.0


def recognise(compiled, state, config, charset, images, decoding=None):
  """images: list of float32 [H, w] -> list of strings (same order).  `decoding`: None (greedy)
  or the beam-search settings of `decode.decoding_for`."""
  import jax
  from crnn_jax import mesh as mesh_lib
  from crnn_jax.decode import beam_batch, greedy_batch
  from crnn_jax.model import width_stride
  buckets = list(config.input.width_buckets)
  stride = width_stride(config.model.conv_pools)
  bs = config.eval.batch_size
  out = [None] * len(images)
  by_bucket = {}
  for i, im in enumerate(images):
    w = min(im.shape[1], buckets[-1])
    b = next(x for x in buckets if x >= w)
    by_bucket.setdefault(b, []).append(i)
  for width, idx in sorted(by_bucket.items()):
    for s in range(0, len(idx), bs):
      chunk = idx[s:s + bs]
      x = np.zeros((bs, config.input.height, width, 1), np.float32)
      frames = np.ones((bs,), np.int32)
      for r, i in enumerate(chunk):
        im = images[i]
        if im.shape[1] > width:  # squeeze an over-wide line into the largest bucket
          from PIL import Image
          im = np.asarray(Image.fromarray(im).resize((width, im.shape[0]), Image.Resampling.BILINEAR))
        x[r, :, :im.shape[1], 0] = im
        x[r, :, im.shape[1]:, 0] = im.mean()
        frames[r] = max(1, im.shape[1] // stride)
      g = mesh_lib.global_batch({"image": x, "frames": frames}, compiled.mesh)
      if decoding is None:
        best = np.asarray(jax.device_get(compiled.predict_step(state, g["image"], g["frames"])))
        texts = greedy_batch(best, frames, charset)
      else:
        kw = dict(decoding)
        outs = jax.device_get(compiled.topk_step(int(kw.pop("topk")))(state, g["image"], g["frames"]))
        texts = beam_batch(*outs, frames, charset, **kw)
      for r, text in enumerate(texts[:len(chunk)]):
        out[chunk[r]] = text
  return out


def main(argv=None):
  ap = argparse.ArgumentParser(prog="crnn-predict", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--workdir", required=True)
  from crnn_jax.workdir import add_checkpoint_flags, add_decoder_flags, decoder_overrides
  add_checkpoint_flags(ap)
  add_decoder_flags(ap)
  ap.add_argument("--output", default=None, help="also write path<TAB>text lines to this TSV file")
  ap.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
  args = ap.parse_args(argv)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from crnn_jax import decode, workdir as workdir_lib
  from crnn_jax.errors import UserError
  try:
    config, charset, compiled, state, _ = workdir_lib.load(args.workdir, args.checkpoint, args.weights)
    decoding = decode.decoding_for(config, args.workdir, config.data_dir, charset, decoder_overrides(args))
  except UserError as e:
    print(f"crnn-predict: error: {e}", file=sys.stderr)
    return 2
  files = collect(args.inputs)
  good, images, bad = [], [], 0
  for f in files:
    try:
      images.append(load_gray(f, config.input.height))
      good.append(f)
    except ValueError as e:
      print(f"crnn-predict: skipped {f}: {e}", file=sys.stderr)
      bad += 1
  texts = recognise(compiled, state, config, charset, images, decoding) if images else []
  lines = [f"{f}\t{t}" for f, t in zip(good, texts)]
  for line in lines:
    print(line)
  if args.output:
    pathlib.Path(args.output).write_text("".join(l + "\n" for l in lines), encoding="utf-8")
  if bad:
    print(f"crnn-predict: {bad} of {len(files)} images could not be read", file=sys.stderr)
    return 1
  return 0


def run():
  sys.exit(main())


if __name__ == "__main__":
  run()
