"""The CRNN as an ONNX graph, written op by op from the trained variables (onnx.helper).

Why not a converter: jax2onnx pins orbax-checkpoint < 0.11.37 (we pin 0.12.8), and tf2onnx cannot
read the XlaCallModule op that jax2tf's native serialization writes.  The model is a short list of
standard ops, so the graph is built directly, in the model's own order:

    images [b, H, W, 1] float32, frames [b] int32
    -> NCHW -> (model.input_norm "standardize": each line over its first frames * stride columns)
    -> per conv layer: Conv 3x3 (SAME, no bias) -> [max pool of sign(a) * x, times sign(a)] ->
       batch norm's affine part from the running averages (a = scale / sqrt(var + eps)) -> Relu
    -> [b, T, C] -> per BiLSTM layer: one bidirectional ONNX LSTM (gates reordered i, o, f, c;
       the cell's forget-gate +1 folded into the bias; sequence_lens = frames) -> masked
    -> (+ the linear shortcut from the conv features) -> the classifier -> logits [b, T, classes]

Dynamic batch and width; onnxruntime runs it (tests/test_export.py: logits within 1e-4 of the jitted
model, the same strings).  `quantize_int8` writes onnxruntime's dynamic int8 quantization beside it.
"""
import os

import numpy as np

OPSET = 17


def _np(x):
  return np.asarray(x, np.float32)


