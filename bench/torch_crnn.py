"""A PyTorch reference CRNN with the same layout as `crnn_jax.model.CRNN` (crnn.pytorch style).

Conv 3x3 (no bias) + BatchNorm + ReLU + max-pool blocks from the same config values, one frame
per column, `lstm_layers` bidirectional LSTMs of `lstm_hidden`, the optional linear shortcut
from the conv features, a linear classifier to `num_classes` (blank 0), `torch.nn.CTCLoss`.
Used only by bench/vs_pytorch.py; needs `pip install torch==2.13.0` (CPU build).
"""
import torch
from torch import nn


class TorchCRNN(nn.Module):

  def __init__(self, num_classes, conv_features, conv_pools, lstm_hidden, lstm_layers, shortcut, height=32):
    super().__init__()
    layers, c_in, h = [], 1, height
    for feat, (ph, pw) in zip(conv_features, conv_pools):
      layers += [nn.Conv2d(c_in, feat, 3, padding=1, bias=False), nn.BatchNorm2d(feat, momentum=0.1),
                 nn.ReLU(inplace=True)]
      if (ph, pw) != (1, 1):
        layers.append(nn.MaxPool2d((ph, pw), (ph, pw)))
      c_in, h = feat, h // ph
    self.cnn = nn.Sequential(*layers)
    feat_dim = c_in * h
    self.rnn = nn.LSTM(feat_dim, lstm_hidden, num_layers=lstm_layers, bidirectional=True, batch_first=True)
    self.shortcut = nn.Linear(feat_dim, 2 * lstm_hidden) if shortcut else None
    self.classifier = nn.Linear(2 * lstm_hidden, num_classes)

  def forward(self, images):
    """images [B, 1, H, W] -> log-probabilities [T, B, C] (CTCLoss's layout)."""
    x = self.cnn(images)                         # [B, C, 1, T]
    b, c, h, t = x.shape
    feats = x.permute(0, 3, 1, 2).reshape(b, t, c * h)
    y, _ = self.rnn(feats)
    if self.shortcut is not None:
      y = y + self.shortcut(feats)
    return self.classifier(y).log_softmax(-1).transpose(0, 1)


def make(config, num_classes):
  m = config.model
  return TorchCRNN(num_classes, tuple(m.conv_features), tuple(tuple(p) for p in m.conv_pools), m.lstm_hidden,
                   m.lstm_layers, bool(m.get("shortcut", False)), config.input.height)


class Trainer:
  """One Adam step with gradient clipping and CTC loss, like crnn_jax.train.train_step."""

  def __init__(self, config, num_classes):
    self.model = make(config, num_classes).train()
    self.opt = torch.optim.Adam(self.model.parameters(), lr=config.optimizer.learning_rate)
    self.ctc = nn.CTCLoss(blank=0, reduction="mean", zero_infinity=True)
    self.clip = config.optimizer.grad_clip

  def step(self, images, labels, input_lengths, label_lengths):
    logp = self.model(images)
    loss = self.ctc(logp, labels, input_lengths, label_lengths)
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
    self.opt.step()
    return loss.detach()
