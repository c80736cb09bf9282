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
                   "--validation-fraction", "0.15", "--test-fraction", "0.15", *FAST, *extra])
  assert code == 0
  return pathlib.Path(out)


@pytest.fixture(scope="session")
def small_data(tmp_path_factory, small_corpus):
  """A DATA_DIR built by `datagen build` (2 workers) from the small corpus."""
  return build(tmp_path_factory.mktemp("data") / "d", small_corpus, "--workers", "2")
