"""Every config key and every datagen flag, given a bad value: one line naming it, exit 2, no traceback.

The tables below must cover every key of configs/common.py and every valued option of `datagen build`
and `datagen import`: a key or flag added without a rule (and a row here) fails the coverage tests.
"""
import argparse
import concurrent.futures
import subprocess
import sys

import pytest

from configs import common, crnn_paper, poem_cpu, tiny
from crnn_jax import config_check
from crnn_jax.errors import UserError
from datagen import cli

# key -> a bad value as written on crnn-train's command line (--config.KEY=VALUE)
BAD_CONFIG = {
    "data_dir": "",
    "seed": "-1",
    "input.height": "0",
    "input.width_buckets": "(256,128)",
    "input.max_label_length": "0",
    "input.shuffle_buffer": "0",
    "input.skip_damaged_records": "sometimes",
    "input.augment.width_jitter": "1.5",
    "input.augment.contrast": "-0.1",
    "input.augment.brightness": "2",
    "input.augment.pad_prob": "1.5",
    "input.augment.pad_max": "-1",
    "input.augment.blur_prob": "nan",
    "input.augment.blur_max": "0.1",
    "input.augment.lowres_prob": "-0.5",
    "input.augment.lowres_min": "0",
    "input.augment.noise_prob": "2",
    "input.augment.noise_max": "0",
    "input.augment.jpeg_prob": "inf",
    "input.augment.jpeg_min": "0",
    "input.augment.invert_prob": "3",
    "input.augment.ramp_steps": "-1",
    "model.conv_features": "(8,0,24)",
    "model.conv_pools": "((4,2),(4,0),(2,2))",
    "model.lstm_hidden": "0",
    "model.lstm_layers": "-1",
    "model.dropout": "1.0",
    "model.shortcut": "maybe",
    "model.conv_impl": "cudnn",
    "model.pool_impl": "avg",
    "model.lstm_impl": "scan",
    "model.bn_groups": "0",
    "model.dtype": "float8",
    "model.input_norm": "whiten",
    "optimizer.learning_rate": "nan",
    "optimizer.end_factor": "2",
    "optimizer.warmup_steps": "-5",
    "optimizer.decay_steps": "-1",
    "optimizer.b1": "1.0",
    "optimizer.b2": "-0.1",
    "optimizer.weight_decay": "-1e-4",
    "optimizer.grad_clip": "0",
    "train.batch_size": "0",
    "train.num_steps": "-5",
    "train.time_budget_minutes": "-1",
    "train.log_every": "0",
    "train.eval_every": "0",
    "train.checkpoint_every": "0",
    "train.keep_checkpoints": "0",
    "train.ema_decay": "1.0",
    "train.ctc_impl": "warpctc",
    "eval.split": " ",
    "eval.batch_size": "0",
    "eval.max_examples": "-1",
    "eval.extra": "data/otherworld",
    "decode.decoder": "viterbi",
    "decode.beam": "0",
    "decode.topk": "0",
    "decode.prune": "3",
    "decode.lm_order": "0",
    "decode.lm_weight": "-1",
    "decode.length_bonus": "nan",
}

# Values each fine alone, wrong together.
BAD_PAIRS = [
    ({"model.conv_pools": "((4,2),(4,2))"}, "model.conv_features has 3 layers and model.conv_pools 2"),
    ({"input.height": "64"}, "reduce height 64 by 32"),
    ({"model.bn_groups": "3"}, "model.bn_groups=3 must divide train.batch_size=8"),
    ({"optimizer.decay_steps": "5"}, "decay_steps=5 must exceed optimizer.warmup_steps=10"),
    ({"input.width_buckets": "(4,128)"}, "narrower than the model's width stride 8"),
    ({"train.log_every": "1", "model.nonsense": "1"}, None),  # an unknown key: absl's own one line
]


def test_every_config_key_has_a_rule_and_a_bad_value_here():
  keys = set(config_check.leaves(common.base_config()))
  assert keys == set(config_check.RULES), keys ^ set(config_check.RULES)
  assert keys == set(BAD_CONFIG), keys ^ set(BAD_CONFIG)


def test_the_shipped_configs_are_sound():
  for mod in (common, tiny, poem_cpu, crnn_paper):
    c = mod.base_config() if mod is common else mod.get_config()
    assert config_check.problems(c) == [], mod.__name__


def test_problems_in_process_name_the_key_and_what_is_allowed():
  c = tiny.get_config()
  c.train.batch_size = 0
  c.optimizer.learning_rate = float("inf")
  with pytest.raises(UserError, match=r"^config: optimizer\.learning_rate=inf: want a finite number in \(0\.0, 10\.0\]; "
                                      r"train\.batch_size=0: want a whole number >= 1$"):
    config_check.validate(c)
  c = tiny.get_config()
  c.model.lstm_layers = True  # a bool is not a number of layers
  assert config_check.problems(c) == ["model.lstm_layers=True: want a whole number >= 0"]
  c = tiny.get_config()
  with c.unlocked():
    c.train.num_stpes = 10
  assert config_check.problems(c) == ["train.num_stpes=10: no such key (nothing reads it; a typo? did you mean "
                                      "train.num_steps?)"]


def _crnn_train(overrides, tmp):
  args = [sys.executable, "-m", "crnn_jax.main", "--config", "configs/tiny.py", "--workdir", str(tmp / "never")]
  args += [f"--config.{k}={v}" for k, v in overrides.items()]
  return subprocess.run(args, capture_output=True, text=True, timeout=120)


