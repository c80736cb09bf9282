"""The model's CPU-fast building blocks compute exactly what the standard Flax ones do."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from crnn_jax import train
from crnn_jax.errors import UserError
from crnn_jax.model import CRNN, Conv3x3, max_pool


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
