"""Every config value checked before any work: `validate(config)` raises one UserError line naming
each bad key, its value and what is allowed.

A table, `RULES`, holds one rule per key of `configs/common.py` (tests/test_config_check.py fails
when a key has none, so a new key comes with its rule); `_cross` holds the checks that need two keys
(the height pools against input.height, the conv features against the pools, bn_groups against the
batch, the cosine against num_steps).  Pure Python: crnn-train runs it right after parsing its flags,
before JAX or TensorFlow are imported, so a bad value costs a fraction of a second, not a compile.
Checks that need the devices (batch sizes that divide by them) stay in train.py.
"""
import math
import numbers

from crnn_jax.errors import UserError


class Rule:
  """A check of one value: `why(value)` -> None when allowed, else what is allowed."""

  def why(self, v):  # pragma: no cover - every rule overrides it
    raise NotImplementedError


def _is_int(v):
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_num(v):
  return isinstance(v, numbers.Real) and not isinstance(v, bool)


class Int(Rule):
  def __init__(self, lo=None, hi=None):
    self.lo, self.hi = lo, hi

  def why(self, v):
    if not _is_int(v) or (self.lo is not None and v < self.lo) or (self.hi is not None and v > self.hi):
      return "a whole number " + _range(self.lo, self.hi)
    return None


class Float(Rule):
  """A finite number in [lo, hi] (lo_open / hi_open exclude the end)."""

  def __init__(self, lo=None, hi=None, lo_open=False, hi_open=False):
    self.lo, self.hi, self.lo_open, self.hi_open = lo, hi, lo_open, hi_open

  def why(self, v):
    ok = _is_num(v) and math.isfinite(v)
    if ok and self.lo is not None:
      ok = v > self.lo if self.lo_open else v >= self.lo
    if ok and self.hi is not None:
      ok = v < self.hi if self.hi_open else v <= self.hi
    return None if ok else "a finite number " + _range(self.lo, self.hi, self.lo_open, self.hi_open)


class Choice(Rule):
  def __init__(self, *allowed):
    self.allowed = allowed

  def why(self, v):
    return None if v in self.allowed else "one of " + ", ".join(repr(a) for a in self.allowed)


class Bool(Rule):
  def why(self, v):
    return None if isinstance(v, bool) else "True or False"


class Text(Rule):
  def __init__(self, empty=False):
    self.empty = empty

  def why(self, v):
    if not isinstance(v, str) or (not self.empty and not v.strip()):
      return "a string" + ("" if self.empty else ", not empty")
    return None


class Ints(Rule):
  """A non-empty sequence of whole numbers >= lo (increasing: each larger than the one before)."""

  def __init__(self, lo=1, increasing=False):
    self.lo, self.increasing = lo, increasing

  def why(self, v):
    want = f"a non-empty tuple of whole numbers >= {self.lo}" + (", increasing" if self.increasing else "")
    if not isinstance(v, (tuple, list)) or not v or not all(_is_int(x) and x >= self.lo for x in v):
      return want
    if self.increasing and any(b <= a for a, b in zip(v, v[1:])):
      return want
    return None


class Pools(Rule):
  def why(self, v):
    want = "a non-empty tuple of (height, width) pools, whole numbers >= 1, e.g. ((2, 2), (2, 1))"
    if not isinstance(v, (tuple, list)) or not v:
      return want
    for p in v:
      if not isinstance(p, (tuple, list)) or len(p) != 2 or not all(_is_int(x) and x >= 1 for x in p):
        return want
    return None


class Splits(Rule):
  """eval.extra: "DIR:split,DIR:split" (or a tuple of such items); "" for none."""

  def why(self, v):
    items = v.split(",") if isinstance(v, str) else v
    if not isinstance(items, (tuple, list)):
      return 'a string "DATA_DIR:split,DATA_DIR:split" (e.g. data/otherworld:val_degraded) or ""'
    for item in items:
      if not isinstance(item, str):
        return 'a string "DATA_DIR:split,DATA_DIR:split" (e.g. data/otherworld:val_degraded) or ""'
      if item.strip():
        d, sep, split = item.strip().rpartition(":")
        if not (sep and d and split):
          return 'items written DATA_DIR:split, comma-separated (e.g. data/otherworld:val_degraded)'
    return None