def test_crnn_train_refuses_each_bad_value_in_one_line_before_any_work(tmp_path):
  """One crnn-train per key (they stop before JAX is imported: ~0.2 s each)."""
  rows = [({k: v}, k) for k, v in BAD_CONFIG.items()] + BAD_PAIRS
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    results = list(pool.map(lambda row: _crnn_train(row[0], tmp_path), rows))
  for (overrides, expect), r in zip(rows, results):
    err = r.stderr.strip()
    assert r.returncode == 2, (overrides, r.returncode, err)
    assert "Traceback" not in err and len(err.splitlines()) == 1, (overrides, err)
    assert err.startswith("crnn-train: error:"), err
    key = next(iter(overrides))
    assert (expect or key.rsplit(".", 1)[-1]) in err, (overrides, err)
  assert not (tmp_path / "never").exists()  # nothing was written


# datagen: flag -> a bad value, for `datagen build` and `datagen import`
BAD_FLAGS = {
    "--seed": "-1", "--validation-fraction": "0.9", "--test-fraction": "-0.1", "--min-char-count": "-1",
    "--balance-power": "nan", "--variants": "0", "--eval-variants": "0", "--target-height": "0",
    "--frames-per-pixel": "0", "--examples-per-shard": "0", "--workers": "-1", "--max-pixels": "0",
    "--size-min": "2", "--size-max": "1000", "--spacing-min": "-1", "--spacing-max": "9",
    "--margin-x-max": "0", "--margin-y-max": "-1", "--rotate-deg": "90", "--shear-max": "2",
    "--perspective": "1", "--wedge-deg": "-1", "--weight-max": "5", "--texture-amp": "300",
    "--min-contrast": "-5", "--shade-amp": "1.5", "--blur-max": "-1", "--lowres-min": "0",
    "--noise-max": "inf", "--jpeg-min": "0", "--jpeg-max": "101", "--edge-prob": "1.1",
    "--wedge-prob": "-0.1", "--stroke-prob": "2", "--weight-prob": "2", "--rule-prob": "2",
    "--gradient-prob": "2", "--texture-prob": "2", "--invert-prob": "2", "--shadow-prob": "2",
    "--shade-prob": "2", "--blur-prob": "2", "--lowres-prob": "2", "--noise-prob": "2", "--mild-prob": "x",
}
# Options that take a path, a list or a name: checked where they are used (tests/test_errors.py).
FREE_FLAGS = {"--out", "--src", "--corpus", "--fonts", "--holdout-fonts", "--font-weights", "-h", "--help"}


def _valued_options(command):
  sub = next(a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction))
  p = sub.choices[command]
  return {o for a in p._actions if a.nargs != 0 for o in a.option_strings if o.startswith("--")} - FREE_FLAGS


def test_every_datagen_flag_with_a_value_has_a_bad_value_here():
  flags = _valued_options("build") | _valued_options("import")
  assert flags == set(BAD_FLAGS), flags ^ set(BAD_FLAGS)


@pytest.mark.parametrize("command", ["build", "import"])
def test_datagen_refuses_each_bad_flag_value_in_one_line(command, tmp_path, capsys):
  base = ["--out", str(tmp_path / "out")] + (["--src", str(tmp_path / "src")] if command == "import" else [])
  for flag in sorted(_valued_options(command)):
    code = cli.main([command, *base, flag, BAD_FLAGS[flag]])
    err = capsys.readouterr().err.strip()
    assert code == 2, (flag, err)
    assert len(err.splitlines()) == 1 and f"argument {flag}: {BAD_FLAGS[flag]!r}: want" in err, (flag, err)
  assert not (tmp_path / "out").exists()


def test_datagen_refuses_pairs_that_contradict_each_other(tmp_path, capsys):
  for pair, expect in ((["--size-min", "40", "--size-max", "30"], "need 6 <= min <= max"),
                       (["--jpeg-min", "90", "--jpeg-max", "50"], "need 1 <= min <= max <= 100"),
                       (["--spacing-min", "0.5", "--spacing-max", "0.1"], "need min <= max")):
    assert cli.main(["build", "--out", str(tmp_path / "out"), *pair]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expect in err, err
  assert not (tmp_path / "out").exists()


# The reading tools' numeric flags: (module, flag, bad value); each refused before anything is loaded.
BAD_TOOL_FLAGS = [
    ("predict", "--beam", "0"), ("predict", "--lm-weight", "-1"), ("predict", "--lm-order", "9"),
    ("predict", "--length-bonus", "inf"), ("predict", "--alternatives", "-1"), ("predict", "--cpu-devices", "0"),
    ("evaluate", "--gallery", "-1"), ("evaluate", "--max-examples", "0"), ("evaluate", "--beam", "x"),
    ("serve", "--port", "70000"), ("serve", "--max-batch", "0"), ("serve", "--max-wait-ms", "-1"),
    ("serve", "--max-queue", "0"), ("serve", "--max-body-mb", "0"), ("serve", "--max-pixels", "0"),
    ("serve", "--max-images", "0"), ("serve", "--request-timeout-s", "0"), ("serve", "--graceful-shutdown-s", "nan"),
    ("serve", "--cpu-devices", "-2"),
]


def test_the_reading_tools_refuse_bad_numbers_in_one_line(tmp_path):
  def run(row):
    module, flag, value = row
    args = [sys.executable, "-m", f"crnn_jax.{module}", "--workdir", str(tmp_path), flag, value]
    if module == "predict":
      args.append(str(tmp_path))
    return subprocess.run(args, capture_output=True, text=True, timeout=120)
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    results = list(pool.map(run, BAD_TOOL_FLAGS))
  for (module, flag, value), r in zip(BAD_TOOL_FLAGS, results):
    err = r.stderr.strip()
    assert r.returncode == 2 and len(err.splitlines()) == 1, (flag, r.returncode, err)
    assert f"argument {flag}: {value!r}: want" in err, err
