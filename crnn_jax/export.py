"""crnn-export: a trained model as files that run without crnn-jax.

    crnn-export --workdir W --out DIR [--format stablehlo|savedmodel|onnx|all] [--checkpoint best] [--weights ema]

DIR/contract.json       the input contract (height, width multiple, buckets, preprocessing, classes)
DIR/chinese.txt         the charset: class i = line i (1-based), class 0 = the CTC blank
DIR/stablehlo/model.jax_exported
                        jax.export, serialized: (float32 [b, H, W, 1], int32 frames [b]) -> logits
                        [b, W / stride, classes], symbolic b and W (one artifact for every line
                        length); `jax.export.deserialize(bytes).call(images, frames)`
DIR/savedmodel/1/       a TF SavedModel (jax2tf, native serialization) as TF Serving lays models out
                        (model base path DIR/savedmodel, version 1).  Signatures:
                          serving_default  images: string [b] (encoded PNG/JPEG/BMP/GIF) ->
                                           text [b], confidence [b], char_confidences [b, L], num_chars [b]
                          pixels           images: uint8 [b, H, W, 1] at the model height, widths int32 [b]
                                           -> the same outputs
                          logits           images float32 [b, H, W, 1], frames int32 [b] -> logits
                        decoding is greedy, inside the graph (no LM).
DIR/onnx/model.onnx     ONNX (crnn_jax/onnx_export.py), the same inputs and output as StableHLO, dynamic
                        b and W; onnxruntime runs it.  --quantize: also model.int8.onnx (dynamic int8).

Every artifact reads the model's inputs as `inference.to_input` makes them (README, "Deploy").
"""
import argparse
import json
import os
import pathlib
import shutil
import sys
import time

from crnn_jax import config_check, inference

FORMATS = ("stablehlo", "savedmodel", "onnx")
CONTRACT_VERSION = 1


def contract(reader):
  c = reader.config
  return {
      "contract_version": CONTRACT_VERSION,
      "model": "crnn-jax CRNN (conv + BiLSTM + CTC)",
      "checkpoint_step": reader.step,
      "weights": reader.weights,
      "num_classes": reader.charset.num_classes,
      "charset": "chinese.txt: UTF-8, one character per line; class i is line i (1-based), class 0 the CTC blank",
      "input": {
          "height": reader.height,
          "width_multiple": reader.stride,
          "layout": "float32 [batch, height, width, 1] (ONNX: [batch, 1, height, width])",
          "range": "[0, 1] grey as decoded (dark text on light or light on dark: the model standardises each line)"
                   if c.model.get("input_norm", "none") == "standardize" else "[0, 1] grey as decoded",
          "frames": f"int32 [batch] (ONNX: int64): valid frames = resized width // {reader.stride}",
          "preprocess": [
              "grey: JPEG through libjpeg's grey output (tf.io.decode_jpeg(channels=1)); other colour images "
              "by ITU-R 601 luma; transparency laid on white",
              f"resize to height {reader.height} keeping the aspect ratio: width = max({reader.stride}, "
              f"round(w * {reader.height} / h)), bilinear with antialiasing (tf.image.resize(antialias=True))",
              "pad on the right with the line's mean grey to the smallest width bucket that holds it "
              f"(past the largest, a multiple of {inference.EXTRA_BUCKET_STEP})",
          ],
          "width_buckets": list(reader.buckets),
      },
      "output": {"logits": f"float32 [batch, width // {reader.stride}, num_classes]; frames past `frames` are padding"},
      "decoding": "greedy: the best class per valid frame, repeats merged, class 0 dropped; a character's "
                  "confidence is the highest softmax probability over its frames, the line's the mean of them",
  }


# ---- StableHLO ------------------------------------------------------------------------------
def model_fn(reader):
  """(images, frames) -> logits with the reader's weights closed over (constants of the artifact)."""
  variables, model = reader.variables, reader.model

  def fn(images, frames):
    return model.apply(variables, images, frames, train=False)
  return fn


