"""CTC decoding.  Greedy: best class per frame, collapse repeats, drop blanks (class 0).
Beam: prefix beam search over the top-K classes per frame, optionally with a character n-gram
language model (crnn_jax/lm.py) fused into the score.
"""
import math

import numpy as np

from crnn_jax.errors import UserError
from crnn_jax.lm import BOS, EOS


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


# ---- CTC prefix beam search with a character language model --------------------------------
_NEG = -1e30


def _lse(a, b):
  if a < b:
    a, b = b, a
  return a if b <= _NEG else a + math.log1p(math.exp(b - a))


def beam_search(top_lp, top_ids, blank_lp, length, charset, lm=None, lm_weight=0.0, length_bonus=0.0,
                beam=8, prune=-12.0):
  """CTC prefix beam search over one example (Hannun et al. 2014) -> the best text.

  top_lp, top_ids [T, K]: the K best log-probabilities per frame and their classes (`top_k` of
  the log-softmax; a class outside them counts as impossible in that frame); blank_lp [T]: the
  blank's log-probability per frame; `length` valid frames.  A prefix is ranked by
  log P_ctc(prefix) + lm_weight * log P_lm(prefix) + length_bonus * len(prefix): the LM scores
  each character as it is appended, and EOS at the end.  Characters below `prune` in a frame are
  not tried.  With lm=None and length_bonus=0 this is the plain prefix search, which sums every
  frame path of a text (greedy decoding takes the best single path).
  """
  classes, _ = beam_nbest(top_lp, top_ids, blank_lp, length, charset, lm, lm_weight, length_bonus, beam,
                          prune)[0]
  return charset.text(list(classes))


def beam_nbest(top_lp, top_ids, blank_lp, length, charset, lm=None, lm_weight=0.0, length_bonus=0.0,
               beam=8, prune=-12.0):
  """`beam_search`'s final beams, best first: [(classes tuple, score)] (at most `beam` of them;
  the score is the ranking score, LM and EOS included)."""
  use_lm = lm is not None and lm_weight != 0.0
  chars = charset.chars
  n_ctx = lm.order - 1 if use_lm else 0

  def context(prefix):
    text = "".join(chars[k - 1] for k in prefix[len(prefix) - n_ctx:]) if n_ctx else ""
    return (BOS + text) if len(prefix) < n_ctx else text

  # prefix (tuple of classes) -> [log P(ending in blank), log P(ending in a character), LM + bonus]
  beams = {(): [0.0, _NEG, 0.0]}
  for t in range(int(length)):
    lp0 = float(blank_lp[t])
    cands = [(int(c), float(v)) for c, v in zip(top_ids[t], top_lp[t]) if c != 0 and v >= prune]
    new = {}
    for prefix, (pb, pnb, extra) in beams.items():
      total = _lse(pb, pnb)
      e = new.get(prefix)
      if e is None:
        e = new[prefix] = [_NEG, _NEG, extra]
      e[0] = _lse(e[0], total + lp0)
      last = prefix[-1] if prefix else 0
      for c, v in cands:
        if c == last:
          e[1] = _lse(e[1], pnb + v)  # the same character goes on (collapsed)
          from_prev = pb + v  # the character again, after a blank
        else:
          from_prev = total + v
        ext = prefix + (c,)
        x = new.get(ext)
        if x is None:
          add = length_bonus + (lm_weight * lm.logp(context(prefix), chars[c - 1]) if use_lm else 0.0)
          x = new[ext] = [_NEG, _NEG, extra + add]
        x[1] = _lse(x[1], from_prev)
    if len(new) > beam:
      new = dict(sorted(new.items(), key=lambda kv: _lse(kv[1][0], kv[1][1]) + kv[1][2], reverse=True)[:beam])
    beams = new

  def final(prefix, pb, pnb, extra):
    score = _lse(pb, pnb) + extra
    return score + (lm_weight * lm.logp(context(prefix), EOS) if use_lm else 0.0)
  scored = [(prefix, final(prefix, *v)) for prefix, v in beams.items()]
  # Ties keep the order max() took before n-best existed (the first in insertion order).
  return sorted(scored, key=lambda kv: kv[1], reverse=True)


# ---- confidences --------------------------------------------------------------------------
def greedy_confidences(best, best_prob, length):
  """The greedy reading of one line with a confidence per character.

  best [T] classes, best_prob [T] their probabilities, `length` valid frames -> (classes, per
  character the highest probability over the frames of its run, [start, end) frames of each
  run).  The classes are `collapse(best, length)`."""
  classes, conf, spans, prev = [], [], [], 0
  for t in range(int(length)):
    k, p = int(best[t]), float(best_prob[t])
    if k != 0 and k == prev:
      conf[-1] = max(conf[-1], p)
      spans[-1][1] = t + 1
    elif k != 0:
      classes.append(k)
      conf.append(p)
      spans.append([t, t + 1])
    prev = k
  return classes, conf, spans


