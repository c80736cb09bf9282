"""crnn-export: each artifact, loaded by its own runtime in a process that never imports crnn_jax,
reads the lines crnn-predict --decoder greedy reads, with logits within 1e-4."""
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from crnn_jax import export, inference

from conftest import why

ROOT = pathlib.Path(__file__).resolve().parent.parent

# What a user runs with only the runtime installed (README, "Deploy"); each prints JSON lines
# {"text"} or {"logits"} for the inputs the test wrote.  None of them may import crnn_jax.
RUNNERS = {
    "stablehlo": """
import json, sys, numpy as np
from jax import export
exp = export.deserialize(open(sys.argv[1] + "/stablehlo/model.jax_exported", "rb").read())
batches = np.load(sys.argv[2])
for i in range(len(batches.files) // 2):
  logits = np.asarray(exp.call(batches[f"x{i}"], batches[f"f{i}"]))
  print(json.dumps({"logits": logits.tolist()}))
""",
    "onnx": """
import json, sys, numpy as np, onnxruntime as ort
sess = ort.InferenceSession(sys.argv[1] + "/onnx/model.onnx")
batches = np.load(sys.argv[2])
for i in range(len(batches.files) // 2):
  logits = sess.run(["logits"], {"images": batches[f"x{i}"], "frames": batches[f"f{i}"]})[0]
  print(json.dumps({"logits": logits.tolist()}))
""",
    "savedmodel": """
import json, sys, numpy as np, tensorflow as tf
m = tf.saved_model.load(sys.argv[1] + "/savedmodel/1")
images = [open(p, "rb").read() for p in sys.argv[3:]]
out = m.signatures["serving_default"](images=tf.constant(images))
for t, c, cc, n in zip(out["text"].numpy(), out["confidence"].numpy(), out["char_confidences"].numpy(),
                       out["num_chars"].numpy()):
  print(json.dumps({"text": t.decode(), "confidence": float(c), "char_confidences": cc[:n].tolist()}))
batches = np.load(sys.argv[2])
for i in range(len(batches.files) // 2):
  logits = m.signatures["logits"](images=batches[f"x{i}"], frames=batches[f"f{i}"])["logits"].numpy()
  print(json.dumps({"logits": logits.tolist()}))
pix = np.load(sys.argv[2].replace(".npz", "_pixels.npz"))
out = m.signatures["pixels"](images=pix["images"], widths=pix["widths"])
for t in out["text"].numpy():
  print(json.dumps({"pixels_text": t.decode()}))
""",
}
GUARD = "\nassert not [m for m in sys.modules if m.startswith('crnn_jax')], 'imported crnn_jax'\n"


@pytest.fixture(scope="module")
def exported(reading_workdir, tmp_path_factory):
  """The tiny model that reads its lines (conftest), exported in every format."""
  out = tmp_path_factory.mktemp("export") / "out"
  assert export.main(["--workdir", str(reading_workdir), "--out", str(out), "--quantize"]) == 0
  return reading_workdir, out


def _lines(data_dir, tmp_path):
  """The training images as files, plus a colour PNG and a line wider than every bucket."""
  import tensorflow_datasets as tfds
  from PIL import Image
  b = tfds.builder_from_directory(str(data_dir))
  paths = []
  for i, ex in enumerate(tfds.as_numpy(b.as_dataset(split="train", decoders={
      "image": tfds.decode.SkipDecoding()}).take(40))):
    p = tmp_path / f"{i:02d}.jpg"
    p.write_bytes(ex["image"])
    paths.append(p)
  src = Image.open(paths[0]).convert("RGB")
  Image.new("RGB", (src.width + 40, src.height + 20), (250, 235, 200)).save(tmp_path / "colour.png")
  colour = Image.open(tmp_path / "colour.png")
  colour.paste(src, (20, 10))
  colour.save(tmp_path / "colour.png")
  wide = Image.new("L", (src.width * 5, src.height), 255)
  for k in range(5):
    wide.paste(Image.open(paths[k]), (k * src.width, 0))
  wide.save(tmp_path / "wide.png")
  return paths + [tmp_path / "colour.png", tmp_path / "wide.png"]


