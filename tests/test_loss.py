"""The CTC loss of the train step (train.ctc_loss): both ways of feeding optax.ctc_loss against a
brute-force sum over alignments, and against each other at the default model's size."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from crnn_jax import mesh as mesh_lib
from crnn_jax import train
from crnn_jax.errors import UserError
from crnn_jax.model import width_stride


def _batch(labels, label_len, frames):
  return {"label": jnp.asarray(labels, jnp.int32), "label_len": jnp.asarray(label_len, jnp.int32),
          "frames": jnp.asarray(frames, jnp.int32)}


def _brute_force(logits, label, frames):
  """-log of the summed probability of every frame-by-frame path that collapses to `label`."""
  logp = np.asarray(jax.nn.log_softmax(jnp.asarray(logits[:frames], jnp.float64 if jax.config.x64_enabled
                                                   else jnp.float32), axis=-1), np.float64)
  total = 0.0
  for path in itertools.product(range(logits.shape[-1]), repeat=frames):
    collapsed = [c for i, c in enumerate(path) if c != 0 and (i == 0 or path[i - 1] != c)]
    if collapsed == list(label):
      total += np.exp(sum(logp[t, c] for t, c in enumerate(path)))
  return -np.log(total)


@pytest.mark.parametrize("impl", ["compact", "optax"])
def test_ctc_loss_is_the_sum_over_alignments(impl):
  # Repeated labels (need a blank between them), a label using the whole frame budget, frame
  # padding, and label padding whose value equals the last label (must not read as a repeat).
  rng = np.random.default_rng(0)
  labels = [[1, 1, 0], [2, 1, 2], [3, 0, 0], [1, 2, 2], [2, 2, 2]]
  label_len = [2, 3, 1, 2, 1]
  frames = [4, 5, 3, 5, 4]
  logits = rng.normal(size=(5, 6, 4)).astype(np.float32) * 2
  got = np.asarray(train.ctc_loss(jnp.asarray(logits), _batch(labels, label_len, frames), impl))
  want = [_brute_force(logits[b], labels[b][:label_len[b]], frames[b]) for b in range(5)]
  np.testing.assert_allclose(got, want, rtol=2e-5)


def _default_size_case(seed, scale):
  """Logits [32, 24, 3790] like the default model's at width 192; labels of 1-12 characters from a
  small alphabet (many repeats), 0-padded to 24; frames 20-24."""
  rng = np.random.default_rng(seed)
  b, t, k, n = 32, 24, 3790, 24
  logits = rng.normal(size=(b, t, k)).astype(np.float32) * scale
  label_len = rng.integers(1, 13, size=b)
  labels = np.where(np.arange(n)[None] < label_len[:, None], rng.integers(1, 6, size=(b, n)), 0)
  frames = rng.integers(20, t + 1, size=b)
  # A peaked (trained-like) case: the true path gets most of the mass, so the loss is small.
  if scale > 3:
    for i in range(b):
      path = np.repeat(np.r_[labels[i, :label_len[i]], 0][:, None], 2, axis=1).ravel()[:frames[i]]
      logits[i, np.arange(len(path)), path] += 3 * scale
  return jnp.asarray(logits), _batch(labels, label_len, frames)


@pytest.mark.parametrize("seed,scale", [(1, 1.0), (2, 8.0)])
def test_compact_ctc_equals_optax_in_value_and_gradient(seed, scale):
  logits, batch = _default_size_case(seed, scale)
  loss = {impl: train.ctc_loss(logits, batch, impl) for impl in ("compact", "optax")}
  feasible = np.asarray(batch["frames"]) >= 2 * np.asarray(batch["label_len"])  # a sufficient bound
  np.testing.assert_allclose(loss["compact"][feasible], loss["optax"][feasible], rtol=1e-5, atol=1e-4)
  grads = {impl: jax.grad(lambda x, impl=impl: jnp.sum(jnp.where(feasible, train.ctc_loss(x, batch, impl), 0)))(logits)
           for impl in ("compact", "optax")}
  np.testing.assert_allclose(grads["compact"], grads["optax"], atol=2e-5 * max(1.0, float(loss["optax"].max())))
  # Frames past `frames` and label positions past `label_len` change nothing and get no gradient.
  pad = np.arange(logits.shape[1])[None, :, None] >= np.asarray(batch["frames"])[:, None, None]
  assert float(jnp.abs(grads["compact"] * pad).max()) == 0.0
  noisy = dict(batch, label=jnp.where(jnp.arange(24)[None] >= batch["label_len"][:, None], 7, batch["label"]))
  # (Up to round-off: the padded label columns enter lse_t, which is added and subtracted again.)
  np.testing.assert_allclose(train.ctc_loss(logits + 5.0 * pad, noisy, "compact"), loss["compact"], rtol=1e-6)


def test_infeasible_label_gets_a_huge_loss_either_way():
  # 3 frames cannot hold "1 1" + the blank between plus one more character: the loss is ~1e5,
  # which the train step's `feasible` weight masks (input_pipeline decides feasibility).
  logits = jnp.zeros((1, 3, 5))
  batch = _batch([[1, 1, 2]], [3], [3])
  for impl in ("compact", "optax"):
    assert float(train.ctc_loss(logits, batch, impl)[0]) > 1e4


def test_train_step_with_either_ctc_impl_takes_the_same_step():
  c = tiny.get_config()
  mesh = mesh_lib.make_mesh()
  rng = np.random.default_rng(0)
  bs, w = c.train.batch_size, c.input.width_buckets[0]
  frames = w // width_stride(c.model.conv_pools)
  local = {"image": rng.random((bs, c.input.height, w, 1), np.float32), "frames": np.full((bs,), frames, np.int32),
           "label": np.pad(rng.integers(1, 11, (bs, 3)), ((0, 0), (0, c.input.max_label_length - 3))).astype(np.int32),
           "label_len": np.full((bs,), 3, np.int32), "feasible": np.ones((bs,), bool),
           "weight": np.ones((bs,), np.float32)}
  out = {}
  for impl in ("compact", "optax"):
    c.train.ctc_impl = impl
    model = train.make_model(c, 11)
    compiled = train.Compiled(c, model, train.make_optimizer(c), mesh)
    state = compiled.init(jax.random.PRNGKey(0))
    out[impl] = compiled.train_step(state, mesh_lib.global_batch(local, mesh))
  np.testing.assert_allclose(out["compact"][1]["loss"], out["optax"][1]["loss"], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               out["compact"][0].params, out["optax"][0].params)
  c.train.ctc_impl = "warp"
  with pytest.raises(UserError, match="train.ctc_impl='warp': choose one of compact, optax"):
    train.Compiled(c, model, train.make_optimizer(c), mesh)