def align_confidences(top_lp, top_ids, blank_lp, length, classes):
  """Per character of `classes` (a text chosen by beam search), the highest probability over the
  frames the best CTC path of that text gives it (Viterbi forced alignment on the top-K lattice;
  a class outside a frame's top K counts as impossible there).  -> (confidences, [start, end)
  frames); the greedy path's own text gives `greedy_confidences`' values."""
  n, T = len(classes), int(length)
  if n == 0:
    return [], []
  top_lp, top_ids = np.asarray(top_lp)[:T], np.asarray(top_ids)[:T]
  lab = np.asarray(classes)
  # lp[t, j]: log P(class j of the text at frame t), -inf outside the frame's top K.
  hit = top_ids[:, None, :] == lab[None, :, None]
  lp = np.where(hit.any(-1), np.where(hit, top_lp[:, None, :], -np.inf).max(-1), -np.inf)
  S = 2 * n + 1  # states: blank, c1, blank, c2, ..., cn, blank
  emit = np.empty((T, S))
  emit[:, 0::2] = np.asarray(blank_lp)[:T, None]
  emit[:, 1::2] = lp
  # A character state may be entered from two states back unless it repeats the one before.
  skip = np.zeros(S, bool)
  skip[3::2] = lab[1:] != lab[:-1]
  score = np.full(S, -np.inf)
  score[:2] = emit[0, :2]
  back = np.zeros((T, S), np.int64)
  idx = np.arange(S)
  for t in range(1, T):
    stay, step = score, np.concatenate([[-np.inf], score[:-1]])
    jump = np.where(skip, np.concatenate([[-np.inf, -np.inf], score[:-2]]), -np.inf)
    cand = np.stack([stay, step, jump])
    arg = cand.argmax(0)
    back[t] = idx - arg
    score = cand.max(0) + emit[t]
  end = S - 1 if score[S - 1] >= score[S - 2] else S - 2
  if not np.isfinite(score[end]):
    return [0.0] * n, [[0, 0] for _ in range(n)]
  path = [end]
  for t in range(T - 1, 0, -1):
    path.append(back[t, path[-1]])
  path.reverse()
  conf, spans = [0.0] * n, [[T, 0] for _ in range(n)]
  for t, s in enumerate(path):
    if s % 2:
      j = s // 2
      conf[j] = max(conf[j], float(np.exp(lp[t, j])))
      spans[j] = [min(spans[j][0], t), max(spans[j][1], t + 1)]
  return conf, spans


def beam_batch(top_lp, top_ids, blank_lp, lengths, charset, **kw):
  """The batched outputs of `train.topk_step` -> list of B strings (see beam_search)."""
  top_lp, top_ids, blank_lp = map(np.asarray, (top_lp, top_ids, blank_lp))
  return [beam_search(top_lp[i], top_ids[i], blank_lp[i], int(lengths[i]), charset, **kw)
          for i in range(top_lp.shape[0])]


# ---- settings: config.decode, overridden by crnn-eval / crnn-predict flags ------------------
DEFAULTS = {"decoder": "greedy", "beam": 8, "topk": 8, "prune": -12.0, "lm_order": 3, "lm_weight": 0.0,
            "length_bonus": 0.0}


def settings(config, overrides=None):
  """config.decode (DEFAULTS for keys a workdir's older config.json lacks) + non-None overrides."""
  out = dict(DEFAULTS)
  out.update(dict(config.get("decode", {}) or {}))
  out.update({k: v for k, v in (overrides or {}).items() if v is not None})
  if out["decoder"] not in ("greedy", "beam"):
    raise UserError(f"decoder {out['decoder']!r} is not one of greedy, beam")
  if int(out["beam"]) < 1 or int(out["topk"]) < 1 or int(out["lm_order"]) < 1:
    raise UserError(f"beam ({out['beam']}), topk ({out['topk']}) and lm_order ({out['lm_order']}) must be >= 1")
  return out


def decoding_for(config, workdir, data_dir, charset, overrides=None):
  """-> None for greedy decoding, else the keyword arguments of `evaluate.evaluate(decoding=)`: beam
  search, with the workdir's character LM (built from `data_dir`'s training lines and saved as
  W/lm<order>.json on first use) when lm_weight != 0."""
  s = settings(config, overrides)
  if s["decoder"] == "greedy":
    return None
  lm = None
  if float(s["lm_weight"]) != 0.0:
    from crnn_jax import lm as lm_lib
    lm = lm_lib.for_workdir(workdir, data_dir, int(s["lm_order"]), charset.num_classes)
  return {"topk": int(s["topk"]), "beam": int(s["beam"]), "prune": float(s["prune"]), "lm": lm,
          "lm_weight": float(s["lm_weight"]), "length_bonus": float(s["length_bonus"])}
