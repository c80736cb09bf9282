"""The command-line flags that choose a workdir's checkpoint, weights and decoding (crnn-eval,
crnn-predict, crnn-export, crnn-serve); `inference.load` takes what they give."""


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
