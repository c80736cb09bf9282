"""The model's CPU-fast building blocks compute exactly what the standard Flax ones do."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from crnn_jax import inference, train
from crnn_jax.errors import UserError
from crnn_jax.model import (CRNN, BiLSTM, Conv3x3, GroupBatchNorm, lstm_recurrence, lstm_recurrence_reference,
                             max_pool, standardize_images)


def test_max_pool_matches_flax():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 14, 3)), jnp.float32)
  for pool in ((2, 2), (2, 1), (4, 2)):
    np.testing.assert_array_equal(max_pool(x, pool), nn.max_pool(x, pool, strides=pool))


@pytest.mark.parametrize("module", [Conv3x3])
def test_fast_convs_match_flax_conv_values_grads_and_init(module):
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 6, 10, 4)), jnp.float32)
  ref = nn.Conv(5, (3, 3), padding="SAME", use_bias=False)
  v_ref = ref.init(jax.random.PRNGKey(3), x)
  v = module(5).init(jax.random.PRNGKey(3), x)
  np.testing.assert_array_equal(v["params"]["kernel"], v_ref["params"]["kernel"])  # same checkpoints
  np.testing.assert_allclose(module(5).apply(v, x), ref.apply(v_ref, x), rtol=1e-5, atol=1e-5)
  dy = jnp.asarray(np.random.default_rng(4).normal(size=(2, 6, 10, 5)), jnp.float32)

  def grads(m, variables):  # kernel and input gradients of <m(x), dy>
    return jax.grad(lambda k, x_: jnp.sum(m.apply({"params": {"kernel": k}}, x_) * dy), argnums=(0, 1))(
        variables["params"]["kernel"], x)
  for g, g_ref in zip(grads(module(5), v), grads(ref, v_ref)):
    np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("conv_impl,pool_impl", [("im2col", "reshape"), ("im2col_first", "reduce_window")])
def test_crnn_variants_give_the_same_logits(conv_impl, pool_impl):
  m = tiny.get_config().model
  kw = dict(num_classes=11, conv_features=tuple(m.conv_features), conv_pools=tuple(m.conv_pools),
            lstm_hidden=8, shortcut=True)
  x = jnp.asarray(np.random.default_rng(2).random((2, 32, 64, 1)), jnp.float32)
  frames = jnp.asarray([16, 9], jnp.int32)
  base = CRNN(**kw)
  v = base.init(jax.random.PRNGKey(0), x, frames, train=False)
  other = CRNN(**kw, conv_impl=conv_impl, pool_impl=pool_impl)
  np.testing.assert_allclose(other.apply(v, x, frames, train=False), base.apply(v, x, frames, train=False),
                             rtol=1e-4, atol=1e-4)


def test_unknown_impl_is_one_line():
  c = tiny.get_config()
  c.model.conv_impl = "fft"
  with pytest.raises(UserError, match="model.conv_impl='fft': choose one of xla, im2col"):
    train.make_model(c, 11)


def _rand(seed, shape, scale=1.0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape) * scale, jnp.float32)


def test_max_pool_gradient_matches_flax():
  """Same gradient as nn.max_pool's select-and-scatter, ties (uniform image areas) included."""
  x = _rand(5, (2, 9, 13, 3))  # crops like VALID pooling
  x_ties = jnp.round(x)  # many windows with two or more equal maxima
  for pool in ((2, 2), (2, 1), (3, 2)):
    for v in (x, x_ties):
      def grad(pool_fn):
        return jax.grad(lambda x_: jnp.sum(jnp.sin(pool_fn(x_)) * jnp.arange(1.0, 1.0 + pool_fn(x_).size).reshape(
            pool_fn(x_).shape)))(v)
      np.testing.assert_array_equal(grad(lambda u: max_pool(u, pool)), grad(lambda u: nn.max_pool(u, pool, strides=pool)))


def test_lstm_recurrence_gradient_matches_jax_autodiff():
  t, b, h = 7, 3, 5
  gates = _rand(6, (t, 2, b, 4 * h))
  w = _rand(7, (2, h, 4 * h), 0.5)
  ct = _rand(8, (t, 2, b, h))

  def loss(fn):
    return lambda g, w_: jnp.sum(fn(g, w_) * ct)
  np.testing.assert_array_equal(lstm_recurrence(gates, w), lstm_recurrence_reference(gates, w))
  for g, g_ref in zip(jax.grad(loss(lstm_recurrence), argnums=(0, 1))(gates, w),
                      jax.grad(loss(lstm_recurrence_reference), argnums=(0, 1))(gates, w)):
    np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-6)


