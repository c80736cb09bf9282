"""The CRNN (Shi et al. 2015): conv stack with batch norm -> bidirectional LSTMs -> linear.

Shapes: images [B, H, W, 1] float32 in [0, 1] -> logits [B, T, num_classes] float32, with
T = W / (product of the width pools).  Class 0 is the CTC blank.  Widths, depths and pools come
from the config (`config.model`), so one module serves the paper-size, CPU-size and tiny models.
"""
import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from crnn_jax.errors import UserError


def _cell(g, c):
  """LSTM cell from pre-activations g [..., 4H] (gate order i, f, g, o; forget bias +1)."""
  i, f, gg, o = jnp.split(g, 4, axis=-1)
  i, f, gg, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f + 1.0), jnp.tanh(gg), jax.nn.sigmoid(o)
  c_new = f * c + i * gg
  return (i, f, gg, o), c_new, o * jnp.tanh(c_new)


def _recurrence_scan(gates_in, w_hh):
  """The recurrence: gates_in [T, 2, B, 4H] (input projections of both directions' frames),
  w_hh [2, H, 4H] -> h, c [T, 2, B, H] and the gate activations [T, 2, B, 4H].

  No mask: each sequence's valid frames are a prefix (the backward direction is reversed within
  its length), so frames past the length never reach a valid one; the caller zeroes their outputs,
  which also makes their gradients exactly zero."""
  zeros = jnp.zeros_like(gates_in[0, ..., :gates_in.shape[-1] // 4])  # (zeros_like: shard_map-varying)

  def step(carry, g_in):
    c, h = carry
    acts, c, h = _cell(g_in + jnp.einsum("dbh,dhk->dbk", h, w_hh), c)
    return (c, h), (h, c, jnp.concatenate(acts, axis=-1))

  return jax.lax.scan(step, (zeros, zeros), gates_in)[1]


def lstm_recurrence_reference(gates_in, w_hh):
  """`lstm_recurrence` with JAX's own gradient (tests compare the two)."""
  return _recurrence_scan(gates_in, w_hh)[0]


@jax.custom_vjp
def lstm_recurrence(gates_in, w_hh):
  """Hidden states [T, 2, B, H] of both directions' LSTMs; see `_recurrence_scan`.

  Same values and gradients as `lstm_recurrence_reference`, with a hand-written backward pass:
  the reverse scan carries only (dh, dc) and emits each frame's gate gradients; the recurrent
  kernel's gradient is then one matmul over all frames.  JAX's own transpose accumulates that
  gradient inside the loop, and with the batch split over devices XLA all-reduces the partial
  sums in every iteration (48 all-reduces per step on the default config; BENCHMARKS.md).
  """
  return _recurrence_scan(gates_in, w_hh)[0]


def _recurrence_fwd(gates_in, w_hh):
  hs, cs, acts = _recurrence_scan(gates_in, w_hh)
  return hs, (hs, cs, acts, w_hh)


def _recurrence_bwd(res, dhs):
  hs, cs, acts, w_hh = res
  c_prev = jnp.concatenate([jnp.zeros_like(cs[:1]), cs[:-1]], axis=0)
  w_t = jnp.swapaxes(w_hh, 1, 2)             # [2, 4H, H]

  def step(carry, inp):
    dh, dc = carry
    dh_out, acts_t, c_t, c_prev_t = inp
    dh = dh + dh_out
    i, f, gg, o = jnp.split(acts_t, 4, axis=-1)
    tc = jnp.tanh(c_t)
    dc = dc + dh * o * (1 - tc * tc)
    d_pre = jnp.concatenate([dc * gg * i * (1 - i), dc * c_prev_t * f * (1 - f), dc * i * (1 - gg * gg),
                             dh * tc * o * (1 - o)], axis=-1)
    return (jnp.einsum("dbk,dkh->dbh", d_pre, w_t), dc * f), d_pre

  zeros = jnp.zeros_like(hs[0])
  _, d_pre = jax.lax.scan(step, (zeros, zeros), (dhs, acts, cs, c_prev), reverse=True)
  h_prev = jnp.concatenate([jnp.zeros_like(hs[:1]), hs[:-1]], axis=0)
  dw_hh = jnp.einsum("tdbh,tdbk->dhk", h_prev, d_pre)
  return d_pre, dw_hh.astype(w_hh.dtype)


lstm_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


class BiLSTM(nn.Module):
  """One bidirectional LSTM layer over [B, T, D] with per-example valid lengths.

  The input projection of all frames is one matmul outside the scan (the scan then carries only
  the recurrent [B, H] x [H, 4H] product), and both directions share one scan.  The backward
  direction reads each sequence reversed *within its valid length*, so padding frames never
  reach the real ones.
  """
  hidden: int
  # "custom_vjp": `lstm_recurrence` (hand-written backward pass); "autodiff": JAX's own.
  impl: str = "custom_vjp"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, lengths):
    t = x.shape[1]
    h = self.hidden
    # Reverse each sequence inside its own length: index (len - 1 - i) for i < len, else i.
    idx = jnp.arange(t)[None, :]
    rev_idx = jnp.where(idx < lengths[:, None], lengths[:, None] - 1 - idx, idx)
    # Both directions' input projections in one matmul; the backward direction's frames are then
    # reversed (projecting frame by frame commutes with reordering the frames).
    gates = nn.DenseGeneral((2, 4 * h), name="input_proj", dtype=self.dtype)(x)  # [B, T, 2, 4H]
    gates_in = jnp.stack([gates[:, :, 0], jnp.take_along_axis(gates[:, :, 1], rev_idx[..., None], axis=1)],
                         axis=0)  # [2, B, T, 4H]
    w_hh = self.param("recurrent_kernel", nn.initializers.orthogonal(), (2, h, 4 * h), jnp.float32)
    w_hh = w_hh.astype(self.dtype)
    mask = (idx < lengths[:, None]).astype(self.dtype)  # [B, T]
    recurrence = lstm_recurrence if self.impl == "custom_vjp" else lstm_recurrence_reference
    out = recurrence(jnp.moveaxis(gates_in, 2, 0), w_hh)
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


def _pool_windows(x, pool):
  ph, pw = pool
  b, h, w, c = x.shape
  x = x[:, :h - h % ph, :w - w % pw]
  return x.reshape(b, h // ph, ph, w // pw, pw, c)


def _pool_argmax(x, pool):
  """Each window's maximum and the position (row-major) of its first maximum."""
  ph, pw = pool
  xw = _pool_windows(x, pool)                # [B, H', ph, W', pw, C]
  best, idx = xw[:, :, 0, :, 0, :], jnp.zeros(xw[:, :, 0, :, 0, :].shape, jnp.int8)
  for k in range(1, ph * pw):
    v = xw[:, :, k // pw, :, k % pw, :]
    better = v > best
    best, idx = jnp.where(better, v, best), jnp.where(better, jnp.int8(k), idx)
  return best, idx


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def max_pool(x, pool):
  """Non-overlapping max pool as reshape + max: the same values as `nn.max_pool` (widths/heights
  that do not divide are cropped, as VALID pooling does) and the same gradient: each window's
  gradient goes to its first maximum in row-major order, as XLA's select-and-scatter does.

  The forward pass keeps that position (int8), so the backward pass is a few fused selects and
  compares no float values (a recomputed activation may differ from the saved one in the last
  bit, and equal values -- uniform image areas -- are common).  Select-and-scatter
  (`nn.max_pool`) is ~6x slower on CPU; JAX's gradient of `max` spends three more passes."""
  return jnp.max(_pool_windows(x, pool), axis=(2, 4))


def _max_pool_fwd(x, pool):
  # The values from the plain reduction (XLA fuses it into the convolution before it); the
  # positions from their own pass, so exactly one element of each window gets the gradient.
  return max_pool(x, pool), (_pool_argmax(x, pool)[1], x.shape)


def _max_pool_bwd(pool, res, g):
  idx, (b, h, w, c) = res
  ph, pw = pool
  pos = jnp.arange(ph * pw, dtype=jnp.int8).reshape(1, 1, ph, 1, pw, 1)  # row-major window position
  hit = idx[:, :, None, :, None, :] == pos
  gx = jnp.where(hit, g[:, :, None, :, None, :], jnp.zeros((), g.dtype))  # [B, H', ph, W', pw, C]
  gx = gx.reshape(b, gx.shape[1] * ph, gx.shape[3] * pw, c)
  return (jnp.pad(gx, ((0, 0), (0, h - gx.shape[1]), (0, w - gx.shape[2]), (0, 0))),)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


class GroupBatchNorm(nn.Module):
  """Batch norm whose training statistics come from `groups` equal slices of the batch ("ghost
  batch norm"); groups=1 is `nn.BatchNorm` (same variables, values and running averages).

  With the batch split over devices and groups = a multiple of the device count, each group lies
  on one device: the statistics need no cross-device all-reduce, the forward and backward passes
  no sync point per layer.  The running averages take the mean of the groups' statistics.  The
  grouping is the config's, not the machine's: the same config computes the same thing on any
  number of devices that divides it.
  """
  groups: int = 1
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, use_running_average: bool, pool=None):
    """x [B, H, W, C] -> batch-normalised x; with `pool` (ph, pw), max_pool(batch-normalised x).

    With `pool` the affine part is applied after pooling, which is the same function: per channel
    it is y = (x - mean) * a + bias, monotone in x (increasing for a >= 0, decreasing for a < 0;
    float rounding keeps that), so the window maximum of y is y of the window maximum of x (of the
    minimum where a < 0) -- pooled as max_pool(sign(a) * x).  Only the statistics and the pool
    read the full-resolution map; the normalisation runs on the 2-4x smaller pooled one, and so
    does its backward pass (the gradient reaches each window's first maximum, as before)."""
    c = x.shape[-1]
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
    scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    if use_running_average:
      mean, var = ra_mean.value, ra_var.value
      xg = x[None]
    else:
      g = self.groups
      if x.shape[0] % g:
        raise ValueError(f"batch norm groups={g} do not divide the batch of {x.shape[0]}")
      xg = x.reshape((g, x.shape[0] // g) + x.shape[1:]).astype(jnp.float32)
      axes = tuple(range(1, xg.ndim - 1))
      mean = xg.mean(axes, keepdims=True)  # flax's fast variance: E[x^2] - E[x]^2, clipped at 0
      var = jnp.maximum(0.0, jnp.square(xg).mean(axes, keepdims=True) - jnp.square(mean))
      if not self.is_initializing():
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean.reshape(g, c).mean(0)
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var.reshape(g, c).mean(0)
    a = jax.lax.rsqrt(var + self.epsilon) * scale
    if pool is not None:
      sign = jnp.where(a >= 0, 1.0, -1.0).astype(xg.dtype)
      pooled = max_pool((xg * sign).reshape((-1,) + xg.shape[2:]), tuple(pool))
      xg = sign * pooled.reshape(xg.shape[:2] + pooled.shape[1:])  # each window's max (min where a < 0)
    y = (xg - mean) * a + bias
    return y.reshape((x.shape[0],) + y.shape[2:]).astype(self.dtype)


# Batch norm's running averages: running = BN_MOMENTUM * running + (1 - BN_MOMENTUM) * batch.
BN_MOMENTUM = 0.9


class CRNN(nn.Module):
  num_classes: int
  conv_features: Sequence[int] = (64, 128, 256, 256, 512, 512)
  conv_pools: Sequence[Sequence[int]] = ((2, 2), (2, 2), (1, 1), (2, 1), (1, 1), (2, 1))
  lstm_hidden: int = 256
  lstm_layers: int = 2
  lstm_impl: str = "custom_vjp"   # "custom_vjp" | "autodiff" (BiLSTM)
  bn_groups: int = 1              # GroupBatchNorm: statistics over batch / bn_groups examples
  dropout: float = 0.0
  shortcut: bool = False
  # "xla": lax.conv; "im2col": every conv as patches x matrix (faster on 1 CPU device with
  # several threads); "im2col_first": only the first (1-channel) conv.
  conv_impl: str = "xla"
  # "bn_fused": max pool inside the batch norm, before its affine part (GroupBatchNorm; same
  # function); "reshape": batch norm, then max pool as reshape + max (fast gradient on CPU);
  # "reduce_window": batch norm, then nn.max_pool.
  pool_impl: str = "bn_fused"
  # "none": the pixels as they come ([0, 1] grey); "standardize": each image shifted and scaled to
  # mean 0, std 1 over its valid columns (standardize_images) -- one input for any paper/ink
  # brightness and contrast, in training, evaluation and inference alike.
  input_norm: str = "none"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images, lengths, *, train: bool):
    """images [B, H, W, 1] float32; lengths [B] int32 valid frames -> logits [B, T, C] float32."""
    if self.input_norm == "standardize":
      images = standardize_images(images, lengths * width_stride(self.conv_pools))
    elif self.input_norm != "none":
      raise ValueError(f"model.input_norm={self.input_norm!r}: choose 'none' or 'standardize'")
    x = images.astype(self.dtype)
    for i, (feat, pool) in enumerate(zip(self.conv_features, self.conv_pools)):
      if self.conv_impl == "im2col" or (self.conv_impl == "im2col_first" and i == 0):
        x = Conv3x3(feat, dtype=self.dtype, name=f"conv{i}")(x)
      else:
        x = nn.Conv(feat, (3, 3), padding="SAME", use_bias=False, dtype=self.dtype, name=f"conv{i}")(x)
      # Batch statistics in training, running averages in evaluation (the original's
      # multi-GPU graph never switched BN to training mode).
      bn = GroupBatchNorm(self.bn_groups, momentum=BN_MOMENTUM, dtype=self.dtype, name=f"bn{i}")
      if tuple(pool) == (1, 1):
        x = nn.relu(bn(x, use_running_average=not train))
      elif self.pool_impl == "bn_fused":
        # relu(max(bn(x))), the batch norm's affine part after the pool (GroupBatchNorm).
        x = nn.relu(bn(x, use_running_average=not train, pool=tuple(pool)))
      elif self.pool_impl == "reshape":
        # relu(max(x)) == max(relu(x)): the relu then runs on the pooled (2-4x smaller) map.
        x = nn.relu(max_pool(bn(x, use_running_average=not train), tuple(pool)))
      else:
        x = nn.max_pool(nn.relu(bn(x, use_running_average=not train)), tuple(pool), strides=tuple(pool))
    b, h, w, c = x.shape
    x = jnp.transpose(x, (0, 2, 1, 3)).reshape(b, w, h * c)  # one frame per column
    feats = x
    for i in range(self.lstm_layers):
      x = BiLSTM(self.lstm_hidden, impl=self.lstm_impl, dtype=self.dtype, name=f"lstm{i}")(x, lengths)
    if self.shortcut and self.lstm_layers:
      # A linear path from the conv features to the classifier, beside the LSTMs: early in
      # training the conv stack gets gradients that do not pass through saturating gates.
      x = x + nn.Dense(x.shape[-1], dtype=self.dtype, name="shortcut")(feats)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(x)
    return logits.astype(jnp.float32)


def standardize_images(images, valid_width, eps=1e-4):
  """images [B, H, W, C] -> each image minus its mean, over its std (+ eps in the variance: a
  flat image stays 0), the statistics over its first `valid_width` [B] columns (the line; the
  right padding of its width bucket left out).  Float32 statistics whatever the model's dtype."""
  x = images.astype(jnp.float32)
  cols = jnp.arange(x.shape[2])
  mask = (cols[None, :] < jnp.maximum(valid_width, 1)[:, None]).astype(jnp.float32)[:, None, :, None]
  n = jnp.sum(mask, axis=(1, 2, 3), keepdims=True) * x.shape[1] * x.shape[3]
  mean = jnp.sum(x * mask, axis=(1, 2, 3), keepdims=True) / n
  var = jnp.sum(jnp.square(x - mean) * mask, axis=(1, 2, 3), keepdims=True) / n
  return (x - mean) * jax.lax.rsqrt(var + eps)


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


def from_config(config, num_classes: int) -> CRNN:
  """The CRNN of `config.model` (checked against `config.input` and `config.train`) for `num_classes`
  classes (the charset + the blank)."""
  m = config.model
  if height_stride(m.conv_pools) != config.input.height:
    raise UserError(f"model.conv_pools reduce height {config.input.height} by {height_stride(m.conv_pools)}; "
                    "the height pools must multiply to input.height (one row per frame)")
  groups = m.get("bn_groups", 1)
  if not isinstance(groups, int) or groups < 1 or config.train.batch_size % groups:
    raise UserError(f"model.bn_groups={groups!r}: batch norm groups must be a whole number >= 1 that divides "
                    f"train.batch_size={config.train.batch_size}")
  for key, allowed in (("conv_impl", ("xla", "im2col", "im2col_first")),
                       ("pool_impl", ("bn_fused", "reshape", "reduce_window")),
                       ("lstm_impl", ("custom_vjp", "autodiff")),
                       ("input_norm", ("none", "standardize"))):
    if m.get(key, allowed[0]) not in allowed:
      raise UserError(f"model.{key}={m.get(key)!r}: choose one of {', '.join(allowed)}")
  return CRNN(num_classes=num_classes, conv_features=tuple(m.conv_features),
              conv_pools=tuple(tuple(p) for p in m.conv_pools), lstm_hidden=m.lstm_hidden,
              lstm_layers=m.lstm_layers, lstm_impl=m.get("lstm_impl", "custom_vjp"),
              bn_groups=m.get("bn_groups", 1), dropout=m.dropout, shortcut=m.get("shortcut", False),
              conv_impl=m.get("conv_impl", "xla"), pool_impl=m.get("pool_impl", "bn_fused"),
              input_norm=m.get("input_norm", "none"), dtype=jnp.dtype(m.dtype))
