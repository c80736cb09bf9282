"""Every shipped config builds a model whose pools turn a 32-pixel-high line into one row of frames."""
import importlib

import jax
import jax.numpy as jnp
import pytest

from crnn_jax import train
from crnn_jax.errors import UserError
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


def test_decay_steps_stops_part_way_down_the_cosine():
  """optimizer.decay_steps = 0 decays over train.num_steps; a longer decay ends training at the
  cosine's value there (poem_cpu: half the peak), and the first steps match the longer schedule."""
  import math

  c = importlib.import_module("configs.poem_cpu").get_config()
  o = c.optimizer
  # poem_cpu runs its whole 20,000-step cosine where the machine allows and stops earlier on its
  # time budget: half-way down is where a 2-core machine at ~83 images/s stops.
  assert 0 < c.train.time_budget_minutes < 60  # the training issue's hour
  with c.unlocked():
    c.train.num_steps = o.decay_steps // 2
  n, d, w = c.train.num_steps, o.decay_steps, o.warmup_steps
  assert d > n
  lr = train.learning_rate_fn(c)
  expect = o.learning_rate * (o.end_factor + (1 - o.end_factor) * 0.5 * (1 + math.cos(math.pi * (n - w) / (d - w))))
  assert float(lr(n)) == pytest.approx(expect, rel=1e-5)
  assert 0.4 * o.learning_rate < float(lr(n)) < 0.6 * o.learning_rate
  with c.unlocked():
    c.optimizer.decay_steps = 0
  full = train.learning_rate_fn(c)
  assert float(full(n)) == pytest.approx(o.learning_rate * o.end_factor, rel=1e-5)
  assert float(full(w)) == float(lr(w)) == pytest.approx(o.learning_rate)
  with c.unlocked():
    c.train.num_steps = d
  assert [float(train.learning_rate_fn(c)(s)) for s in (0, 150, 4000, n)] == \
         [float(lr(s)) for s in (0, 150, 4000, n)]
  with c.unlocked():
    c.optimizer.decay_steps = -1
  with pytest.raises(UserError, match="optimizer.decay_steps=-1"):
    train.learning_rate_fn(c)
