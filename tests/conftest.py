"""Shared fixtures: a small real corpus, real bundled fonts, and a small dataset built once."""
import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from datagen import cli, corpus as corpus_lib  # noqa: E402

# Characters outside GB2312: three of the five bundled fonts lack them (datagen/fonts/SUBSETS.txt).
NON_GB2312 = set("侘偭儃姮姱尨屧巉巘帨幰忳怤悰惛拏旛旻晞晼曈朅朓欸歠泝洿浥涬淈渼湲濛濬瀁瀼烝焜牁牂玕玦琲")

# Small but demanding render settings for tests: few variants, short shards.
FAST = ["--variants", "2", "--eval-variants", "2", "--examples-per-shard", "16"]


def small_corpus_lines(n=70):
  """The first n corpus lines plus a few lines with characters 3 of the fonts lack."""
  lines = list(corpus_lib.read_corpus().lines)
  picked = lines[:n]
  picked += [l for l in lines[n:] if NON_GB2312 & set(l)][:8]
  return picked


def write_corpus(path, texts):
  path.write_text("".join(f"{t}\t{100 + i}\n" for i, t in enumerate(texts)), encoding="utf-8")
  return path


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory):
  return write_corpus(tmp_path_factory.mktemp("corpus") / "poem.txt", small_corpus_lines())


def build(out, corpus, *extra):
  code = cli.main(["build", "--out", str(out), "--corpus", str(corpus), "--min-char-count", "3",
                   "--balance-power", "0", "--validation-fraction", "0.15", "--test-fraction", "0.15",
                   *FAST, *extra])
  assert code == 0
  return pathlib.Path(out)


@pytest.fixture(scope="session")
def small_data(tmp_path_factory, small_corpus):
  """A DATA_DIR built by `datagen build` (2 workers) from the small corpus."""
  return build(tmp_path_factory.mktemp("data") / "d", small_corpus, "--workers", "2")


# ---- the trainer's tests -------------------------------------------------------------------
CLEAN = ["--rotate-deg", "0", "--edge-prob", "0", "--wedge-prob", "0", "--weight-prob", "0", "--rule-prob", "0",
         "--shadow-prob", "0", "--shade-prob", "0", "--shear-max", "0", "--perspective", "0", "--noise-prob", "0", "--blur-prob", "0",
         "--lowres-prob", "0", "--texture-prob", "0", "--gradient-prob", "0", "--invert-prob", "0",
         "--stroke-prob", "0", "--jpeg-min", "90"]
LINES = ["更上一层楼", "民以食为天", "任重而道远", "一言以蔽之", "润物细无声", "其喜洋洋者矣"]


@pytest.fixture(scope="session")
def overfit_data(tmp_path_factory):
  """Six corpus lines (one with a doubled character), 8 clean variants each, train split only."""
  d = tmp_path_factory.mktemp("overfit")
  corpus = write_corpus(d / "c.txt", LINES)
  out = d / "data"
  assert cli.main(["build", "--out", str(out), "--corpus", str(corpus), "--min-char-count", "0",
                   "--validation-fraction", "0", "--test-fraction", "0", "--variants", "8",
                   "--examples-per-shard", "8", "--workers", "1", *CLEAN]) == 0
  return out


@pytest.fixture(scope="session")
def reading_workdir(overfit_data, tmp_path_factory):
  """configs/tiny.py trained on the six lines until it reads most of them (250 steps, with an EMA):
  the workdir the reading path, the exports and the server are tested on."""
  from crnn_jax import train
  wd = tmp_path_factory.mktemp("reading") / "wd"
  train.train_and_evaluate(tiny_config(overfit_data, **{
      "train.num_steps": 250, "train.eval_every": 250, "train.checkpoint_every": 250, "train.ema_decay": 0.9,
      "optimizer.learning_rate": 1e-2, "eval.max_examples": 16}), str(wd))
  return wd


def tiny_config(data_dir, **overrides):
  """configs/tiny.py on `data_dir`, evaluated on its train split, with dotted-key overrides."""
  from configs import tiny
  c = tiny.get_config()
  c.data_dir = str(data_dir)
  c.eval.split = "train"
  for k, v in overrides.items():
    node = c
    *path, last = k.split(".")
    for p in path:
      node = node[p]
    node[last] = v
  return c


def metrics(workdir):
  import json
  return [json.loads(l) for l in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]


def why(stderr, size=3000):
  """What a failed subprocess said: its first traceback (not the interpreter-shutdown noise that may
  follow it) and the end of its stderr."""
  i = stderr.find("Traceback (most recent call last)")
  head = stderr[i:i + size] + "\n[...]\n" if i >= 0 else ""
  return head + stderr[-size:]
