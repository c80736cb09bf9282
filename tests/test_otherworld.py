"""The other-world validation set: deterministic, independent of datagen's augmentation, held-out
fonts only, and read by crnn-eval / the periodic evaluation like any split."""
import ast
import hashlib
import json
import pathlib
import subprocess
import sys

import pytest

from otherworld import build as ow

from conftest import tiny_config, why

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _digests(folder):
  return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(pathlib.Path(folder).glob("crnn_poem-*.tfrecord-*"))}


@pytest.fixture(scope="session")
def other_world(small_data, tmp_path_factory):
  out = tmp_path_factory.mktemp("ow") / "ow"
  ow.build(small_data, out, workers=2)
  return out


def test_build_is_deterministic_and_complete(small_data, other_world, tmp_path):
  again = tmp_path / "again"
  ow.build(small_data, again, workers=1)  # other worker count: the same bytes
  assert _digests(other_world) == _digests(again) and _digests(again)
  meta = json.loads((other_world / "meta.json").read_text())
  lines = {s: len(ow.read_lines(small_data, s)) for s in ("validation", "test")}
  for split, prefix in (("validation", "val"), ("test", "test")):
    for kind in ("clean", "degraded"):
      c = meta["counts"][f"{prefix}_{kind}"]
      assert c["images"] == 3 * lines[split] - meta["skipped_line_font_pairs"][split] > 0
  assert (other_world / "preview.png").stat().st_size > 1000
  assert (other_world / "chinese.txt").read_bytes() == (small_data / "chinese.txt").read_bytes()
  # the clean and degraded image of a pair show the same line in the same font
  import tensorflow_datasets as tfds
  b = tfds.builder_from_directory(str(other_world))
  clean = [(e["text"], e["font"]) for e in tfds.as_numpy(b.as_dataset(split="val_clean"))]
  degraded = [(e["text"], e["font"]) for e in tfds.as_numpy(b.as_dataset(split="val_degraded"))]
  assert clean == degraded and {f for _, f in clean} == {b"wqy-zenhei-subset", b"HanaMinA-subset", b"TW-Kai-subset"}


def test_otherworld_shares_no_code_with_datagen_augmentation():
  """Statically: its modules import from datagen only the font finder, the TFRecord writer and the
  charset; at run time, drawing and degrading a line leaves datagen.render unimported."""
  allowed = {"datagen.fonts", "datagen.records", "datagen.charset", "datagen.errors", "datagen"}
  for path in (ROOT / "otherworld").glob("*.py"):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("datagen"):
        names = {f"{node.module}.{a.name}" for a in node.names}
        assert node.module in allowed and names <= allowed | {"datagen.charset.Charset", "datagen.errors.DatagenError"}, (path, names)
      if isinstance(node, ast.Import):
        assert not any(a.name.startswith("datagen") for a in node.names), path
  code = ("import sys; from otherworld import build; "
          "c, d, p = build.render_one('春眠不觉晓', build._default_font_paths()[0], 0, 1, 5, 0); "
          "assert c[:2] == d[:2] == b'\\xff\\xd8', 'not JPEG'; "
          "print(sorted(m for m in sys.modules if m.startswith('datagen')))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert out.returncode == 0, why(out.stderr)
  assert "datagen.render" not in out.stdout and "datagen.build" not in out.stdout, out.stdout


def test_a_training_font_is_refused(small_data, tmp_path, capsys):
  from datagen import fonts
  train_font = fonts.bundled_dir() / "NotoSansCJKsc-Regular-subset.otf"
  code = ow.main(["build", "--data", str(small_data), "--out", str(tmp_path / "o"), "--fonts", str(train_font)])
  err = capsys.readouterr().err
  assert code == 2 and "drew training images" in err and "NotoSansCJKsc-Regular-subset" in err


def test_missing_splits_are_one_line(tmp_path, capsys):
  code = ow.main(["build", "--data", str(tmp_path), "--out", str(tmp_path / "o")])
  err = capsys.readouterr().err
  assert code == 2 and "splits/validation.txt does not exist" in err


def test_periodic_and_cli_evaluation_read_the_other_world(small_data, other_world, tmp_path, capsys):
  from crnn_jax import evaluate, train
  wd = tmp_path / "wd"
  extra = f"{other_world}:val_clean,{other_world}:val_degraded"
  c = tiny_config(small_data, **{"train.num_steps": 10, "train.eval_every": 10, "train.checkpoint_every": 10,
                                 "eval.split": "validation", "eval.extra": extra, "eval.max_examples": 16})
  final = train.train_and_evaluate(c, str(wd))
  assert {"val_clean/seq_acc", "val_degraded/seq_acc", "val_degraded/cer"} <= set(final)
  assert 0.0 <= final["val_degraded/cer"]
  logged = [json.loads(l) for l in (wd / "metrics.jsonl").read_text().splitlines()]
  assert any("val_degraded/seq_acc" in m for m in logged)
  assert evaluate.main(["--workdir", str(wd), "--data", str(other_world), "--split", "test_degraded",
                        "--gallery", "4", "--checkpoint", "latest"]) == 0
  res = json.loads((wd / "eval_test_degraded.json").read_text())
  assert res["n"] == json.loads((other_world / "meta.json").read_text())["counts"]["test_degraded"]["images"]
  assert set(res["by_font"]) == {"wqy-zenhei-subset", "HanaMinA-subset", "TW-Kai-subset"}
  # a wrong eval.extra names what to fix
  from crnn_jax.errors import UserError
  with pytest.raises(UserError, match="DATA_DIR:split"):
    train.parse_extra_evals(tiny_config(small_data, **{"eval.extra": "nosplit"}), None)
  with pytest.raises(UserError, match="no split 'val_nope'"):
    train.parse_extra_evals(tiny_config(small_data, **{"eval.extra": f"{other_world}:val_nope"}), None)