def _run(fmt, out, batches_file, paths):
  code = "import sys\n" + RUNNERS[fmt] + GUARD
  p = subprocess.run([sys.executable, "-c", code, str(out), str(batches_file), *map(str, paths)],
                     capture_output=True, text=True, timeout=600, cwd="/")
  assert p.returncode == 0, why(p.stderr)
  return [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]


@pytest.mark.parametrize("fmt", ["stablehlo", "onnx", "savedmodel"])
def test_each_artifact_reads_as_crnn_predict_greedy(exported, overfit_data, tmp_path, fmt):
  wd, out = exported
  reader = inference.load(wd, decoding={"decoder": "greedy"})
  paths = _lines(overfit_data, tmp_path)
  mine = reader.read(paths)
  assert sum(r.text != "" for r in mine) >= 30  # the model reads something: the comparison means something
  inputs = [reader.prepare(p) for p in paths]
  batches, rows = {}, []
  for j, (idx, images, frames) in enumerate(reader.batches(inputs)):
    batches[f"x{j}"], batches[f"f{j}"] = images, frames
    rows.append((idx, frames, np.asarray(reader.steps.logits(reader.variables, images, frames))))
  np.savez(tmp_path / "batches.npz", **batches)
  # the SavedModel's `pixels` signature: uint8 lines already at the model height, right-padded, + widths
  grey = [np.round(x * 255).astype(np.uint8) for x in inputs]
  pix = np.zeros((len(grey), reader.height, max(g.shape[1] for g in grey), 1), np.uint8)
  for i, g in enumerate(grey):
    pix[i, :, :g.shape[1], 0] = g
  np.savez(tmp_path / "batches_pixels.npz", images=pix, widths=np.array([g.shape[1] for g in grey], np.int32))
  got = _run(fmt, out, tmp_path / "batches.npz", paths)
  texts = [g for g in got if "text" in g]
  logits = [np.asarray(g["logits"], np.float32) for g in got if "logits" in g]
  assert len(logits) == len(rows)
  for (idx, frames, ref), lg in zip(rows, logits):
    assert lg.shape == ref.shape
    for r in range(len(idx)):
      np.testing.assert_allclose(lg[r, :frames[r]], ref[r, :frames[r]], atol=1e-4)
      # the artifact's logits decoded greedily give crnn-predict's text
      from crnn_jax.decode import greedy_batch
      assert greedy_batch(lg[r:r + 1].argmax(-1), frames[r:r + 1], reader.charset)[0] == mine[idx[r]].text
  if fmt == "savedmodel":  # greedy decoding inside the graph, from the encoded bytes
    assert [t["text"] for t in texts] == [r.text for r in mine]
    assert [g["pixels_text"] for g in got if "pixels_text" in g] == [r.text for r in reader.read(grey)]
    for t, r in zip(texts, mine):
      assert abs(t["confidence"] - r.confidence) < 1e-4
      np.testing.assert_allclose(t["char_confidences"], r.char_confidences, atol=1e-4)


def test_export_writes_the_contract_charset_and_int8_model(exported):
  wd, out = exported
  c = json.loads((out / "contract.json").read_text(encoding="utf-8"))
  assert c["input"]["height"] == 32 and c["input"]["width_multiple"] == 8 and c["checkpoint_step"] == 250
  assert c["num_classes"] == len((out / "chinese.txt").read_text(encoding="utf-8").splitlines()) + 1
  assert (out / "savedmodel" / "1" / "saved_model.pb").exists()  # TF Serving's layout: base path/version
  import onnxruntime as ort
  q = ort.InferenceSession(str(out / "onnx" / "model.int8.onnx"))
  x = np.full((2, 32, 128, 1), 0.9, np.float32)
  assert q.run(["logits"], {"images": x, "frames": np.array([16, 10], np.int32)})[0].shape == (2, 16, c["num_classes"])


def test_export_of_a_folder_that_is_not_a_workdir_is_one_line(tmp_path, capsys):
  assert export.main(["--workdir", str(tmp_path), "--out", str(tmp_path / "o"), "--format", "stablehlo"]) == 2
  err = capsys.readouterr().err
  assert "not a training workdir" in err and "Traceback" not in err
