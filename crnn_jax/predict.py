"""crnn-predict: read text lines from image files.

    crnn-predict --workdir W [--format tsv|jsonl] [--output F] [--checkpoint best|latest|STEP]
                 [--decoder greedy|beam] [--alternatives K] IMAGE_OR_DIR ...

PNG, JPEG, BMP, WebP, TIFF or GIF of any size, grey or colour (a user's own crops, any height,
with margins), read by the inference core (crnn_jax/inference.py): grey, resized to the model's
input height keeping the aspect ratio, batched by width bucket (a line wider than the largest
bucket is read in full at a width of its own, with a warning; never squeezed).  Output, in the
order given (folders: sorted, recursive):
  tsv    path<TAB>text
  jsonl  {"path", "text", "confidence", "char_confidences", "alternatives", "decoder", "width",
          "step", "timing_ms"} per line (confidences: see inference.Reading)
Decoding follows the run's config.decode (beam search with the character LM the run saved as
W/lm<order>.json, for configs/poem_cpu.py) unless --decoder/--lm-weight/... say otherwise.
An unreadable, truncated or empty image gets one line on stderr and is counted; the exit status
is then 1.
"""
import argparse
import json
import logging
import os
import sys
import time

from crnn_jax import config_check

CHUNK = 256  # images decoded and read at a time (memory stays bounded on large folders)


def format_line(path, reading, fmt):
  if fmt == "tsv":
    return f"{path}\t{reading.text}"
  return json.dumps({"path": str(path), **reading.to_dict()}, ensure_ascii=False)


def main(argv=None):
  ap = config_check.parser(prog="crnn-predict", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--workdir", required=True)
  from crnn_jax.workdir import (add_checkpoint_flags, add_decoder_flags, add_device_flags, decoder_overrides,
                                 reading_mesh, setup_cpu_devices)
  add_checkpoint_flags(ap)
  add_decoder_flags(ap)
  add_device_flags(ap)
  ap.add_argument("--format", choices=("tsv", "jsonl"), default="tsv")
  ap.add_argument("--alternatives", type=config_check.arg_type(config_check.Int(0, 100)), default=0, metavar="K",
                  help="also the K best texts of the beam search, each with its share (jsonl)")
  ap.add_argument("--output", default=None, help="also write the lines to this file")
  ap.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
  args = ap.parse_args(argv)
  logging.basicConfig(level=logging.WARNING, format="crnn-predict: %(message)s")
  setup_cpu_devices(args.cpu_devices)
  from crnn_jax import inference
  from crnn_jax.errors import UserError
  try:
    files = inference.collect(args.inputs)  # before the model is loaded: an empty folder is one line at once
    reader = inference.load(args.workdir, args.checkpoint, args.weights, decoding=decoder_overrides(args),
                            mesh=reading_mesh())
  except UserError as e:
    print(f"crnn-predict: error: {e}", file=sys.stderr)
    return 2
  out = open(args.output, "w", encoding="utf-8") if args.output else None
  bad = 0
  try:
    for s in range(0, len(files), CHUNK):
      good, rows, pre_ms = [], [], []
      for f in files[s:s + CHUNK]:
        t0 = time.perf_counter()
        try:
          rows.append(inference.Prepared(reader.prepare(f)))
          good.append(f)
          pre_ms.append((time.perf_counter() - t0) * 1e3)
        except inference.ImageError as e:
          print(f"crnn-predict: skipped {f}: {e}", file=sys.stderr)
          bad += 1
      for f, r, ms in zip(good, reader.read(rows, alternatives=args.alternatives) if rows else [], pre_ms):
        r.timing_ms["preprocess"] = ms
        line = format_line(f, r, args.format)
        print(line, flush=True)
        if out:
          out.write(line + "\n")
  finally:
    if out:
      out.close()
  if bad:
    print(f"crnn-predict: {bad} of {len(files)} images could not be read", file=sys.stderr)
    return 1
  return 0


def run():
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  sys.exit(main())


if __name__ == "__main__":
  run()