def test_bilstm_frames_past_the_length_change_nothing():
  """Valid frames are a prefix in both directions: what padding holds never reaches them, and
  gets no gradient (the recurrence has no mask of its own)."""
  x = _rand(9, (2, 10, 6))
  lengths = jnp.asarray([10, 6], jnp.int32)
  m = BiLSTM(4)
  v = m.init(jax.random.PRNGKey(0), x, lengths)
  y = m.apply(v, x, lengths)
  y_alone = m.apply(v, x[1:, :6], lengths[1:])  # the short sequence on its own
  np.testing.assert_allclose(y[1, :6], y_alone[0], rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(y[1, 6:], 0.0)
  x_noise = x.at[1, 6:].set(100.0)
  np.testing.assert_array_equal(m.apply(v, x_noise, lengths)[1], y[1])
  for impl in ("custom_vjp", "autodiff"):
    g = jax.grad(lambda x_: jnp.sum(BiLSTM(4, impl=impl).apply(v, x_, lengths) ** 2))(x)
    np.testing.assert_array_equal(g[1, 6:], 0.0)
  g_custom, g_auto = (jax.grad(lambda p: jnp.sum(jnp.sin(BiLSTM(4, impl=i).apply({"params": p}, x, lengths))))(
      v["params"]) for i in ("custom_vjp", "autodiff"))
  for a, b in zip(jax.tree.leaves(g_custom), jax.tree.leaves(g_auto)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_group_batch_norm_of_one_group_is_flax_batch_norm():
  x = _rand(10, (8, 5, 7, 3), 3.0) + 1.0
  ref = nn.BatchNorm(use_running_average=False, momentum=0.9)
  ours = GroupBatchNorm(1, momentum=0.9)
  v_ref = ref.init(jax.random.PRNGKey(1), x)
  v = ours.init(jax.random.PRNGKey(1), x, use_running_average=False)
  assert jax.tree.structure(v) == jax.tree.structure(v_ref)  # the same checkpoints
  y_ref, s_ref = ref.apply(v_ref, x, mutable=["batch_stats"])
  y, s = ours.apply(v, x, use_running_average=False, mutable=["batch_stats"])
  np.testing.assert_allclose(y, y_ref, rtol=1e-6, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), s, s_ref)
  params = {"scale": _rand(11, (3,)), "bias": _rand(12, (3,))}

  def grads(m, variables, **kw):
    return jax.grad(lambda p, x_: jnp.sum(jnp.sin(m.apply({**variables, "params": p}, x_, mutable=["batch_stats"],
                                                          **kw)[0])), argnums=(0, 1))(params, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               grads(ours, v, use_running_average=False), grads(ref, v_ref))
  np.testing.assert_allclose(ours.apply({**s, "params": v["params"]}, x, use_running_average=True),
                             nn.BatchNorm(use_running_average=True).apply({**s_ref, "params": v_ref["params"]}, x),
                             rtol=1e-6, atol=1e-6)


def test_group_batch_norm_normalises_each_group_on_its_own():
  x = _rand(13, (8, 4, 5, 2), 2.0) + jnp.arange(8.0)[:, None, None, None]
  m = GroupBatchNorm(2, momentum=0.5)
  v = m.init(jax.random.PRNGKey(0), x, use_running_average=False)
  y, s = m.apply(v, x, use_running_average=False, mutable=["batch_stats"])
  halves = [GroupBatchNorm(1, momentum=0.5).apply(v, x[i:i + 4], use_running_average=False, mutable=["batch_stats"])
            for i in (0, 4)]
  np.testing.assert_allclose(y, jnp.concatenate([h[0] for h in halves]), rtol=1e-6, atol=1e-6)
  for k in ("mean", "var"):  # running averages: the mean of the groups' statistics
    np.testing.assert_allclose(s["batch_stats"][k], (halves[0][1]["batch_stats"][k] + halves[1][1]["batch_stats"][k]) / 2,
                               rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="groups=3 do not divide the batch of 8"):
    GroupBatchNorm(3).init(jax.random.PRNGKey(0), x, use_running_average=False)


@pytest.mark.parametrize("train_mode", [True, False])
def test_pool_inside_batch_norm_is_batch_norm_then_pool(train_mode):
  # pool_impl="bn_fused" (the affine part after the pool, max_pool(sign(a) * x)) against batch
  # norm then max pool: negative scales (the window minimum is taken), ties (uniform areas),
  # two BN groups; logits, running statistics and every gradient.
  kw = dict(num_classes=50, conv_features=(8, 16, 24, 32, 40), conv_pools=((2, 2), (2, 2), (2, 2), (2, 1), (2, 1)),
            lstm_hidden=16, lstm_layers=1, bn_groups=2, shortcut=True)
  x = jnp.round(jnp.asarray(np.random.default_rng(0).random((4, 32, 64, 1)), jnp.float32) * 4) / 4
  frames = jnp.full((4,), 8, jnp.int32)
  v = CRNN(**kw).init({"params": jax.random.PRNGKey(0)}, x, frames, train=False)
  params = dict(v["params"], bn1=dict(v["params"]["bn1"], scale=-v["params"]["bn1"]["scale"], bias=jnp.full((16,), 2.0)),
                bn3=dict(v["params"]["bn3"], scale=v["params"]["bn3"]["scale"].at[:5].set(-0.5)))
  stats = jax.tree.map(lambda s: s + 0.3, v["batch_stats"])

  def run(pool_impl):
    def loss(p):
      out = CRNN(**kw, pool_impl=pool_impl).apply({"params": p, "batch_stats": stats}, x, frames, train=train_mode,
                                                  mutable=["batch_stats"])
      return jnp.sum(jnp.sin(out[0])), out
    return jax.grad(loss, has_aux=True)(params)
  (g_fused, (y_fused, s_fused)), (g_ref, (y_ref, s_ref)) = run("bn_fused"), run("reshape")
  np.testing.assert_allclose(y_fused, y_ref, rtol=1e-6, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), s_fused, s_ref)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(jnp.abs(b).max())),
               g_fused, g_ref)
  assert float(jnp.abs(g_fused["bn1"]["scale"]).min()) > 0 and float(jnp.abs(g_fused["conv0"]["kernel"]).max()) > 0


