"""Helper for test_scale: digests of the first batches of a config's training pipeline, pulled in
a fresh process with JAX's CPU devices live (as in crnn-train), to compare across processes.

    python tests/pipeline_digest.py DATA_DIR CONFIG.py NUM_BATCHES
Prints one JSON line: a SHA-1 of each batch's images, frames and labels.
"""
import hashlib
import json
import pathlib
import runpy
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def main(data_dir, config_path, n):
  import jax
  import jax.numpy as jnp
  from crnn_jax import input_pipeline, train
  # Work on every device first: the runtime's threads are live while tf.data runs, as in training.
  for d in jax.devices():
    x = jax.device_put(jnp.ones((64, 64)), d)
    (x @ x).block_until_ready()
  c = runpy.run_path(config_path)["get_config"]()
  c.data_dir = data_dir
  spec = train.pipeline_spec(c, c.train.batch_size)
  ds = input_pipeline.train_dataset(data_dir, spec, c.input.augment, c.seed, shuffle_buffer=c.input.shuffle_buffer)
  digests = []
  for b in ds.take(n):
    h = hashlib.sha1()
    for k in ("image", "frames", "label"):
      h.update(b[k].numpy().tobytes())
    digests.append(h.hexdigest())
  print(json.dumps({"devices": jax.device_count(), "digests": digests}))


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
