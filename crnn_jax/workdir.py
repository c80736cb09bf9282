"""The command-line flags that choose a workdir's checkpoint, weights and decoding (crnn-eval,
crnn-predict, crnn-export, crnn-serve), and the CPU devices predict and serve read on; `inference.load`
takes what they give."""
import os

from crnn_jax import config_check


def add_checkpoint_flags(ap):
  """crnn-eval's and crnn-predict's --checkpoint and --weights."""
  ap.add_argument("--checkpoint", default="best", type=_checkpoint_arg, metavar="best|latest|STEP",
                  help="best: by validation accuracy; latest; or a step the run kept (train.keep_checkpoints)")
  ap.add_argument("--weights", default="ema", choices=("ema", "raw"),
                  help="ema: the moving average of the weights when the run kept one (train.ema_decay > 0), "
                       "else the weights; raw: the trained weights themselves")


def _checkpoint_arg(value):
  if value in ("best", "latest") or value.isdigit():
    return value
  import argparse
  raise argparse.ArgumentTypeError(f"{value!r}: give best, latest or a step number")


def add_decoder_flags(ap):
  """crnn-eval's and crnn-predict's decoding flags; each defaults to the run's config.decode."""
  g = ap.add_argument_group("decoding (defaults: the run's config.decode, see configs/common.py)")
  g.add_argument("--decoder", choices=("greedy", "beam"), default=None,
                 help="greedy: best class per frame; beam: CTC prefix beam search, with the character "
                      "language model of the training lines when --lm-weight is not 0")
  g.add_argument("--beam", type=config_check.arg_type("decode.beam"), default=None, help="prefixes kept per frame")
  g.add_argument("--lm-weight", type=config_check.arg_type("decode.lm_weight"), default=None,
                 help="weight of the character n-gram LM's log-probability (0: no LM)")
  g.add_argument("--lm-order", type=config_check.arg_type("decode.lm_order"), default=None, help="n of the character n-gram LM")
  g.add_argument("--length-bonus", type=config_check.arg_type("decode.length_bonus"), default=None, help="score added per character")


def decoder_overrides(args):
  return {"decoder": args.decoder, "beam": args.beam, "lm_weight": args.lm_weight,
          "lm_order": args.lm_order, "length_bonus": args.length_bonus}


def add_device_flags(ap):
  """crnn-predict's and crnn-serve's --cpu-devices (before jax is imported: `setup_cpu_devices`)."""
  n = min(2, os.cpu_count() or 1)
  ap.add_argument("--cpu-devices", type=config_check.arg_type(config_check.Int(1, 1024)), default=n, metavar="N",
                  help=f"on a CPU host: split it into N XLA devices and read each batch across them, as "
                       f"training does (default {n}: on 2 cores the batched reading is ~1.3x one device's, "
                       "BENCHMARKS.md 'Serving under load'); 1: one device.  A GPU/TPU host reads on its "
                       "accelerators whatever N is")


def setup_cpu_devices(n):
  """Splits the CPU into `n` XLA devices (XLA_FLAGS) before jax is imported.  An XLA_FLAGS that
  already sets the count wins; once jax is imported (a caller in the same process, e.g. a test) the
  devices are what they are and the environment is left alone."""
  import sys
  flags = os.environ.get("XLA_FLAGS", "")
  if n > 1 and "xla_force_host_platform_device_count" not in flags and "jax" not in sys.modules:
    os.environ["XLA_FLAGS"] = (flags + f" --xla_force_host_platform_device_count={n}").strip()


def reading_mesh():
  """A data mesh over every device when there is more than one (else None: one device)."""
  import jax
  if jax.device_count() <= 1:
    return None
  from crnn_jax import mesh as mesh_lib
  return mesh_lib.make_mesh()
