"""The PyTorch side of bench/gpu_step.py: the same paper-sized CRNN, batch, shapes and steps on a GPU.

    python bench/gpu_torch_step.py --batch 128 --width 256 --steps 20

bench/torch_crnn.py's model (conv/BN/pool layout of bench/gpu_step.py's PAPER, cuDNN
`nn.LSTM`, `nn.CTCLoss`), Adam, synthetic batches of the same shapes (10-character labels,
width/8 frames), median of 5 timed windows of --steps steps after 3 warm-up steps, fp32 and bf16
(`torch.autocast`, the counterpart of our `model.dtype=bfloat16`: weights stay fp32, the CTC loss
runs in fp32).  Training steps and batched inference (eval mode, no gradients).  Prints one JSON
line per (dtype, mode), like bench/gpu_step.py, so the two can be put side by side.
"""
import json
import pathlib
import sys

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from bench.gpu_common import LABEL_LENGTH, PAPER, parser, row, timed_windows  # noqa: E402
from bench.torch_crnn import TorchCRNN  # noqa: E402


def bench(dtype, mode, batch, width, steps, classes, device="cuda"):
  dev = torch.device(device)
  torch.manual_seed(0)
  model = TorchCRNN(classes, PAPER["conv_features"], PAPER["conv_pools"], PAPER["lstm_hidden"],
                    PAPER["lstm_layers"], shortcut=False).to(dev)
  rng = np.random.default_rng(0)
  images = torch.as_tensor(rng.random((batch, 1, 32, width), np.float32), device=dev)
  frames = width // 8
  labels = torch.as_tensor(rng.integers(1, classes, (batch, LABEL_LENGTH)), device=dev)
  in_len = torch.full((batch,), frames, dtype=torch.long, device=dev)
  lab_len = torch.full((batch,), LABEL_LENGTH, dtype=torch.long, device=dev)
  ctc = nn.CTCLoss(blank=0, reduction="mean", zero_infinity=True)
  opt = torch.optim.Adam(model.parameters(), lr=1e-3)
  amp = dtype == "bfloat16"
  sync = (lambda _: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda _: None)

  def train_step():
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
      logp = model(images)
    loss = ctc(logp.float(), labels, in_len, lab_len)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss

  @torch.no_grad()
  def infer_step():
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
      return model(images).argmax(-1)

  if mode == "train":
    model.train()
    times, out = timed_windows(train_step, steps, sync)
  else:
    model.eval()
    times, out = timed_windows(infer_step, steps, sync)
  return row("pytorch", mode, dtype, batch, width, times, loss=out.item() if mode == "train" else None)


def main():
  ap = parser(["train", "infer"])
  ap.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke test")
  args = ap.parse_args()
  torch.backends.cudnn.benchmark = True
  # fp32 as JAX runs it on this GPU by default: TF32 tensor cores for convolutions and matmuls.
  torch.backends.cuda.matmul.allow_tf32 = True
  torch.backends.cudnn.allow_tf32 = True
  name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
  print(json.dumps({"side": "pytorch", "device": name, "torch": torch.__version__,
                    "cudnn": torch.backends.cudnn.version()}), flush=True)
  for mode in args.modes:
    for dtype in ("float32", "bfloat16"):
      print(json.dumps(bench(dtype, mode, args.batch, args.width, args.steps, args.classes, args.device)), flush=True)


if __name__ == "__main__":
  main()
