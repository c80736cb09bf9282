"""crnn-eval: metrics of a workdir's best checkpoint on a split, and an error gallery.

    crnn-eval --workdir W [--data D] [--split test] [--checkpoint best|latest|STEP] [--gallery N]
              [--decoder greedy|beam] [--lm-weight X] [--lm-order N] [--beam K]

Prints the metrics as JSON (overall, by length, by font, and by how often the reference characters
occur in the training text when DATA_DIR has datagen's splits/) and writes
W/eval_<split>.json and W/errors_<split>.png (the worst N: image, truth, prediction; with
`--checkpoint STEP`, W/eval_<split>_step<STEP>.json and W/errors_<split>_step<STEP>.png);
`--predictions F.tsv` also writes every example (with beam search, its greedy reading too).  Decoding follows the run's config.decode
unless the flags say otherwise; with beam search the JSON also holds "greedy", the greedy
reading of the same model outputs (the model alone, without the LM).
"""
import argparse
import collections
import json
import os
import sys

from crnn_jax import config_check


# ---- evaluation over a split (tf.data over the TFRecords; also train.py's periodic evaluation) --
def pipeline_spec(config, local_batch_size):
  from crnn_jax import input_pipeline
  from crnn_jax.model import width_stride
  return input_pipeline.PipelineSpec(
      height=config.input.height, buckets=tuple(config.input.width_buckets),
      stride=width_stride(config.model.conv_pools), max_label_length=config.input.max_label_length,
      local_batch_size=local_batch_size)


def variables_of(state):
  """A train state (or its `train.inference_view`) -> the {"params", "batch_stats"} the reading
  path's steps take."""
  return {"params": state.params, "batch_stats": state.batch_stats}


def eval_batches(steps, config, data_dir, split, max_examples=None):
  """Yields (host batch padded to eval.batch_size rows, number of real rows, images and frames
  for `steps`) over a split.  Every process reads the whole split and feeds its own rows of each
  global batch, so all processes see the same batches (same widths)."""
  import jax
  from crnn_jax import input_pipeline
  n_proc, p = jax.process_count(), jax.process_index()
  gb = config.eval.batch_size
  lb = gb // n_proc
  skip = bool(config.input.get("skip_damaged_records", False))
  ds = iter(input_pipeline.eval_dataset(data_dir, pipeline_spec(config, gb), split, max_examples=max_examples,
                                        skip_damaged=skip))
  while True:
    try:
      raw = next(ds)
    except StopIteration:
      return
    except Exception as e:  # noqa: BLE001 -- tf.errors.DataLossError: "corrupted record at N", no file named
      if type(e).__name__ != "DataLossError":
        raise
      from crnn_jax.errors import UserError
      where = input_pipeline.damaged_record_where(e, input_pipeline.process_files(data_dir, split), split)
      raise UserError(f"a damaged {split} record: {where}; rebuild that shard or restore it from a copy (or read "
                      "each shard up to its damage: --config.input.skip_damaged_records=True in training)") from None
    b = input_pipeline.pad_rows(input_pipeline.to_numpy(raw), gb)
    x, f = steps.put(b["image"][p * lb:(p + 1) * lb], b["frames"][p * lb:(p + 1) * lb])
    yield b, int(b["weight"].sum()), (x, f)


def evaluate(steps, variables, config, data_dir, split, charset, max_examples=None, keep_images=False,
             decoding=None):
  """Decodes a split with `steps` (`inference.Steps`) and `variables`; returns (metrics dict,
  Accumulator, images as uint8 [H, w] crops, one per Accumulator row, when `keep_images`).

  `decoding` None: greedy.  Else the keyword arguments of `decode.beam_batch` plus "topk": beam
  search (with the LM it names); the metrics dict then also holds "greedy", the greedy reading of
  the same outputs (the top-1 class per frame), for comparison.

  All processes compute the same metrics (`eval_batches`).
  """
  import jax
  import numpy as np
  from crnn_jax.decode import beam_batch, greedy_batch
  from crnn_jax.metrics import Accumulator
  from crnn_jax.model import width_stride
  stride = width_stride(config.model.conv_pools)
  acc, acc_greedy = Accumulator(), Accumulator()
  images = []
  if decoding is not None:
    decoding = dict(decoding)
    step_fn = steps.topk(int(decoding.pop("topk")))
  for b, n, (x, f) in eval_batches(steps, config, data_dir, split, max_examples):
    refs = [t.decode() for t in b["text"][:n]]
    fonts = [t.decode() for t in b["font"][:n]]
    if decoding is None:
      best = np.asarray(jax.device_get(steps.greedy(variables, x, f)[0]))
      hyps = greedy_batch(best, b["frames"], charset)
    else:
      vals, ids, blank = (np.asarray(a) for a in jax.device_get(step_fn(variables, x, f)))
      acc_greedy.add(refs, greedy_batch(ids[:n, :, 0], b["frames"][:n], charset)[:n], fonts)
      hyps = beam_batch(vals[:n], ids[:n], blank[:n], b["frames"][:n], charset, **decoding)
    acc.add(refs, hyps[:n], fonts)
    if keep_images:
      for i in range(n):
        w = min(b["image"].shape[2], int(b["frames"][i]) * stride)
        images.append((b["image"][i, :, :w, 0] * 255).round().astype(np.uint8))
  res = acc.result()
  acc.greedy = None
  if decoding is not None:
    acc.greedy = acc_greedy  # row by row beside acc's rows
    g = acc_greedy.result()
    res["greedy"] = {k: g[k] for k in ("n", "seq_acc", "cer", "one_minus_ned", "by_font") if k in g}
  return res, acc, images


