"""The CRNN (Shi et al. 2015): conv stack with batch norm -> bidirectional LSTMs -> linear.

Shapes: images [B, H, W, 1] float32 in [0, 1] -> logits [B, T, num_classes] float32, with
T = W / (product of the width pools).  Class 0 is the CTC blank.  Widths, depths and pools come
from the config (`config.model`), so one module serves the paper-size, CPU-size and tiny models.
"""
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class BiLSTM(nn.Module):
  """One bidirectional LSTM layer over [B, T, D] with per-example valid lengths.

  The input projection of all frames is one matmul outside the scan (the scan then carries only
  the recurrent [B, H] x [H, 4H] product), and both directions share one scan.  The backward
  direction reads each sequence reversed *within its valid length*, so padding frames never
  reach the real ones.
  """
  hidden: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, lengths):
    b, t, _ = x.shape
    h = self.hidden
    # Reverse each sequence inside its own length: index (len - 1 - i) for i < len, else i.
    idx = jnp.arange(t)[None, :]
    rev_idx = jnp.where(idx < lengths[:, None], lengths[:, None] - 1 - idx, idx)
    x_rev = jnp.take_along_axis(x, rev_idx[..., None], axis=1)
    proj = nn.DenseGeneral((2, 4 * h), name="input_proj", dtype=self.dtype)
    gates_in = jnp.stack([proj(x)[:, :, 0], proj(x_rev)[:, :, 1]], axis=0)  # [2, B, T, 4H]
    w_hh = self.param("recurrent_kernel", nn.initializers.orthogonal(), (2, h, 4 * h), jnp.float32)
    w_hh = w_hh.astype(self.dtype)
    mask = (idx < lengths[:, None]).astype(self.dtype)  # [B, T]

    def step(carry, inp):
      c, hs = carry
      g_in, m = inp                          # [2, B, 4H], [B]
      g = g_in + jnp.einsum("dbh,dhk->dbk", hs, w_hh)
      i, f, gg, o = jnp.split(g, 4, axis=-1)
      c_new = jax.nn.sigmoid(f + 1.0) * c + jax.nn.sigmoid(i) * jnp.tanh(gg)
      h_new = jax.nn.sigmoid(o) * jnp.tanh(c_new)
      m = m[None, :, None]
      c = m * c_new + (1 - m) * c            # padding frames leave the state alone
      hs = m * h_new + (1 - m) * hs
      return (c, hs), hs

    zeros = jnp.zeros((2, b, h), self.dtype)
    _, out = jax.lax.scan(step, (zeros, zeros),
                          (jnp.moveaxis(gates_in, 2, 0), jnp.moveaxis(mask, 1, 0)))
    out = jnp.moveaxis(out, 0, 2)            # [2, B, T, H]
    fwd, bwd = out[0], jnp.take_along_axis(out[1], rev_idx[..., None], axis=1)
    return jnp.concatenate([fwd, bwd], axis=-1) * mask[..., None]


class Conv3x3(nn.Module):
  """A 3x3 'SAME' convolution without bias, as one matrix product over im2col patches.

  Same parameter (`kernel` [3, 3, Cin, Cout], same initialiser) and same result as
  `nn.Conv(features, (3, 3), padding="SAME", use_bias=False)`, so checkpoints move between the
  two.  On XLA's CPU backend its gradient (autodiff of slices + one dot: two dots and a
  pad-add) is ~1.6x faster than the native convolution's (BENCHMARKS.md, "Training step").
  """
  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    kernel = self.param("kernel", nn.linear.default_kernel_init, (3, 3, c, self.features), jnp.float32)
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    cols = jnp.concatenate([xp[:, i:i + h, j:j + w, :] for i in range(3) for j in range(3)], axis=-1)
    y = jnp.dot(cols.reshape(-1, 9 * c), kernel.astype(self.dtype).reshape(9 * c, self.features))
    return y.reshape(b, h, w, self.features)


def max_pool(x, pool):
  """Non-overlapping max pool as reshape + max: the same values as `nn.max_pool`, but its
  gradient is a cheap broadcast-compare instead of XLA's select-and-scatter (~6x faster on CPU).
  Widths/heights that do not divide are cropped, as VALID pooling does."""
  ph, pw = pool
  b, h, w, c = x.shape
  x = x[:, :h - h % ph, :w - w % pw]
  return jnp.max(x.reshape(b, h // ph, ph, w // pw, pw, c), axis=(2, 4))


# Batch norm's running averages: running = BN_MOMENTUM * running + (1 - BN_MOMENTUM) * batch.
BN_MOMENTUM = 0.9


class CRNN(nn.Module):
  num_classes: int
  conv_features: Sequence[int] = (64, 128, 256, 256, 512, 512)
  conv_pools: Sequence[Sequence[int]] = ((2, 2), (2, 2), (1, 1), (2, 1), (1, 1), (2, 1))
  lstm_hidden: int = 256
  lstm_layers: int = 2
  dropout: float = 0.0
  shortcut: bool = False
  # "xla": lax.conv; "im2col": every conv as patches x matrix (faster on 1 CPU device with
  # several threads); "im2col_first": only the first (1-channel) conv.
  conv_impl: str = "xla"
  # "reshape": max pool as reshape + max (fast gradient on CPU); "reduce_window": nn.max_pool.
  pool_impl: str = "reshape"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images, lengths, *, train: bool):
    """images [B, H, W, 1] float32; lengths [B] int32 valid frames -> logits [B, T, C] float32."""
    x = images.astype(self.dtype)
    for i, (feat, pool) in enumerate(zip(self.conv_features, self.conv_pools)):
      if self.conv_impl == "im2col" or (self.conv_impl == "im2col_first" and i == 0):
        x = Conv3x3(feat, dtype=self.dtype, name=f"conv{i}")(x)
      else:
        x = nn.Conv(feat, (3, 3), padding="SAME", use_bias=False, dtype=self.dtype, name=f"conv{i}")(x)
      # Batch statistics in training, running averages in evaluation (the original's
      # multi-GPU graph never switched BN to training mode).
      x = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, dtype=self.dtype, name=f"bn{i}")(x)
      x = nn.relu(x)
      if tuple(pool) != (1, 1):
        if self.pool_impl == "reshape":
          x = max_pool(x, tuple(pool))
        else:
          x = nn.max_pool(x, tuple(pool), strides=tuple(pool))
    b, h, w, c = x.shape
    x = jnp.transpose(x, (0, 2, 1, 3)).reshape(b, w, h * c)  # one frame per column
    feats = x
    for i in range(self.lstm_layers):
      x = BiLSTM(self.lstm_hidden, dtype=self.dtype, name=f"lstm{i}")(x, lengths)
    if self.shortcut and self.lstm_layers:
      # A linear path from the conv features to the classifier, beside the LSTMs: early in
      # training the conv stack gets gradients that do not pass through saturating gates.
      x = x + nn.Dense(x.shape[-1], dtype=self.dtype, name="shortcut")(feats)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(x)
    return logits.astype(jnp.float32)


def width_stride(conv_pools) -> int:
  s = 1
  for _, pw in conv_pools:
    s *= pw
  return s


def height_stride(conv_pools) -> int:
  s = 1
  for ph, _ in conv_pools:
    s *= ph
  return s