def export_stablehlo(reader, out_dir):
  import jax
  import jax.numpy as jnp
  from jax import export
  b, k = export.symbolic_shape("b, k")
  exp = export.export(jax.jit(model_fn(reader)), platforms=("cpu", "cuda"))(
      jax.ShapeDtypeStruct((b, reader.height, reader.stride * k, 1), jnp.float32),
      jax.ShapeDtypeStruct((b,), jnp.int32))
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, "model.jax_exported")
  with open(path, "wb") as f:
    f.write(exp.serialize())
  return path


# ---- TF SavedModel --------------------------------------------------------------------------
def _greedy_tf(tf, logits, frames, chars):
  """Greedy CTC decoding in the graph: logits [n, T, C], frames [n] -> text [n], confidence [n],
  char_confidences [n, L] (0 past num_chars), num_chars [n]."""
  probs = tf.nn.softmax(logits, axis=-1)
  ids = tf.argmax(logits, axis=-1, output_type=tf.int32)
  best = tf.reduce_max(probs, axis=-1)
  n, t = tf.shape(ids)[0], tf.shape(ids)[1]
  valid = tf.range(t)[None, :] < frames[:, None]
  prev = tf.pad(ids[:, :-1], [[0, 0], [1, 0]])
  emit = valid & (ids != 0) & (ids != prev)
  in_char = valid & (ids != 0)
  table = tf.concat([tf.constant([""]), chars], 0)
  texts = tf.strings.reduce_join(tf.gather(table, tf.where(emit, ids, 0)), axis=1)
  num = tf.reduce_sum(tf.cast(emit, tf.int32), axis=1)
  width = tf.maximum(tf.reduce_max(tf.concat([num, [0]], 0)), 1)
  seg = tf.range(n)[:, None] * width + tf.cumsum(tf.cast(emit, tf.int32), axis=1) - 1
  conf = tf.math.unsorted_segment_max(tf.boolean_mask(best, in_char), tf.boolean_mask(seg, in_char), n * width)
  conf = tf.reshape(conf, [n, width])
  conf = tf.where(tf.range(width)[None, :] < num[:, None], conf, 0.0)
  blank_mean = tf.reduce_sum(tf.where(valid, probs[..., 0], 0.0), 1) / tf.cast(tf.maximum(frames, 1), tf.float32)
  line = tf.where(num > 0, tf.reduce_sum(conf, 1) / tf.cast(tf.maximum(num, 1), tf.float32), blank_mean)
  return {"text": texts, "confidence": line, "char_confidences": conf, "num_chars": num}


def _grey_tf(tf, rgba):
  """uint8 [h, w, 4] -> [h, w, 1] grey as `inference.open_image` makes it: laid on white, then
  Pillow's luma, (19595 R + 38470 G + 7471 B + 2^15) >> 16."""
  x = tf.cast(rgba, tf.int32)
  a = x[..., 3:]
  rgb = (x[..., :3] * a + 255 * (255 - a) + 127) // 255
  grey = (rgb[..., :1] * 19595 + rgb[..., 1:2] * 38470 + rgb[..., 2:3] * 7471 + 32768) // 65536
  return tf.cast(grey, tf.uint8)