def gallery(path, rows, font_path=None):
  """rows: (truth, prediction, font, edit distance, uint8 image) -> one PNG, a row each."""
  from PIL import Image, ImageDraw, ImageFont
  cell_w, img_h, text_h, pad = 520, 40, 44, 6
  sheet = Image.new("RGB", (cell_w + 2 * pad, max(1, len(rows)) * (img_h + text_h + pad) + pad), "white")
  draw = ImageDraw.Draw(sheet)
  font = ImageFont.truetype(font_path, 16) if font_path else ImageFont.load_default()
  for j, (ref, hyp, fnt, dist, im) in enumerate(rows):
    y = pad + j * (img_h + text_h + pad)
    pic = Image.fromarray(im)
    w = min(cell_w, max(1, round(pic.width * img_h / pic.height)))
    sheet.paste(pic.resize((w, img_h)).convert("RGB"), (pad, y))
    draw.text((pad, y + img_h + 2), f"truth: {ref}", font=font, fill=(0, 110, 0))
    draw.text((pad, y + img_h + 22), f"pred:  {hyp}   (edits {dist}, {fnt})", font=font, fill=(170, 0, 0))
  sheet.save(path)


def _label_font():
  try:
    from datagen import fonts  # optional: the bundled CJK font draws the labels when installed
    return fonts.default_fonts()[0].path
  except ImportError:
    return None


def train_char_counts(data_dir):
  """char -> occurrences in DATA_DIR/splits/train.txt (datagen's training text), or None."""
  path = os.path.join(data_dir, "splits", "train.txt")
  if not os.path.exists(path):
    return None
  counts = collections.Counter()
  with open(path, encoding="utf-8") as f:
    for line in f:
      counts.update(line.rstrip("\n").split("\t")[-1])
  return counts


def _describe(s):
  if s["decoder"] == "greedy":
    return {"decoder": "greedy"}
  keep = ("decoder", "beam", "topk", "prune", "lm_weight", "length_bonus") + (("lm_order",) if s["lm_weight"] else ())
  return {k: s[k] for k in keep}


def main(argv=None):
  ap = config_check.parser(prog="crnn-eval", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--workdir", required=True)
  from crnn_jax.workdir import add_checkpoint_flags, add_decoder_flags, decoder_overrides
  add_checkpoint_flags(ap)
  add_decoder_flags(ap)
  ap.add_argument("--data", default=None, help="DATA_DIR (default: the one the run trained on)")
  ap.add_argument("--split", default="test")
  ap.add_argument("--gallery", type=config_check.arg_type(config_check.Int(0)), default=40, help="worst cases drawn into errors_<split>.png")
  ap.add_argument("--max-examples", type=config_check.arg_type(config_check.Int(1)), default=None)
  ap.add_argument("--predictions", default=None, metavar="F.tsv",
                  help="also write every example as reference<TAB>prediction<TAB>font<TAB>edit distance")
  args = ap.parse_args(argv)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from crnn_jax import decode, inference, mesh as mesh_lib
  from crnn_jax.charset import Charset
  from crnn_jax.errors import UserError
  try:
    overrides = decoder_overrides(args)
    reader = inference.load(args.workdir, args.checkpoint, args.weights, decoding=overrides,
                            mesh=mesh_lib.make_mesh())
    config, charset, step = reader.config, reader.charset, reader.step
    data = args.data or config.data_dir
    data_cs = Charset.read(data)
    if data_cs != charset:
      raise UserError(f"{data}/chinese.txt ({len(data_cs)} characters) differs from the character set "
                      f"{args.workdir} was trained with ({len(charset)}); evaluate on matching data")
    # The LM belongs to the run: built from the data it trained on, whatever --data evaluates.
    decoding = decode.decoding_for(config, args.workdir, config.data_dir, charset, overrides)
    res, acc, images = evaluate(reader.steps, reader.variables, config, data, args.split, charset,
                                max_examples=args.max_examples, keep_images=args.gallery > 0,
                                decoding=decoding)
  except UserError as e:
    print(f"crnn-eval: error: {e}", file=sys.stderr)
    return 2
  res = {"workdir": args.workdir, "checkpoint_step": step, "weights": reader.weights, "split": args.split, "data": data,
         "decoding": _describe(decode.settings(config, overrides)), **res}
  counts = train_char_counts(data)
  if counts is not None:
    res["by_train_count"] = acc.by_train_count(counts)
  # A step asked for by number gets its own files beside the run's eval_<split>.json.
  tag = f"{args.split}_step{step}" if args.checkpoint.isdigit() else args.split
  with open(os.path.join(args.workdir, f"eval_{tag}.json"), "w", encoding="utf-8") as f:
    json.dump(res, f, ensure_ascii=False, indent=2)
  if args.predictions:
    with open(args.predictions, "w", encoding="utf-8") as f:
      greedy = [r[1] for r in acc.greedy.rows] if acc.greedy is not None else None
      f.write("reference\tprediction\tfont\tedit_distance" + ("\tgreedy_prediction" if greedy else "") + "\n")
      for i, (ref, hyp, font, dist) in enumerate(acc.rows):
        f.write(f"{ref}\t{hyp}\t{font}\t{dist}" + (f"\t{greedy[i]}" if greedy else "") + "\n")
    print(f"predictions ({len(acc.rows)} rows): {args.predictions}", file=sys.stderr)
  if args.gallery > 0 and acc.rows:
    worst = [i for i in acc.worst(args.gallery) if acc.rows[i][3] > 0]
    path = os.path.join(args.workdir, f"errors_{tag}.png")
    gallery(path, [acc.rows[i] + (images[i],) for i in worst], _label_font())
    print(f"error gallery ({len(worst)} cases): {path}", file=sys.stderr)
  print(json.dumps(res, ensure_ascii=False, indent=2))
  return 0


def run():
  sys.exit(main())


if __name__ == "__main__":
  run()
