"""The original example's own test image (docs/samples/风华正茂_original_test_02.jpg: its gen_pic.py,
a font we do not have, text at the top left, black corner wedges) read through crnn-predict, and
the samples check that `make main` ends with.

CI cannot train the default model (an hour); here a tiny model learns a small world -- six lines
sharing 风华正茂's characters, drawn by datagen with its default (robust) knobs in the training
fonts, read through the default on-the-fly degradations -- and must then read the original's
image, which no font or renderer of that world drew.  The full model's reading of it is checked
by `make main` (tools/check_samples.py) and written in README/BENCHMARKS.
"""
import pathlib
import subprocess
import sys

from datagen import cli

from conftest import tiny_config, write_corpus

ROOT = pathlib.Path(__file__).resolve().parents[1]
IMAGE = ROOT / "docs" / "samples" / "风华正茂_original_test_02.jpg"
# 风华正茂 and lines that reuse its characters in other places and company: reading the image
# right means reading its characters, not recognising a memorised picture of one line.
LINES = ["风华正茂", "正茂风华", "华风茂正", "茂正华风", "风正华茂", "华茂正风"]


def test_a_small_world_model_reads_the_original_test_image(tmp_path, capsys):
  data = tmp_path / "data"
  corpus = write_corpus(tmp_path / "c.txt", LINES)
  assert cli.main(["build", "--out", str(data), "--corpus", str(corpus), "--min-char-count", "0",
                   "--validation-fraction", "0", "--test-fraction", "0", "--variants", "48",
                   "--examples-per-shard", "32", "--workers", "2"]) == 0
  from crnn_jax import predict, train
  from configs import common
  on_the_fly = common.base_config().input.augment  # the default degradations, on
  c = tiny_config(data, **{"train.num_steps": 500, "train.eval_every": 500, "train.checkpoint_every": 500,
                           "optimizer.learning_rate": 1e-2, "eval.max_examples": 32, "train.ema_decay": 0.9})
  c.input.augment = on_the_fly
  wd = tmp_path / "wd"
  train.train_and_evaluate(c, str(wd))
  capsys.readouterr()
  assert predict.main(["--workdir", str(wd), "--checkpoint", "latest", "--decoder", "greedy",
                       "--output", str(tmp_path / "s.tsv"), str(IMAGE)]) == 0
  assert capsys.readouterr().out.strip().endswith("\t风华正茂")
  check = subprocess.run([sys.executable, str(ROOT / "tools" / "check_samples.py"), str(tmp_path / "s.tsv")],
                         capture_output=True, text=True)
  assert check.returncode == 0 and "1 of 1 samples read right" in check.stdout


def test_check_samples_flags_a_misread(tmp_path):
  tsv = tmp_path / "s.tsv"
  tsv.write_text(f"{IMAGE}\t冈华正茂\ndocs/samples/十年磨一剑_wqy.jpg\t十年磨一剑\n", encoding="utf-8")
  out = subprocess.run([sys.executable, str(ROOT / "tools" / "check_samples.py"), str(tsv)],
                       capture_output=True, text=True)
  assert out.returncode == 1
  assert "WRONG 风华正茂_original_test_02.jpg: read '冈华正茂', shows '风华正茂'" in out.stdout
  assert "1 of 2 samples read right" in out.stdout
