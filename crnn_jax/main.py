"""crnn-train: `crnn-train --config configs/X.py --workdir W [--config.key=value ...]`.

Thin on purpose: flags, distributed init (crnn_jax/distributed.py) and CPU device count; the work is
`crnn_jax.train.train_and_evaluate(config, workdir)`, which tests call directly.
"""
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "experiment config file (configs/*.py)", lock_config=True)
flags.DEFINE_string("workdir", None, "where checkpoints, metrics and TensorBoard events go")
flags.DEFINE_integer("cpu_devices", 0, "on CPU: split the host into this many XLA devices "
                     "(one per core is fastest for the data-parallel step); 0 = leave as is")
flags.DEFINE_string("coordinator_address", None, "multi-process: HOST:PORT of process 0 "
                    "(or JAX_COORDINATOR_ADDRESS); SLURM and TPU VM pods are detected without it")
flags.DEFINE_integer("num_processes", None, "multi-process: how many (or JAX_NUM_PROCESSES)")
flags.DEFINE_integer("process_id", None, "multi-process: this one's index (or JAX_PROCESS_ID)")
flags.DEFINE_integer("distributed_timeout", 300, "seconds to wait for every process to join")
flags.DEFINE_string("compilation_cache", None, "a folder for JAX's persistent compilation cache: a rerun or "
                    "resume with the same config loads the compiled steps instead of compiling "
                    "(BENCHMARKS.md: compile time per width bucket with and without it)")
flags.mark_flags_as_required(["config", "workdir"])


def _setup_devices(n):
  if n > 0:
    flag = f"--xla_force_host_platform_device_count={n}"
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  _setup_devices(FLAGS.cpu_devices)
  logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
  from crnn_jax.errors import UserError
  from crnn_jax import distributed, train
  if FLAGS.compilation_cache:
    train.enable_compilation_cache(FLAGS.compilation_cache)
  try:
    distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                           FLAGS.distributed_timeout)
    final = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except UserError as e:
    print(f"crnn-train: error: {e}", file=sys.stderr)
    sys.exit(2)
  print({k: round(v, 4) for k, v in final.items()})


def run():
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  # Parse here, so that an override of a key the config does not have (or a bad value) is one
  # line rather than a traceback out of absl's flag parser.
  try:
    argv = FLAGS(sys.argv)
  except flags.Error as e:
    print(f"crnn-train: error: {e}", file=sys.stderr)
    sys.exit(2)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    bad = [a for a in sys.argv[1:] if a.startswith("--config.")]
    print(f"crnn-train: error: bad config override among {bad}: {type(e).__name__} {e}; the keys are those of "
          "the config file (e.g. --config.optimizer.learning_rate=1e-3)", file=sys.stderr)
    sys.exit(2)
  # Every config value checked before JAX and TensorFlow are imported (crnn_jax/config_check.py).
  from crnn_jax import config_check
  bad = config_check.problems(FLAGS.config)
  if bad:
    print("crnn-train: error: config: " + "; ".join(bad), file=sys.stderr)
    sys.exit(2)
  app.run(main, flags_parser=lambda _: argv)


if __name__ == "__main__":
  run()
