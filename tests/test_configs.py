"""Every shipped config builds a model whose pools turn a 32-pixel-high line into one row of frames."""
import importlib

import jax
import jax.numpy as jnp
import pytest

from crnn_jax import train
from crnn_jax.model import width_stride


@pytest.mark.parametrize("name", ["poem_cpu", "crnn_paper", "tiny"])
def test_config_builds(name):
  c = importlib.import_module(f"configs.{name}").get_config()
  model = train.make_model(c, 100)
  stride = width_stride(c.model.conv_pools)
  w = c.input.width_buckets[0]
  out = jax.eval_shape(lambda: model.init_with_output(
      {"params": jax.random.PRNGKey(0)}, jnp.zeros((2, c.input.height, w, 1)),
      jnp.full((2,), w // stride, jnp.int32), train=False)[0])
  assert out.shape == (2, w // stride, 100)
  assert all(b % stride == 0 for b in c.input.width_buckets)
  assert c.train.batch_size % 8 == 0  # 1, 2, 4 or 8 devices split it evenly
