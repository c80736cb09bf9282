"""`datagen`: build a DATA_DIR from the corpus, step by step or all at once.

  datagen build   --out DATA_DIR [options]   charset + split + render + preview, in one go
  datagen charset --out DATA_DIR             chinese.txt and char_dict/*.json
  datagen split   --out DATA_DIR             splits/{train,validation,test}.txt (+ balance lines)
  datagen render  --out DATA_DIR             TFRecord shards (alias: tfrecords), meta.json
  datagen preview --out DATA_DIR             preview.png from the shards
  datagen import  --src ORIGINAL_DIR --out DATA_DIR
                                             the original example's sample.txt layout -> TFRecords

`datagen COMMAND --help` lists every option with its default.
"""
import argparse
import dataclasses
import json
import os
import pathlib
import shutil
import sys
import time

from datagen import build, charset as charset_lib, corpus as corpus_lib, fonts as fonts_lib
from datagen import manifest, preview as preview_lib, records, render, split as split_lib
from datagen.errors import DatagenError, is_disk_full



def log(msg):
  print(f"[datagen {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- options ------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
  """A bad flag or value is one line (the flag, the value, what is allowed) and exit 2, not a usage
  screen: `datagen COMMAND --help` has the options."""

  def error(self, message):
    self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` lists the options)\n")


def _num(kind, lo=None, hi=None):
  """An argparse type: an int/float in [lo, hi] (finite), else one message naming what is allowed."""
  want = ("a whole number" if kind is int else "a finite number") + (
      f" in [{lo}, {hi}]" if lo is not None and hi is not None else f" >= {lo}" if lo is not None else "")

  def parse(text):
    try:
      v = kind(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"{text!r}: want {want}") from None
    if v != v or v in (float("inf"), float("-inf")) or (lo is not None and v < lo) or (hi is not None and v > hi):
      raise argparse.ArgumentTypeError(f"{text!r}: want {want}")
    return v
  parse.__name__ = kind.__name__
  return parse


def _add_corpus(p):
  p.add_argument("--corpus", default=None,
                 help="corpus file (default: the bundled THUOCL_poem.txt)")
  p.add_argument("--plain-corpus", action="store_true",
                 help="the corpus has one text per line, no tab and count")


def _add_split(p):
  p.add_argument("--seed", type=_num(int, 0, 2**31 - 1), default=0, help="seed of the split and of every random choice")
  p.add_argument("--validation-fraction", type=_num(float, 0.0, 0.5), default=0.05, help="share of lines held out for validation")
  p.add_argument("--test-fraction", type=_num(float, 0.0, 0.5), default=0.05, help="share of lines held out for test")
  p.add_argument("--min-char-count", type=_num(int, 0), default=15,
                 help="balance lines are added until a character with n occurrences in the training corpus "
                      "lines occurs ceil(min_char_count * n ** balance_power) times in training text "
                      "(0 = no balance lines)")
  p.add_argument("--balance-power", type=_num(float, 0.0, 4.0), default=0.5,
                 help="exponent of the balance target: 0 = the same floor for every character (the "
                      "defaults before 2026-11-26 were --min-char-count 40 --balance-power 0); see "
                      "datagen/split.py for why ~0.5 suits a test of corpus lines")


def _add_render(p):
  p.add_argument("--fonts", nargs="+", default=None, metavar="FONT",
                 help="font files, FILE.ttc:INDEX or folders (default: the 5 bundled subsets)")
  p.add_argument("--holdout-fonts", nargs="*", default=None, metavar="NAME",
                 help="font names (file stems) used only for validation/test images, an unseen-font "
                      f"check (default: {' '.join(fonts_lib.DEFAULT_HOLDOUT)} with the bundled fonts, "
                      "none with --fonts)")
  p.add_argument("--variants", type=_num(int, 1), default=10, help="images rendered per training line")
  p.add_argument("--font-weights", nargs="+", default=None, metavar="NAME=W",
                 help="share out each training line's variants in proportion to these font weights "
                      "(fonts not named weigh 1), e.g. to give the fonts read worst more examples; "
                      "default: the variants cycle through the fonts")
  p.add_argument("--eval-variants", type=_num(int, 1), default=5,
                 help="images per validation/test line, cycling through the fonts that cover it")
  p.add_argument("--target-height", type=_num(int, 8, 512), default=32, help="model input height (shared with the model config)")
  p.add_argument("--frames-per-pixel", type=_num(float, 0.01, 1.0), default=0.125,
                 help="CTC frames per pixel of width at the target height, 1 / the model's width stride "
                      "(8 for configs/poem_cpu.py; the paper model's 4 gives more frames, so 1/8 suits both); "
                      "labels needing more frames than the image gives are rejected and counted")
  p.add_argument("--examples-per-shard", type=_num(int, 1), default=2048, help="largest shard; shard counts are multiples of 8")
  p.add_argument("--workers", type=_num(int, 0, 512), default=0, help="render processes (0 = one per core); output does not depend on it")
  p.add_argument("--write-images", action="store_true",
                 help="also write pic/<line>/<variant>_<font>.jpg and Train|Validation|Test/sample.txt "
                      "(the original example's layout)")
  g = p.add_argument_group("augmentation knobs (per image, seeded)")
  for f in dataclasses.fields(render.RenderConfig):
    flag = "--" + f.name.replace("_", "-")
    if f.type in (bool, "bool"):
      g.add_argument(flag, action="store_true", help=f.metadata["help"])
    else:
      typ = int if f.type in (int, "int") else float
      g.add_argument(flag, type=_num(typ, f.metadata["lo"], f.metadata["hi"]), default=f.default,
                     help=f.metadata["help"])


def _add_out(p, overwrite=True):
  p.add_argument("--out", required=True, help="the DATA_DIR to write")
  if overwrite:
    p.add_argument("--overwrite", action="store_true",
                   help="replace a different dataset already in --out (only datagen's own files are removed)")


def parser():
  ap = _Parser(prog="datagen", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
  fmt = argparse.ArgumentDefaultsHelpFormatter
  p = sub.add_parser("build", help="every step: charset, split, render, preview", formatter_class=fmt)
  _add_out(p); _add_corpus(p); _add_split(p); _add_render(p)
  p = sub.add_parser("charset", help="write chinese.txt and char_dict/*.json", formatter_class=fmt)
  _add_out(p); _add_corpus(p)
  p = sub.add_parser("split", help="write splits/*.txt", formatter_class=fmt)
  _add_out(p); _add_corpus(p); _add_split(p)
  for name in ("render", "tfrecords"):
    p = sub.add_parser(name, help="render splits/*.txt into TFRecord shards + meta.json", formatter_class=fmt)
    _add_out(p); _add_render(p)
  p = sub.add_parser("preview", help="write preview.png from the shards", formatter_class=fmt)
  _add_out(p, overwrite=False)
  p = sub.add_parser("import", help="the original example's layout -> TFRecord dataset", formatter_class=fmt)
  p.add_argument("--src", required=True, help="folder with chinese.txt, Train/sample.txt, Test/sample.txt, images")
  _add_out(p)
  p.add_argument("--seed", type=_num(int, 0, 2**31 - 1), default=0)
  p.add_argument("--validation-fraction", type=_num(float, 0.0, 0.5), default=0.05,
                 help="share of Train label texts held out when there is no Validation/sample.txt")
  p.add_argument("--target-height", type=_num(int, 8, 512), default=32)
  p.add_argument("--frames-per-pixel", type=_num(float, 0.01, 1.0), default=0.125)
  p.add_argument("--examples-per-shard", type=_num(int, 1), default=2048)
  p.add_argument("--color", action="store_true", help="keep RGB images (default: grayscale)")
  p.add_argument("--max-pixels", type=_num(int, 1), default=40_000_000,
                 help="per image, checked from its header before it is decoded")
  p.add_argument("--allow-outside-src", action="store_true",
                 help="let sample.txt name images outside --src (.., absolute paths, links that leave it)")
  return ap


# ---- the DATA_DIR guard -------------------------------------------------------------------
def _guard(out: pathlib.Path, fingerprint: dict, overwrite: bool) -> bool:
  """True if `out` already holds exactly this dataset.  Refuses to overwrite a different one; with
  --overwrite removes only what an earlier datagen build wrote (`datagen/manifest.py`), and refuses,
  naming them, where files with datagen's names are not datagen's."""
  if not out.exists():
    return False
  if not out.is_dir():
    raise DatagenError(f"--out {out} is a file, not a folder")
  meta = build.read_meta(out)
  if meta is not None and meta.get("build_args") == fingerprint and (out / "dataset_info.json").exists():
    return True
  ours, foreign = manifest.owned(out, records.DATASET_NAME)
  if not ours and not foreign:
    return False
  if foreign:
    names = ", ".join(f"{n} ({why})" for n, why in foreign[:4]) + (" ..." if len(foreign) > 4 else "")
    raise DatagenError(f"{out} holds files datagen did not write: {names}; datagen writes there and "
                       "--overwrite never removes them: choose another --out, or move them out of the way")
  unfinished = manifest.read(out)
  if unfinished.get("status") == "writing" and unfinished.get("build_args") == fingerprint:
    overwrite = True
    log(f"{out} holds an unfinished build with these same settings (interrupted: stopped, killed or out of disk "
        "space): starting it again")
  elif not overwrite and unfinished.get("status") == "writing" and unfinished.get("build_args"):
    old = unfinished["build_args"]
    diff = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
    raise DatagenError(f"{out} holds an unfinished build with other settings ({', '.join(diff)} differ): run that "
                       "build's command again to finish it, or pass --overwrite to replace it")
  if not overwrite:
    if meta is not None and "build_args" in meta:
      old = meta["build_args"]
      diff = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
      why = f"built with other settings ({', '.join(diff)} differ)"
    else:
      why = f"holds another or an unfinished dataset ({', '.join(ours[:4])} ...)"
    raise DatagenError(f"{out} {why}; choose another --out, or pass --overwrite to replace it")
  for n in ours:
    p = out / n
    shutil.rmtree(p) if p.is_dir() else p.unlink()
  log(f"removed {len(ours)} files/folders of the earlier dataset in {out} (datagen's own, "
      f"{manifest.MANIFEST})")
  return False


def _same_or_nested(a: pathlib.Path, b: pathlib.Path) -> bool:
  a, b = a.resolve(), b.resolve()
  return a == b or a in b.parents or b in a.parents


def _fonts(args):
  if args.fonts:
    specs = fonts_lib.parse_font_args(args.fonts)
    holdout = tuple(args.holdout_fonts or ())
  else:
    specs = fonts_lib.default_fonts()
    holdout = tuple(fonts_lib.DEFAULT_HOLDOUT if args.holdout_fonts is None else args.holdout_fonts)
  for s in specs:
    if not pathlib.Path(s.path).is_file():
      raise DatagenError(f"font {s.path} is missing")
  unknown = sorted(set(holdout) - {s.name for s in specs})
  if unknown:
    raise DatagenError(f"--holdout-fonts {unknown} are not among the fonts {[s.name for s in specs]}")
  return specs, holdout


def _options(args):
  knobs = render.RenderConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(render.RenderConfig)})
  if knobs.size_min > knobs.size_max or knobs.size_min < 6:
    raise DatagenError(f"--size-min {knobs.size_min} / --size-max {knobs.size_max}: need 6 <= min <= max")
  if not 1 <= knobs.jpeg_min <= knobs.jpeg_max <= 100:
    raise DatagenError(f"--jpeg-min {knobs.jpeg_min} / --jpeg-max {knobs.jpeg_max}: need 1 <= min <= max <= 100")
  if knobs.spacing_min > knobs.spacing_max:
    raise DatagenError(f"--spacing-min {knobs.spacing_min} / --spacing-max {knobs.spacing_max}: need min <= max")
  return build.RenderOptions(seed=getattr(args, "seed", 0), variants=args.variants,
                             font_weights=_font_weights(args.font_weights),
                             eval_variants=args.eval_variants, target_height=args.target_height,
                             frames_per_pixel=args.frames_per_pixel, examples_per_shard=args.examples_per_shard,
                             workers=args.workers, write_images=args.write_images, knobs=knobs)


def _check_line_lengths(corpus, knobs):
  """A line too long to draw (a JPEG is at most 65,535 px wide; Pillow fails with "broken data
  stream") is refused before anything is written, naming its line in the corpus file."""
  per_char = knobs.size_max * (1 + max(knobs.spacing_max, 0.0)) * 1.15  # + shear, stroke, jitter
  limit = int((60_000 - 2 * knobs.margin_x_max * knobs.size_max) // per_char)
  longest = max(corpus.lines, key=len)
  if len(longest) <= limit:
    return
  n = next((i for i, line in enumerate(pathlib.Path(corpus.path).read_text(encoding="utf-8-sig").splitlines(), 1)
            if longest in line), "?")
  raise DatagenError(f"{corpus.path}:{n}: a line of {len(longest)} characters; with --size-max {knobs.size_max} and "
                     f"--spacing-max {knobs.spacing_max} datagen draws lines of up to {limit} (a JPEG is at most "
                     "65,535 px wide): split it into shorter lines (the model reads up to config "
                     "input.max_label_length characters a line, 24 by default)")


def _font_weights(items):
  weights = {}
  for item in items or ():
    name, sep, value = item.rpartition("=")
    try:
      w = float(value)
    except ValueError:
      w = None
    if not sep or not name or w is None:
      raise DatagenError(f"--font-weights {item!r}: expected NAME=WEIGHT, e.g. KaiTi=1.6 (NAME is a font file's stem)")
    if name in weights:
      raise DatagenError(f"--font-weights names {name} twice")
    weights[name] = w
  return weights


def _fingerprint(args, corpus, specs, holdout, opts):
  return {"corpus_sha256": corpus.sha256, "fonts": [[s.name, fonts_lib.sha256_font(s.path)] for s in specs],
          "holdout_fonts": list(holdout), "seed": opts.seed, "variants": opts.variants,
          "eval_variants": opts.eval_variants, "validation_fraction": args.validation_fraction,
          "test_fraction": args.test_fraction, "min_char_count": args.min_char_count,
          **_balance_power_key(args), **({"font_weights": opts.font_weights} if opts.font_weights else {}),
          "target_height": opts.target_height, "frames_per_pixel": opts.frames_per_pixel,
          "examples_per_shard": opts.examples_per_shard, "render": dataclasses.asdict(opts.knobs)}


def _balance_power_key(args):
  # Named only when set, so that datasets built before the knob existed (power 0) still match.
  return {"balance_power": args.balance_power} if args.balance_power else {}


# ---- steps --------------------------------------------------------------------------------
def step_charset(out, corpus):
  cs = charset_lib.Charset.from_texts(corpus.lines)
  if (out / charset_lib.CHARSET_FILE).exists():
    old = charset_lib.Charset.read(out)
    if old != cs:
      raise DatagenError(f"{out / charset_lib.CHARSET_FILE} holds a different character set "
                         f"({len(old)} vs {len(cs)} characters); use another --out")
  out.mkdir(parents=True, exist_ok=True)
  cs.write(out)
  log(f"charset: {len(cs)} characters (code point order) -> {out / charset_lib.CHARSET_FILE}")
  return cs


def step_split(out, corpus, args):
  splits = split_lib.split_lines(corpus.lines, args.seed, args.validation_fraction, args.test_fraction)
  held = [l.text for s in ("validation", "test") for l in splits[s]]
  if args.min_char_count > 0:
    extra = split_lib.balance_lines(splits["train"], held, args.min_char_count, args.seed,
                                    first_id=len(corpus.lines), power=args.balance_power)
    splits["train"] = splits["train"] + extra
  split_lib.check_split(splits)
  split_lib.write_splits(splits, out)
  info = {"corpus": pathlib.Path(corpus.path).name, "corpus_sha256": corpus.sha256, "seed": args.seed,
          "validation_fraction": args.validation_fraction, "test_fraction": args.test_fraction,
          "min_char_count": args.min_char_count, **_balance_power_key(args),
          "lines": {s: len(v) for s, v in splits.items()},
          "balance_lines": sum(1 for l in splits["train"] if l.source == "balance")}
  (out / "splits" / "split.json").write_text(json.dumps(info, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
  log(f"split: {info['lines']} lines ({info['balance_lines']} balance lines in train)")
  return splits, info


def step_render(out, args, extra_meta=None):
  specs, holdout = _fonts(args)
  opts = _options(args)
  cs = charset_lib.Charset.read(out)
  splits = split_lib.read_splits(out)
  split_info_path = out / "splits" / "split.json"
  extra = dict(extra_meta or {})
  if split_info_path.exists():
    extra.setdefault("split", json.loads(split_info_path.read_text(encoding="utf-8")))
  return build.render_dataset(out, splits, cs, specs, holdout, opts, extra_meta=extra, log=log)


def step_preview(out):
  path, n = preview_lib.make_preview(out)
  log(f"preview: {n} samples -> {path}")


def run(argv=None):
  args = parser().parse_args(argv)
  out = pathlib.Path(args.out)
  if args.command == "build":
    corpus = corpus_lib.read_corpus(args.corpus, require_tab=not args.plain_corpus)
    specs, holdout = _fonts(args)
    opts = _options(args)
    build.check_font_weights(opts.font_weights, specs, holdout)  # before anything is written
    _check_line_lengths(corpus, opts.knobs)
    fp = _fingerprint(args, corpus, specs, holdout, opts)
    if _guard(out, fp, args.overwrite):
      log(f"{out} already holds this dataset (same corpus, fonts, seed and knobs): nothing to do")
      return 0
    manifest.begin(out, records.DATASET_NAME, fp)
    t0 = time.time()
    step_charset(out, corpus)
    step_split(out, corpus, args)
    meta = step_render(out, args, extra_meta={"build_args": fp, "corpus": {
        "file": pathlib.Path(corpus.path).name, "sha256": corpus.sha256, "lines": len(corpus)}})
    step_preview(out)
    meta["build_seconds"] = round(time.time() - t0, 1)
    build.write_meta(out, meta)
    manifest.finish(out)
    n = sum(c["images"] for c in meta["counts"].values())
    mb = sum(c["bytes"] for c in meta["counts"].values()) / 1e6
    log(f"done: {n} images, {mb:.0f} MB in {out} ({meta['build_seconds']:.0f} s)")
  elif args.command == "charset":
    step_charset(out, corpus_lib.read_corpus(args.corpus, require_tab=not args.plain_corpus))
  elif args.command == "split":
    corpus = corpus_lib.read_corpus(args.corpus, require_tab=not args.plain_corpus)
    if (out / "splits" / "split.json").exists() and not args.overwrite:
      old = json.loads((out / "splits" / "split.json").read_text(encoding="utf-8"))
      if (old.get("seed"), old.get("corpus_sha256"), old.get("min_char_count"), old.get("balance_power", 0.0)) != (
          args.seed, corpus.sha256, args.min_char_count, args.balance_power):
        raise DatagenError(f"{out / 'splits'} holds a split with other settings; use another --out "
                           "or pass --overwrite")
    step_split(out, corpus, args)
  elif args.command in ("render", "tfrecords"):
    meta = build.read_meta(out)
    if meta is not None and not args.overwrite:
      raise DatagenError(f"{out} already holds rendered shards (meta.json); pass --overwrite to render again")
    step_render(out, args)
  elif args.command == "preview":
    if not (out / "dataset_info.json").exists():
      raise DatagenError(f"{out} has no dataset_info.json; run `datagen render --out {out}` first")
    step_preview(out)
  elif args.command == "import":
    src = pathlib.Path(args.src)
    if _same_or_nested(src, out):
      raise DatagenError(f"--src {src} and --out {out} are the same folder or one holds the other: the import "
                         "would write its files among your originals; give --out a folder of its own")
    fp = {"imported_from": str(src.resolve())}
    if _guard(out, fp, args.overwrite):
      pass  # an import is cheap: do it again so changed images are picked up
    manifest.begin(out, records.DATASET_NAME, fp)
    from datagen import importer
    importer.import_dataset(src, out, seed=args.seed, validation_fraction=args.validation_fraction,
                            target_height=args.target_height, frames_per_pixel=args.frames_per_pixel,
                            examples_per_shard=args.examples_per_shard, color=args.color, log=log,
                            allow_outside_src=args.allow_outside_src, max_pixels=args.max_pixels)
    meta = build.read_meta(out)
    meta["build_args"] = fp
    build.write_meta(out, meta)
    step_preview(out)
    manifest.finish(out)
  return 0


def _out_of(argv):
  args = list(sys.argv[1:] if argv is None else argv)
  for i, a in enumerate(args):
    if a == "--out" and i + 1 < len(args):
      return pathlib.Path(args[i + 1])
    if a.startswith("--out="):
      return pathlib.Path(a[len("--out="):])
  return None


def main(argv=None):
  """-> the exit status (a bad flag: 2, its one line printed by the parser; --help: 0)."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow only writes files here
  try:
    return run(argv)
  except SystemExit as e:  # argparse: a bad flag or --help
    return e.code if isinstance(e.code, int) else 2
  except DatagenError as e:
    print(f"datagen: error: {e}", file=sys.stderr)
    return 2
  except Exception as e:  # noqa: BLE001 -- a full disk shows up as OSError or as TensorFlow's own errors
    if not is_disk_full(e):
      raise
    out = _out_of(argv)
    est = manifest.read(out).get("estimated_bytes") if out else None
    import shutil
    free = shutil.disk_usage(out).free if out and out.exists() else None
    print(f"datagen: error: out of disk space writing into {out} ({type(e).__name__}: "
          f"{str(e).strip().splitlines()[0][:160] if str(e).strip() else 'ENOSPC'}); "
          + (f"the dataset needs about {est / 1e6:.0f} MB, " if est else "")
          + (f"{free / 1e6:.0f} MB are free now. " if free is not None else "")
          + "Free some space (or choose another --out) and run the same command again: it starts the unfinished "
          "build again", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("datagen: interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