def _range(lo, hi, lo_open=False, hi_open=False):
  if lo is not None and hi is not None:
    return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
  if lo is not None:
    return f"{'>' if lo_open else '>='} {lo}"
  if hi is not None:
    return f"{'<' if hi_open else '<='} {hi}"
  return ""


PROB = Float(0.0, 1.0)
STEPS = Int(lo=1)

RULES = {
    "data_dir": Text(),
    "seed": Int(0, 2**31 - 1),
    "input.height": Int(lo=1),
    "input.width_buckets": Ints(lo=1, increasing=True),
    "input.max_label_length": Int(lo=1),
    "input.shuffle_buffer": Int(lo=1),
    "input.skip_damaged_records": Bool(),
    "input.augment.width_jitter": Float(0.0, 1.0, hi_open=True),
    "input.augment.contrast": Float(0.0, 1.0, hi_open=True),
    "input.augment.brightness": Float(0.0, 1.0),
    "input.augment.pad_prob": PROB,
    "input.augment.pad_max": Float(0.0, 4.0),
    "input.augment.blur_prob": PROB,
    "input.augment.blur_max": Float(0.3, 10.0),     # std drawn from U(0.3, blur_max)
    "input.augment.lowres_prob": PROB,
    "input.augment.lowres_min": Float(0.05, 0.9),   # scale drawn from U(lowres_min, 0.9)
    "input.augment.noise_prob": PROB,
    "input.augment.noise_max": Float(0.01, 1.0),    # std drawn from U(0.01, noise_max)
    "input.augment.jpeg_prob": PROB,
    "input.augment.jpeg_min": Int(1, 95),           # quality drawn from U(jpeg_min, 95)
    "input.augment.invert_prob": PROB,
    "input.augment.ramp_steps": Int(lo=0),
    "model.conv_features": Ints(lo=1),
    "model.conv_pools": Pools(),
    "model.lstm_hidden": Int(lo=1),
    "model.lstm_layers": Int(lo=0),
    "model.dropout": Float(0.0, 1.0, hi_open=True),
    "model.shortcut": Bool(),
    "model.conv_impl": Choice("xla", "im2col", "im2col_first"),
    "model.pool_impl": Choice("bn_fused", "reshape", "reduce_window"),
    "model.lstm_impl": Choice("custom_vjp", "autodiff"),
    "model.bn_groups": Int(lo=1),
    "model.dtype": Choice("float32", "bfloat16", "float16"),
    "model.input_norm": Choice("none", "standardize"),
    "optimizer.learning_rate": Float(0.0, 10.0, lo_open=True),
    "optimizer.end_factor": Float(0.0, 1.0),
    "optimizer.warmup_steps": Int(lo=0),
    "optimizer.decay_steps": Int(lo=0),
    "optimizer.b1": Float(0.0, 1.0, hi_open=True),
    "optimizer.b2": Float(0.0, 1.0, hi_open=True),
    "optimizer.weight_decay": Float(0.0, 1.0),
    "optimizer.grad_clip": Float(0.0, lo_open=True),
    "train.batch_size": Int(lo=1),
    "train.num_steps": STEPS,
    "train.time_budget_minutes": Float(0.0),
    "train.log_every": STEPS,
    "train.eval_every": STEPS,
    "train.checkpoint_every": STEPS,
    "train.keep_checkpoints": Int(lo=1),
    "train.ema_decay": Float(0.0, 1.0, hi_open=True),
    "train.ctc_impl": Choice("compact", "optax"),
    "eval.split": Text(),
    "eval.batch_size": Int(lo=1),
    "eval.max_examples": Int(lo=0),                 # 0: the whole split
    "eval.extra": Splits(),
    "decode.decoder": Choice("greedy", "beam"),
    "decode.beam": Int(lo=1),
    "decode.topk": Int(lo=1),
    "decode.prune": Float(hi=0.0),
    "decode.lm_order": Int(1, 8),
    "decode.lm_weight": Float(0.0, 10.0),
    "decode.length_bonus": Float(-10.0, 10.0),
}