def build(reader):
  """-> onnx.ModelProto of the reader's model (its EMA or raw weights, as loaded)."""
  import onnx
  from onnx import TensorProto, helper, numpy_helper
  from crnn_jax.model import GroupBatchNorm
  cfg = reader.config.model
  params = reader.variables["params"]
  stats = reader.variables["batch_stats"]
  stride = reader.stride
  nodes, inits = [], []
  counter = [0]

  def name(prefix):
    counter[0] += 1
    return f"{prefix}_{counter[0]}"

  def const(value, prefix="c", dtype=np.float32):
    n = name(prefix)
    inits.append(numpy_helper.from_array(np.asarray(value, dtype), n))
    return n

  def op(kind, inputs, prefix=None, **attrs):
    out = name(prefix or kind.lower())
    nodes.append(helper.make_node(kind, inputs, [out], **attrs))
    return out

  # images [b, H, W, 1] -> [b, 1, H, W]
  x = op("Transpose", ["images"], perm=[0, 3, 1, 2])
  frames64 = op("Cast", ["frames"], to=TensorProto.INT64)
  width = op("Gather", [op("Shape", [x]), const(3, dtype=np.int64)], axis=0)  # scalar W
  # mask of the valid columns [b, 1, 1, W]: column < max(frames * stride, 1)
  valid = op("Max", [op("Mul", [frames64, const(stride, dtype=np.int64)]), const(1, dtype=np.int64)])
  cols = op("Range", [const(0, dtype=np.int64), width, const(1, dtype=np.int64)])
  colmask = op("Cast", [op("Less", [op("Unsqueeze", [cols, const([0], dtype=np.int64)]),
                                    op("Unsqueeze", [valid, const([1], dtype=np.int64)])])], to=TensorProto.FLOAT)
  colmask4 = op("Unsqueeze", [colmask, const([1, 2], dtype=np.int64)])  # [b, 1, 1, W]
  if cfg.get("input_norm", "none") == "standardize":
    axes = const([1, 2, 3], dtype=np.int64)
    n = op("Mul", [op("ReduceSum", [colmask4, axes], keepdims=1), const(float(reader.height))])
    mean = op("Div", [op("ReduceSum", [op("Mul", [x, colmask4]), axes], keepdims=1), n])
    centred = op("Sub", [x, mean])
    var = op("Div", [op("ReduceSum", [op("Mul", [op("Mul", [centred, centred]), colmask4]), axes], keepdims=1), n])
    x = op("Mul", [centred, op("Reciprocal", [op("Sqrt", [op("Add", [var, const(1e-4)])])])])
  # conv stack
  for i, (feat, pool) in enumerate(zip(cfg.conv_features, cfg.conv_pools)):
    kernel = _np(params[f"conv{i}"]["kernel"])  # [3, 3, in, out]
    x = op("Conv", [x, const(kernel.transpose(3, 2, 0, 1))], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    bn, st = params[f"bn{i}"], stats[f"bn{i}"]
    a = _np(bn["scale"]) / np.sqrt(_np(st["var"]) + np.float32(GroupBatchNorm.epsilon))
    shift = _np(bn["bias"]) - _np(st["mean"]) * a
    if tuple(pool) != (1, 1):
      sign = np.where(a >= 0, 1.0, -1.0).astype(np.float32).reshape(1, -1, 1, 1)
      pooled = op("MaxPool", [op("Mul", [x, const(sign)]) if (sign < 0).any() else x],
                  kernel_shape=list(pool), strides=list(pool))
      x = op("Mul", [pooled, const(sign)]) if (sign < 0).any() else pooled
    x = op("Relu", [op("Add", [op("Mul", [x, const(a.reshape(1, -1, 1, 1))]), const(shift.reshape(1, -1, 1, 1))])])
  # [b, C, 1, T] -> [b, T, C]
  feats = op("Transpose", [op("Squeeze", [x, const([2], dtype=np.int64)])], perm=[0, 2, 1])
  x = feats
  frame_mask = op("Unsqueeze", [op("Cast", [op("Less", [
      op("Unsqueeze", [op("Range", [const(0, dtype=np.int64), op("Gather", [op("Shape", [feats]), const(1, dtype=np.int64)], axis=0),
                                    const(1, dtype=np.int64)]), const([0], dtype=np.int64)]),
      op("Unsqueeze", [frames64, const([1], dtype=np.int64)])])], to=TensorProto.FLOAT), const([2], dtype=np.int64)])
  h = int(cfg.lstm_hidden)
  for i in range(int(cfg.lstm_layers)):
    p = params[f"lstm{i}"]
    k_in, b_in = _np(p["input_proj"]["kernel"]), _np(p["input_proj"]["bias"])  # [D, 2, 4H], [2, 4H]
    k_rec = _np(p["recurrent_kernel"])  # [2, H, 4H]

    def iofc(m):  # last axis i, f, g, o -> i, o, f, c
      gi, gf, gg, go = np.split(m, 4, axis=-1)
      return np.concatenate([gi, go, gf, gg], axis=-1)
    W = np.stack([iofc(k_in[:, d, :]).T for d in range(2)])          # [2, 4H, D]
    R = np.stack([iofc(k_rec[d]).T for d in range(2)])              # [2, 4H, H]
    bias = b_in.copy()
    bias[:, h:2 * h] += 1.0  # the cell's forget-gate bias (+1), folded in (order i, f, g, o)
    B = np.concatenate([np.stack([iofc(bias[d]) for d in range(2)]), np.zeros((2, 4 * h), np.float32)], axis=1)
    seq = op("Transpose", [x], perm=[1, 0, 2])  # [T, b, D]
    y = name("lstm_y")
    nodes.append(helper.make_node("LSTM", [seq, const(W), const(R), const(B), "frames"], [y],
                                  direction="bidirectional", hidden_size=h))
    # Y [T, 2, b, H] -> [b, T, 2H] (forward then backward, as the model concatenates), masked
    y = op("Reshape", [op("Transpose", [y], perm=[2, 0, 1, 3]), const([0, 0, 2 * h], dtype=np.int64)])
    x = op("Mul", [y, frame_mask])
  if cfg.get("shortcut", False) and int(cfg.lstm_layers):
    s = params["shortcut"]
    x = op("Add", [x, op("Add", [op("MatMul", [feats, const(_np(s["kernel"]))]), const(_np(s["bias"]))])])
  c = params["classifier"]
  logits = op("Add", [op("MatMul", [x, const(_np(c["kernel"]))]), const(_np(c["bias"]))])
  nodes.append(helper.make_node("Identity", [logits], ["logits"]))
  graph = helper.make_graph(
      nodes, "crnn",
      [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", reader.height, "width", 1]),
       helper.make_tensor_value_info("frames", TensorProto.INT32, ["batch"])],
      [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "frames_out", reader.charset.num_classes])],
      initializer=inits)
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="crnn-jax")
  model.ir_version = 8  # onnxruntime 1.14+ reads it
  onnx.checker.check_model(model)
  return model


def export_onnx(reader, out_dir, quantize=False):
  import onnx
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, "model.onnx")
  onnx.save(build(reader), path)
  if quantize:
    quantize_int8(path, os.path.join(out_dir, "model.int8.onnx"))
  return path


def quantize_int8(src, dst):
  """onnxruntime's dynamic quantization: int8 weights for MatMul/LSTM (activations quantized on the fly)."""
  from onnxruntime.quantization import QuantType, quantize_dynamic
  quantize_dynamic(src, dst, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "LSTM"])
  return dst