def test_bn_groups_must_divide_the_batch():
  c = tiny.get_config()
  c.model.bn_groups = 3
  with pytest.raises(UserError, match="model.bn_groups=3: .* divides train.batch_size=8"):
    train.make_model(c, 11)


def test_class_argmax_is_jnp_argmax():
  x = _rand(14, (3, 5, 40))
  x = x.at[0, 0, 7].set(9.0).at[0, 0, 3].set(9.0)  # a tie: the first index wins, as in argmax
  np.testing.assert_array_equal(inference.class_argmax(x), jnp.argmax(x, -1))
  assert inference.class_argmax(x).dtype == jnp.int32
  assert int(inference.class_argmax(x.at[1, 1].set(jnp.nan))[1, 1]) == 39  # NaN row: in range


def test_standardize_images_uses_only_the_line_columns():
  rng = np.random.default_rng(5)
  x = rng.random((3, 8, 20, 1)).astype(np.float32)
  valid = np.array([20, 12, 5], np.int32)
  y = np.asarray(standardize_images(jnp.asarray(x), jnp.asarray(valid)))
  for i, v in enumerate(valid):
    line = x[i, :, :v]
    np.testing.assert_allclose(y[i, :, :v], (line - line.mean()) / np.sqrt(line.var() + 1e-4), rtol=1e-4, atol=1e-4)
  # what the padding holds does not move the statistics of the line
  x2 = x.copy()
  x2[1, :, 12:] = 7.0
  np.testing.assert_allclose(np.asarray(standardize_images(jnp.asarray(x2), jnp.asarray(valid)))[1, :, :12],
                             y[1, :, :12], rtol=1e-5, atol=1e-5)
  flat = standardize_images(jnp.full((1, 8, 16, 1), 0.7), jnp.asarray([16]))
  assert np.all(np.isfinite(flat)) and np.abs(np.asarray(flat)).max() < 1e-3  # a blank image stays blank


def test_standardized_model_reads_any_paper_and_ink_brightness_alike():
  """input_norm="standardize": a line at another contrast and brightness (a * x + b, a > 0) gives
  the same logits; without it they differ."""
  m = tiny.get_config().model
  kw = dict(num_classes=11, conv_features=tuple(m.conv_features), conv_pools=tuple(m.conv_pools), lstm_hidden=8)
  x = jnp.asarray(np.random.default_rng(6).random((2, 32, 64, 1)), jnp.float32)
  frames = jnp.asarray([8, 5], jnp.int32)
  faint = 0.3 * x + 0.55
  for norm, same in (("standardize", True), ("none", False)):
    model = CRNN(**kw, input_norm=norm)
    v = model.init(jax.random.PRNGKey(0), x, frames, train=False)
    a, b = model.apply(v, x, frames, train=False), model.apply(v, faint, frames, train=False)
    for i, f in enumerate(np.asarray(frames)):
      close = np.allclose(a[i, :f], b[i, :f], rtol=1e-3, atol=1e-3)
      assert close == same, (norm, i)


def test_unknown_input_norm_is_one_line():
  c = tiny.get_config()
  c.model.input_norm = "whiten"
  with pytest.raises(UserError, match="model.input_norm='whiten': choose one of none, standardize"):
    train.make_model(c, 11)
