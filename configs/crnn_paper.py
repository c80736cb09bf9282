"""The paper-size CRNN (Shi et al. 2015, Table 1) for GPU/TPU.

    crnn-train --config configs/crnn_paper.py --workdir runs/paper

The paper's seven conv layers (64-128-256-256-512-512-512) and pools, all 3x3 here, the last
pool 2x2 (height 2 -> 1, and width stride 8: 1/8 frame per pixel, what datagen's default data is
checked for), two BiLSTM layers of 256, batch 128.
Expected: much slower than poem_cpu on a CPU (~8 M parameters); meant for accelerators.
"""
from configs.common import base_config


def get_config():
  c = base_config()
  c.model.conv_features = (64, 128, 256, 256, 512, 512, 512)
  c.model.conv_pools = ((2, 2), (2, 2), (1, 1), (2, 1), (1, 1), (2, 1), (2, 2))
  c.model.lstm_hidden = 256
  c.train.batch_size = 128
  c.train.num_steps = 20000
  c.optimizer.learning_rate = 1e-3
  return c
