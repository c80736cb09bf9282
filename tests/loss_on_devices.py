"""Helper for test_train: the loss of fixed global batches on however many devices XLA_FLAGS gives.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/loss_on_devices.py DATA_DIR
prints {"devices": n, "losses": [...]} after 3 train steps on the same batches.
"""
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402

from configs import tiny  # noqa: E402
from crnn_jax import input_pipeline, mesh as mesh_lib, train  # noqa: E402
from crnn_jax.charset import Charset  # noqa: E402


def main(data_dir):
  c = tiny.get_config()
  c.data_dir = data_dir
  cs = Charset.read(data_dir)
  model = train.make_model(c, cs.num_classes)
  compiled = train.Compiled(c, model, train.make_optimizer(c), mesh_lib.make_mesh())
  state = compiled.init(jax.random.PRNGKey(0))
  spec = train.pipeline_spec(c, c.train.batch_size)
  losses = []
  for raw in input_pipeline.train_dataset(data_dir, spec, None, seed=0).take(3):
    b = input_pipeline.to_numpy(raw)
    state, m = compiled.train_step(state, mesh_lib.global_batch({k: b[k] for k in train.DEVICE_KEYS},
                                                                compiled.mesh))
    losses.append(float(m["loss"]))
  print(json.dumps({"devices": jax.device_count(), "losses": losses}))


if __name__ == "__main__":
  main(sys.argv[1])
