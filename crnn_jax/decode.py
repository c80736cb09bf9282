"""Greedy CTC decoding: best class per frame, collapse repeats, drop blanks (class 0)."""
import numpy as np


def collapse(frames, length=None, blank: int = 0):
  """[T] int classes -> list of classes.  A character doubled in the text survives only when a
  blank separates its two runs: [a, a, 0, a] -> [a, a]; [a, a, a] -> [a]."""
  out, prev = [], blank
  for k in (frames if length is None else frames[:length]):
    k = int(k)
    if k != prev and k != blank:
      out.append(k)
    prev = k
  return out


def greedy_batch(best, lengths, charset):
  """best [B, T] argmax classes, lengths [B] valid frames -> list of B strings."""
  best = np.asarray(best)
  return [charset.text(collapse(best[i], int(lengths[i]))) for i in range(best.shape[0])]
