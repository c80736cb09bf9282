"""Helper for test_scale: N steps of the tiny model on fixed global batches, on whatever
processes x devices the environment gives (JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
JAX_PROCESS_ID, XLA_FLAGS), through the same `distributed.initialize` as crnn-train.

    python tests/multihost_worker.py DATA_DIR OUT.npz STEPS [BN_GROUPS]
Every process reads the same global batches and feeds only its own rows of each; process 0
writes the final parameters and the losses to OUT.npz.
"""
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from crnn_jax import distributed  # noqa: E402


def main(data_dir, out, steps, bn_groups=1):
  distributed.initialize(timeout_s=120)
  import jax
  import numpy as np
  from configs import tiny
  from crnn_jax import input_pipeline, mesh as mesh_lib, train
  from crnn_jax.charset import Charset
  c = tiny.get_config()
  c.data_dir = data_dir
  c.model.bn_groups = bn_groups
  cs = Charset.read(data_dir)
  model = train.make_model(c, cs.num_classes)
  compiled = train.Compiled(c, model, train.make_optimizer(c), mesh_lib.make_mesh())
  state = compiled.init(jax.random.PRNGKey(0))
  gb, n, p = c.train.batch_size, jax.process_count(), jax.process_index()
  lb = gb // n
  spec = train.pipeline_spec(c, gb)
  losses = []
  for raw in input_pipeline.train_dataset(data_dir, spec, None, seed=0).take(steps):
    b = input_pipeline.to_numpy(raw)
    local = {k: b[k][p * lb:(p + 1) * lb] for k in train.DEVICE_KEYS}
    state, m = compiled.train_step(state, mesh_lib.global_batch(local, compiled.mesh))
    losses.append(float(m["loss"]))
  params = jax.tree_util.tree_flatten_with_path(jax.device_get(state.params))[0]
  if p == 0:
    np.savez(out, losses=np.asarray(losses), **{jax.tree_util.keystr(k): np.asarray(v) for k, v in params})
  print(json.dumps({"process": p, "processes": n, "devices": jax.device_count(), "losses": losses}))


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2], int(sys.argv[3]), *(int(a) for a in sys.argv[4:5]))
