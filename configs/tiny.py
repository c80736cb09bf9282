"""A tiny CRNN for tests: trains a few dozen steps on a small generated set in seconds.

    crnn-train --config configs/tiny.py --workdir /tmp/tiny --config.data_dir=SMALL_DATA
"""
from configs.common import base_config


def get_config():
  c = base_config()
  c.model.conv_features = (8, 16, 24)
  c.model.conv_pools = ((4, 2), (4, 2), (2, 2))
  c.model.lstm_hidden = 32
  c.model.lstm_layers = 2
  c.model.dropout = 0.0
  c.model.shortcut = True
  c.input.width_buckets = (128, 192, 256)
  c.input.shuffle_buffer = 256
  c.input.augment.width_jitter = 0.0
  c.input.augment.contrast = 0.0
  c.input.augment.brightness = 0.0
  for knob in ("pad_prob", "blur_prob", "lowres_prob", "noise_prob", "jpeg_prob"):
    c.input.augment[knob] = 0.0  # on-the-fly degradations off (tests turn them on where they test them)
  c.optimizer.learning_rate = 3e-3
  c.optimizer.warmup_steps = 10
  c.optimizer.weight_decay = 0.0
  c.train.batch_size = 8
  c.train.num_steps = 40
  c.train.log_every = 10
  c.train.eval_every = 20
  c.train.checkpoint_every = 20
  c.eval.batch_size = 8
  c.eval.max_examples = 64
  return c


def get_sweep():
  """The grid `launch/sweep.py` runs: {config key: values}, one run per combination."""
  return {"seed": [0, 1, 2]}
