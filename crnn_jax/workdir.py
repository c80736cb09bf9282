"""Loading a trained model back from a workdir (config.json, chinese.txt, checkpoints)."""
import json
import os

import jax
import ml_collections

from crnn_jax import checkpointing, mesh as mesh_lib
from crnn_jax.charset import Charset
from crnn_jax.errors import UserError


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
  g.add_argument("--beam", type=int, default=None, help="prefixes kept per frame")
  g.add_argument("--lm-weight", type=float, default=None,
                 help="weight of the character n-gram LM's log-probability (0: no LM)")
  g.add_argument("--lm-order", type=int, default=None, help="n of the character n-gram LM")
  g.add_argument("--length-bonus", type=float, default=None, help="score added per character")


def decoder_overrides(args):
  return {"decoder": args.decoder, "beam": args.beam, "lm_weight": args.lm_weight,
          "lm_order": args.lm_order, "length_bonus": args.length_bonus}


def load(workdir, which="best", weights="ema"):
  """-> (config, charset, compiled steps, state, step).  `which`: best | latest | a step number.  `weights`: "ema"
  gives the state with the EMA weights in place of the raw ones when the run kept an EMA
  (config.train.ema_decay > 0), "raw" the trained weights themselves."""
  from crnn_jax import train
  workdir = os.path.abspath(workdir)
  cfg_path = os.path.join(workdir, "config.json")
  if not os.path.exists(cfg_path):
    raise UserError(f"{workdir} is not a training workdir (no config.json); pass the --workdir of crnn-train")
  config = ml_collections.ConfigDict(json.load(open(cfg_path, encoding="utf-8")))
  charset = Charset.read(os.path.join(workdir, "chinese.txt"))
  model = train.make_model(config, charset.num_classes)
  compiled = train.Compiled(config, model, train.make_optimizer(config), mesh_lib.make_mesh())
  latest, best = checkpointing.managers(workdir, config)
  if str(which).isdigit():
    manager, step = latest, int(which)
    if step not in latest.all_steps():
      raise UserError(f"{workdir} keeps no checkpoint of step {step}; it keeps steps "
                      f"{sorted(latest.all_steps()) or 'none'} (train.keep_checkpoints sets how many)")
  else:
    manager = best if which == "best" and best.latest_step() is not None else latest
    step = manager.best_step() if manager is best else manager.latest_step()
  if step is None:
    raise UserError(f"{workdir} holds no checkpoint yet")
  state = checkpointing.restore(manager, compiled.abstract_with_shardings(), step)
  return config, charset, compiled, train.inference_view(state, weights), int(step)