def leaves(config, prefix=""):
  """{dotted key: value} of every leaf of a ConfigDict (or dict)."""
  out = {}
  for k, v in config.items():
    key = f"{prefix}{k}"
    if hasattr(v, "items"):
      out.update(leaves(v, key + "."))
    else:
      out[key] = v
  return out


def problems(config):
  """Every problem of `config`, one string each ("key=value: want ..."), [] when it is sound."""
  vals = leaves(config)
  out = []
  for key, v in vals.items():
    rule = RULES.get(key)
    if rule is None:
      import difflib
      close = difflib.get_close_matches(key, RULES, n=1)
      out.append(f"{key}={v!r}: no such key (nothing reads it; a typo?{' did you mean ' + close[0] + '?' if close else ''})")
      continue
    why = rule.why(v)
    if why:
      out.append(f"{key}={v!r}: want {why}")
  if not out:
    out += _cross(vals)
  return out


def _cross(v):
  out = []
  pools, feats = v["model.conv_pools"], v["model.conv_features"]
  if len(pools) != len(feats):
    out.append(f"model.conv_features has {len(feats)} layers and model.conv_pools {len(pools)}: give one pool "
               "per conv layer ((1, 1) for none)")
  hs = math.prod(p[0] for p in pools)
  if hs != v["input.height"]:
    out.append(f"model.conv_pools reduce height {v['input.height']} by {hs}; the height pools must multiply to "
               "input.height (one row per frame)")
  ws = math.prod(p[1] for p in pools)
  if v["input.width_buckets"][0] < ws:
    out.append(f"input.width_buckets[0]={v['input.width_buckets'][0]} is narrower than the model's width stride "
               f"{ws} (model.conv_pools): no frame would be left")
  if v["train.batch_size"] % v["model.bn_groups"]:
    out.append(f"model.bn_groups={v['model.bn_groups']} must divide train.batch_size={v['train.batch_size']}")
  d, w = v["optimizer.decay_steps"], v["optimizer.warmup_steps"]
  if d and d <= w:
    out.append(f"optimizer.decay_steps={d} must exceed optimizer.warmup_steps={w} (or be 0: train.num_steps)")
  return out


def validate(config, what="config"):
  """Raise one UserError line listing every problem of `config`; return it unchanged when sound."""
  bad = problems(config)
  if bad:
    raise UserError(f"{what}: " + "; ".join(bad))
  return config


def arg_type(rule):
  """An argparse `type=` from a rule (or the dotted config key whose rule it is): crnn-eval's,
  crnn-predict's and crnn-serve's numeric flags refuse a bad value in argparse's one line, with the
  same words as the config check (`--beam 0`: "'0': want a whole number >= 1")."""
  import argparse
  if isinstance(rule, str):
    rule = RULES[rule]
  kind = int if isinstance(rule, Int) else float

  def parse(text):
    try:
      v = kind(text)
    except ValueError:
      v = text
    why = rule.why(v)
    if why:
      raise argparse.ArgumentTypeError(f"{text!r}: want {why}")
    return v
  parse.__name__ = kind.__name__
  return parse


def parser(**kwargs):
  """An argparse.ArgumentParser whose errors are one line (the flag, the value, what is allowed) and
  exit 2, not a usage screen: `PROG --help` has the options (crnn-eval, -predict, -export, -serve,
  -report)."""
  import argparse

  class OneLine(argparse.ArgumentParser):
    def error(self, message):
      self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` lists the options)\n")
  return OneLine(**kwargs)