def export_savedmodel(reader, out_dir):
  """DIR/1/ with the signatures of the module docstring."""
  import tensorflow as tf
  from jax.experimental import jax2tf
  height, stride = reader.height, reader.stride
  buckets = list(reader.buckets)
  num_classes = reader.charset.num_classes
  # The weights as tf.Variables (saved once, shared by every call site), the model one function
  # (traced once: every bucket calls the same concrete function).
  model = reader.model
  weights = tf.nest.map_structure(tf.Variable, reader.variables)
  apply_tf = jax2tf.convert(lambda v, images, frames: model.apply(v, images, frames, train=False),
                            polymorphic_shapes=[None, f"(b, {height}, {stride}*k, 1)", "(b,)"], with_gradient=False)

  @tf.function(autograph=False, input_signature=[tf.TensorSpec([None, height, None, 1], tf.float32),
                                                 tf.TensorSpec([None], tf.int32)])
  def run_model(images, frames):
    return tf.ensure_shape(apply_tf(weights, images, frames), [None, None, num_classes])

  def decode_one(data):
    """Encoded bytes -> the line resized to the model height, [W, height] (width first: ragged)."""
    img = tf.cond(tf.io.is_jpeg(data),
                  lambda: tf.io.decode_jpeg(data, channels=1, dct_method="INTEGER_ACCURATE"),
                  lambda: _grey_tf(tf, tf.io.decode_image(data, channels=4, expand_animations=False)))
    h, w = tf.shape(img)[0], tf.shape(img)[1]
    new_w = tf.cast(tf.round(tf.cast(w, tf.float32) * height / tf.cast(h, tf.float32)), tf.int32)
    new_w = tf.maximum(new_w, stride)
    x = tf.image.resize(tf.cast(img, tf.float32) / 255.0, [height, new_w], antialias=True)
    return tf.transpose(x[..., 0])

  def bucket_of(widths):
    idx = tf.searchsorted(tf.constant(buckets, tf.int32), widths, side="left")
    return tf.where(idx < len(buckets), tf.gather(tf.constant(buckets + [0], tf.int32), idx), -1)

  def read_lines(lines, widths):
    """lines: RaggedTensor [n, None (width), height] float; -> greedy outputs, each line padded to
    its own width bucket with its mean grey (the reader's batches), one model call per bucket."""
    n = tf.shape(widths)[0]
    means = tf.reduce_sum(tf.reduce_sum(lines, axis=2), axis=1) / tf.cast(widths * height, tf.float32)
    bucket = bucket_of(widths)
    extra = tf.cast(tf.math.ceil(tf.cast(tf.reduce_max(tf.concat([widths, [0]], 0)), tf.float32)
                                 / inference.EXTRA_BUCKET_STEP), tf.int32) * inference.EXTRA_BUCKET_STEP
    parts_idx, parts = [], {k: [] for k in ("text", "confidence", "char_confidences", "num_chars")}
    max_len = tf.constant(1)
    outs = []
    for b in buckets + [-1]:
      sel = tf.reshape(tf.where(tf.equal(bucket, b)), [-1])
      target = extra if b == -1 else tf.constant(b)

      def run(sel=sel, target=target):
        sub = tf.gather(lines, sel)
        w = tf.gather(widths, sel)
        m = tf.gather(means, sel)
        dense = sub.to_tensor(default_value=0.0)
        dense = tf.pad(dense, [[0, 0], [0, target - tf.shape(dense)[1]], [0, 0]])
        cols = tf.range(target)[None, :, None] < w[:, None, None]
        x = tf.where(cols, dense, m[:, None, None])
        x = tf.transpose(x, [0, 2, 1])[..., None]
        out = _greedy_tf(tf, run_model(x, w // stride), w // stride, chars)
        return out
      outs.append((sel, run))
    for sel, run in outs:
      out = tf.cond(tf.size(sel) > 0, run, lambda: {"text": tf.zeros([0], tf.string),
                                                      "confidence": tf.zeros([0], tf.float32),
                                                      "char_confidences": tf.zeros([0, 1], tf.float32),
                                                      "num_chars": tf.zeros([0], tf.int32)})
      parts_idx.append(tf.cast(sel, tf.int32))
      for k in parts:
        parts[k].append(out[k])
      max_len = tf.maximum(max_len, tf.shape(out["char_confidences"])[1])
    confs = [tf.pad(c, [[0, 0], [0, max_len - tf.shape(c)[1]]]) for c in parts["char_confidences"]]
    result = {k: tf.dynamic_stitch(parts_idx, parts[k]) for k in ("text", "confidence", "num_chars")}
    result["char_confidences"] = tf.reshape(tf.dynamic_stitch(parts_idx, confs), [n, max_len])
    return result

  chars = tf.constant(reader.charset.chars)

  class Served(tf.Module):
    @tf.function(autograph=False, input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def serve_bytes(self, images):
      lines = tf.map_fn(decode_one, images,
                        fn_output_signature=tf.RaggedTensorSpec(shape=[None, height], dtype=tf.float32,
                                                                ragged_rank=0))
      widths = tf.cast(lines.row_lengths(), tf.int32)
      return read_lines(lines, widths)

    @tf.function(autograph=False, input_signature=[tf.TensorSpec([None, height, None, 1], tf.uint8, name="images"),
                                  tf.TensorSpec([None], tf.int32, name="widths")])
    def serve_pixels(self, images, widths):
      x = tf.transpose(tf.cast(images[..., 0], tf.float32) / 255.0, [0, 2, 1])  # [n, W, height]
      widths = tf.clip_by_value(widths, stride, tf.shape(images)[2])
      lines = tf.RaggedTensor.from_tensor(x, lengths=widths)
      return read_lines(lines, widths)

    @tf.function(autograph=False, input_signature=[tf.TensorSpec([None, height, None, 1], tf.float32, name="images"),
                                  tf.TensorSpec([None], tf.int32, name="frames")])
    def serve_logits(self, images, frames):
      return {"logits": run_model(images, frames)}

  module = Served()
  module.weights = weights
  module.run_model = run_model
  version_dir = os.path.join(out_dir, "1")
  if os.path.exists(version_dir):
    shutil.rmtree(version_dir)
  assets = pathlib.Path(out_dir) / "_assets"
  assets.mkdir(parents=True, exist_ok=True)
  reader.charset.write(assets / "chinese.txt")
  module.charset_file = tf.saved_model.Asset(str(assets / "chinese.txt"))
  tf.saved_model.save(module, version_dir, signatures={
      "serving_default": module.serve_bytes, "pixels": module.serve_pixels, "logits": module.serve_logits})
  shutil.rmtree(assets)
  return version_dir


# ---- the command ----------------------------------------------------------------------------
def export_all(reader, out, formats, quantize=False):
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  reader.charset.write(out / "chinese.txt")
  (out / "contract.json").write_text(json.dumps(contract(reader), ensure_ascii=False, indent=1) + "\n",
                                     encoding="utf-8")
  done = {}
  for fmt in formats:
    t = time.time()
    if fmt == "stablehlo":
      path = export_stablehlo(reader, out / "stablehlo")
    elif fmt == "savedmodel":
      path = export_savedmodel(reader, out / "savedmodel")
    else:
      from crnn_jax import onnx_export
      path = onnx_export.export_onnx(reader, out / "onnx", quantize=quantize)
    done[fmt] = {"path": str(path), "seconds": round(time.time() - t, 1)}
  return done


def main(argv=None):
  ap = config_check.parser(prog="crnn-export", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--out", required=True)
  ap.add_argument("--format", default="all", choices=FORMATS + ("all",))
  ap.add_argument("--quantize", action="store_true",
                  help="ONNX: also onnx/model.int8.onnx, onnxruntime's dynamic int8 quantization (BENCHMARKS.md: its accuracy)")
  from crnn_jax.workdir import add_checkpoint_flags
  add_checkpoint_flags(ap)
  args = ap.parse_args(argv)
  from crnn_jax.errors import UserError
  try:
    reader = inference.load(args.workdir, args.checkpoint, args.weights, decoding={"decoder": "greedy"})
    done = export_all(reader, args.out, FORMATS if args.format == "all" else (args.format,), args.quantize)
  except UserError as e:
    print(f"crnn-export: error: {e}", file=sys.stderr)
    return 2
  print(json.dumps({"workdir": args.workdir, "checkpoint_step": reader.step, "weights": reader.weights,
                    "out": args.out, "artifacts": done}, indent=1))
  return 0


def run():
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  sys.exit(main())


if __name__ == "__main__":
  run()
