"""Training: `train_and_evaluate(config, workdir)`.

Sections: state and optimizer -> loss and steps (pure, jitted) -> host data -> evaluation ->
the loop (logging, checkpoints, resume).

Compile contract (big_vision style): `eval_shape(init)` gives the state's structure, the state
is replicated and batches are split along the mesh's `data` axis; `train_step` is jitted with
explicit in/out shardings and donates the state on accelerators.  One compile per width bucket.
"""
import functools
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from crnn_jax import checkpointing, compile_stats, inference, input_pipeline, mesh as mesh_lib
from crnn_jax.evaluate import evaluate, pipeline_spec, variables_of
from crnn_jax.charset import Charset
from crnn_jax import config_check
from crnn_jax.errors import UserError
from crnn_jax import model as model_lib
from crnn_jax.model import width_stride

DEVICE_KEYS = ("image", "frames", "label", "label_len", "feasible", "weight")


# ---- state and optimizer ------------------------------------------------------------------
@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array  # raw uint32 key; the step's key is fold_in(rng, step)
  # Exponential moving average of {"params", "batch_stats"} when config.train.ema_decay > 0
  # (evaluation and inference then use it); None otherwise, so the pytree (and checkpoints)
  # are exactly those of a run without it.
  ema: Any = None


def ema_decay_at(decay, step):
  """The EMA decay at `step`: min(decay, (1 + step) / (10 + step)), so that the average
  follows the weights closely early on instead of remembering the random init."""
  return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def weights_in_use(state, weights="ema"):
  """"ema" when `weights` asks for the EMA and the run kept one, else "raw"."""
  if weights not in ("ema", "raw"):
    raise UserError(f"weights={weights!r}: choose ema or raw")
  return "ema" if weights == "ema" and state.ema is not None else "raw"


def inference_view(state, weights="ema"):
  """`state` with the weights evaluation should use: the EMA ones (if the run kept them and
  `weights` is "ema") or the raw ones (`weights` "raw")."""
  if weights_in_use(state, weights) == "raw":
    return state
  return state.replace(params=state.ema["params"], batch_stats=state.ema["batch_stats"])


# The model is built where the reading path builds it (the inference core never imports this module).
make_model = model_lib.from_config


def learning_rate_fn(config):
  """Linear warm-up to `learning_rate`, then a cosine down to `learning_rate * end_factor` at step
  `optimizer.decay_steps` (0: `train.num_steps`).  With decay_steps > num_steps training stops
  part-way down the cosine and the EMA of the weights does the final averaging."""
  o = config.optimizer
  if o.get("decay_steps", 0) < 0:
    raise UserError(f"optimizer.decay_steps={o.decay_steps}: give 0 (decay over train.num_steps) or a "
                    "positive number of steps")
  decay_steps = o.get("decay_steps", 0) or config.train.num_steps
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=o.learning_rate, warmup_steps=o.warmup_steps,
      decay_steps=max(decay_steps, o.warmup_steps + 1), end_value=o.learning_rate * o.end_factor)


def _decay_mask(params):
  """Weight decay on conv and LSTM kernels only (not BN scales, biases or the classifier).

  The original example's L2 term filtered variables by a name that matched none, so it was 0.
  """
  def keep(path, _):
    names = [getattr(k, "key", str(k)) for k in path]
    return names[-1] in ("kernel", "recurrent_kernel") and any(n.startswith(("conv", "lstm")) for n in names)
  return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(config):
  o = config.optimizer
  return optax.chain(
      optax.clip_by_global_norm(o.grad_clip),
      optax.scale_by_adam(b1=o.b1, b2=o.b2),
      optax.add_decayed_weights(o.weight_decay, mask=_decay_mask),
      optax.scale_by_learning_rate(learning_rate_fn(config)))


def init_state(config, model, tx, rng):
  h, w = config.input.height, config.input.width_buckets[0]
  variables = model.init({"params": rng}, jnp.zeros((1, h, w, 1), jnp.float32),
                         jnp.full((1,), w // width_stride(config.model.conv_pools), jnp.int32), train=False)
  params = variables["params"]
  ema = None
  if config.train.get("ema_decay", 0.0) > 0:
    ema = jax.tree.map(jnp.copy, {"params": params, "batch_stats": variables["batch_stats"]})
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=variables["batch_stats"],
                    opt_state=tx.init(params), rng=rng, ema=ema)


# ---- loss and steps -----------------------------------------------------------------------
def ctc_loss(logits, batch, impl="compact"):
  """Per-example CTC loss, >= 0.  Blank 0; padded frames and label positions are masked.

  impl "optax": `optax.ctc_loss` on the logits.  It takes every label's log-probability per frame
  as an einsum of the [B, T, classes] log-probabilities with a one-hot of the labels [B, N,
  classes] (and the transpose of that in the backward pass): ~80% of the loss's time at 3,790
  classes.  impl "compact" (default): the same loss, with `optax.ctc_loss` run on each example's
  own columns only -- the blank and its N label positions, gathered from the log-probabilities
  ([B, T, N + 1]).  `optax.ctc_loss` normalises them again over those N + 1 columns, which
  subtracts lse_t = logsumexp of the row from every emission of frame t; every CTC path emits
  once per frame, so its loss grows by exactly sum_t lse_t over the valid frames, which is
  subtracted again.  Consecutive equal labels share one column, so optax still sees them as a
  repeat (a blank is needed between them).  Same values and gradients up to float32 round-off
  (tests/test_loss.py), 5x faster forward + backward on CPU (BENCHMARKS.md).
  """
  t = logits.shape[1]
  logit_paddings = (jnp.arange(t)[None, :] >= batch["frames"][:, None]).astype(jnp.float32)
  labels = batch["label"]
  label_paddings = (jnp.arange(labels.shape[1])[None, :] >= batch["label_len"][:, None]).astype(jnp.float32)
  logits = logits.astype(jnp.float32)
  if impl == "optax":
    per = optax.ctc_loss(logits, logit_paddings, labels, label_paddings, blank_id=0)
  elif impl == "compact":
    b, n = labels.shape
    logp = jax.nn.log_softmax(logits, axis=-1)
    emit = jnp.take_along_axis(logp, jnp.broadcast_to(labels[:, None, :], (b, t, n)), axis=-1)  # [B, T, N]
    columns = jnp.concatenate([logp[..., :1], emit], axis=-1)  # blank, then the label positions
    # Label position n reads column 1 + the first position of its run of equal labels.
    new_run = jnp.concatenate([jnp.ones((b, 1), bool), labels[:, 1:] != labels[:, :-1]], axis=1)
    run_start = jax.lax.cummax(jnp.where(new_run, jnp.arange(n, dtype=labels.dtype)[None, :], 0), axis=1)
    per = optax.ctc_loss(columns, logit_paddings, 1 + run_start, label_paddings, blank_id=0)
    per = per - jnp.sum(jax.nn.logsumexp(columns, axis=-1) * (1.0 - logit_paddings), axis=1)
  else:
    raise ValueError(f"train.ctc_impl must be 'compact' or 'optax', got {impl!r}")
  return jnp.maximum(per, 0.0)  # float32 round-off can make a perfect fit slightly negative


def train_step(state, batch, *, model, tx, lr_fn, ema_decay=0.0, mesh=None, ctc_impl="compact"):
  rng = jax.random.fold_in(state.rng, state.step)
  # Infeasible labels (too few frames) would give ~1e5 loss with finite gradients: mask them.
  w = batch["weight"] * batch["feasible"].astype(jnp.float32)

  def loss_fn(params, model, batch, w, rng):
    """Weighted sum of the per-example losses (normalised by the caller) and the new BN stats."""
    logits, updates = model.apply({"params": params, "batch_stats": state.batch_stats}, batch["image"],
                                  batch["frames"], train=True, rngs={"dropout": rng}, mutable=["batch_stats"])
    return jnp.sum(ctc_loss(logits, batch, ctc_impl) * w), updates["batch_stats"]

  n_dev = mesh.devices.size if mesh is not None else 1
  if n_dev > 1 and model.bn_groups % n_dev == 0:
    # Batch-norm groups fit inside devices: each device runs the forward and backward pass on its
    # own rows with no collective, then one all-reduce sums loss, weights and gradients.
    local_model = model.clone(bn_groups=model.bn_groups // n_dev)

    def local(params, batch, w):
      r = jax.random.fold_in(rng, jax.lax.axis_index("data"))
      (loss, bs), g = jax.value_and_grad(loss_fn, has_aux=True)(params, local_model, batch, w, r)
      loss, w_sum, g = jax.lax.psum((loss, jnp.sum(w), g), "data")
      return loss, w_sum, jax.lax.pmean(bs, "data"), g
    # check_vma=False: optax.ctc_loss's scan carries are not marked as varying over "data".
    loss, w_sum, batch_stats, grads = jax.shard_map(
        local, mesh=mesh, in_specs=(P(), P("data"), P("data")), out_specs=(P(), P(), P(), P()),
        check_vma=False)(state.params, batch, w)
  else:
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, model, batch, w, rng)
    w_sum = jnp.sum(w)
  # Normalised after the sum: dividing inside would need the global weight before the backward pass
  # (one more all-reduce, a sync point, at the start of the step).
  w_total = jnp.maximum(w_sum, 1.0)
  loss = loss / w_total
  grads = jax.tree.map(lambda g: g / w_total, grads)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "param_norm": optax.tree.norm(params),
             "update_norm": optax.tree.norm(updates), "learning_rate": lr_fn(state.step),
             "examples": jnp.sum(batch["weight"]),
             "infeasible": jnp.sum(batch["weight"] * (1.0 - batch["feasible"].astype(jnp.float32)))}
  ema = state.ema
  if ema is not None:
    d = ema_decay_at(ema_decay, state.step)
    ema = jax.tree.map(lambda e, x: d * e + (1.0 - d) * x, ema, {"params": params, "batch_stats": batch_stats})
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state,
                            ema=ema)
  return new_state, metrics


class Compiled:
  """The jitted steps for one model/optimizer on one mesh."""

  def __init__(self, config, model, tx, mesh, wrap=None):
    """`wrap` (tests) wraps the Python train step before jit, e.g. chex.assert_max_traces."""
    self.mesh = mesh
    rep, dat = mesh_lib.replicated(mesh), mesh_lib.data_sharded(mesh)
    lr_fn = learning_rate_fn(config)
    self.init = jax.jit(functools.partial(init_state, config, model, tx), out_shardings=rep)
    self.abstract = jax.eval_shape(functools.partial(init_state, config, model, tx), jax.random.PRNGKey(0))
    self.state_sharding = jax.tree.map(lambda _: rep, self.abstract)
    ema_decay = float(config.train.get("ema_decay", 0.0))
    ctc_impl = config.train.get("ctc_impl", "compact")
    if ctc_impl not in ("compact", "optax"):
      raise UserError(f"train.ctc_impl={ctc_impl!r}: choose one of compact, optax")

    # The state is donated to the step on accelerators (its memory is reused in place).  On CPU
    # donation cost ~4-5% of the default step (profile: the next step started 4-14 ms after the
    # last op, and the step began with copies of parameters; BENCHMARKS.md), and the state is
    # small (4 copies of 2M floats).
    donate = (0,) if jax.default_backend() != "cpu" else ()

    def step_fn(state, batch):
      return train_step(state, batch, model=model, tx=tx, lr_fn=lr_fn, ema_decay=ema_decay, mesh=mesh,
                        ctc_impl=ctc_impl)
    self.train_step = jax.jit(wrap(step_fn) if wrap else step_fn,
                              in_shardings=(rep, dat), out_shardings=(rep, rep), donate_argnums=donate)
    # The reading path's jitted steps (greedy, top-K) for the periodic evaluation.
    self.steps = inference.Steps(model, mesh)

  def abstract_with_shardings(self):
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        self.abstract, self.state_sharding)


def enable_compilation_cache(path):
  """JAX's persistent compilation cache in `path`, for every compile (none is too small or quick)."""
  os.makedirs(path, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", os.path.abspath(path))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


# ---- the loop -----------------------------------------------------------------------------
class _Preemption:
  """SIGTERM (a preempted VM, `scancel`, `docker stop`) -> save at the next step and exit 0.

  One process: a Python handler sets a flag.  Several: jax.distributed's preemption notifier
  catches SIGTERM and `reached_preemption_sync_point` makes every process stop at the same step
  (each may get the signal at another time; a collective on a missing peer would hang).
  """

  def __init__(self, n_proc):
    import signal
    self.n_proc, self.flag, self.old = n_proc, False, None
    if n_proc == 1:
      try:
        self.old = signal.signal(signal.SIGTERM, self._handler)
      except ValueError:  # not the main thread (e.g. a notebook worker): no handler
        self.old = None

  def _handler(self, signum, frame):
    self.flag = True

  def reached(self, step):
    if self.n_proc == 1:
      return self.flag
    from jax.experimental import multihost_utils
    return multihost_utils.reached_preemption_sync_point(step)

  def restore(self):
    if self.old is not None:
      import signal
      signal.signal(signal.SIGTERM, self.old)
      self.old = None


def _run_info(config, mesh):
  try:
    rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                         cwd=os.path.dirname(__file__), timeout=5).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True,
                           cwd=os.path.dirname(__file__), timeout=5).stdout.strip() != ""
  except (OSError, subprocess.SubprocessError):
    rev, dirty = "", False
  import flax as _flax, optax as _optax, orbax.checkpoint as _ocp
  return {"git_revision": rev, "git_dirty": dirty, "python": platform.python_version(),
          "versions": {"jax": jax.__version__, "flax": _flax.__version__, "optax": _optax.__version__,
                       "orbax-checkpoint": _ocp.__version__, "numpy": np.__version__},
          "devices": [str(d) for d in jax.devices()], "process_count": jax.process_count(),
          "mesh": dict(mesh.shape), "host": _host_info(), "argv": sys.argv}


def _host_info():
  """The CPU the run's wall times belong to: machines of one kind differ (this project's 2-core VMs
  trained the default config at ~83 images/s until 2026-11-26 and at ~210 on an AVX-512 EPYC then)."""
  info = {"machine": platform.machine(), "cpu_count": os.cpu_count(), "cpu": platform.processor() or ""}
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      text = f.read()
  except OSError:
    return info
  for line in text.splitlines():
    key, _, value = line.partition(":")
    if key.strip() == "model name" and not info.get("cpu_model"):
      info["cpu_model"] = value.strip()
    if key.strip() == "flags":
      flags = set(value.split())
      info["simd"] = sorted(f for f in flags if f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni"))
      break
  return info


def check_data(config, workdir):
  """Loads the data's charset and checks it against a workdir's copy (a resumed run)."""
  data_dir = config.data_dir
  cs = Charset.read(data_dir)
  saved = os.path.join(workdir, "chinese.txt")
  if os.path.exists(saved):
    old = Charset.read(saved)
    if old != cs:
      raise UserError(f"the workdir {workdir} was trained with another character set ({len(old)} characters) "
                      f"than {data_dir} ({len(cs)}); use a new --workdir or the matching data")
  meta_path = os.path.join(data_dir, "meta.json")
  if os.path.exists(meta_path):
    meta = json.load(open(meta_path, encoding="utf-8"))
    fpp = meta.get("frames_per_pixel")
    stride = width_stride(config.model.conv_pools)
    if fpp and 1.0 / stride < fpp - 1e-9:
      print(f"WARNING: the data was checked for {fpp} frames per pixel but the model gives 1/{stride}; "
            "labels that do not fit are masked and counted as 'infeasible'", file=sys.stderr)
  return cs


def _write_lm(config, workdir, charset):
  """The character LM of config.decode (beam search with lm_weight != 0), built from the training
  lines and kept in the workdir, so that crnn-predict needs no DATA_DIR."""
  from crnn_jax import decode, lm as lm_lib
  s = decode.settings(config)
  if s["decoder"] != "beam" or not float(s["lm_weight"]):
    return
  try:
    lm_lib.for_workdir(workdir, config.data_dir, int(s["lm_order"]), charset.num_classes)
  except UserError as e:
    print(f"WARNING: no language model for beam search: {e}", file=sys.stderr)


def check_layout(config, n_devices, n_processes):
  """Batch sizes must split evenly over processes (each feeds an equal share) and devices."""
  gb, eb = config.train.batch_size, config.eval.batch_size
  if n_processes > 1 and (gb % n_processes or eb % n_processes):
    raise UserError(f"train.batch_size {gb} / eval.batch_size {eb} must divide by the {n_processes} processes "
                    "(each feeds an equal share of every global batch); change the batch sizes or the process count")
  if gb % n_devices or eb % n_devices:
    raise UserError(f"train.batch_size {gb} / eval.batch_size {eb} must divide by the {n_devices} devices")


def parse_extra_evals(config, charset):
  """config.eval.extra ("DIR:split,DIR:split" or a tuple of them) -> [(DIR, split)], each checked:
  the split exists and DIR's chinese.txt is the run's character set."""
  extra = config.eval.get("extra", ())
  if isinstance(extra, str):
    extra = [e for e in extra.split(",") if e.strip()]
  out = []
  for item in extra:
    data_dir, sep, split = str(item).strip().rpartition(":")
    if not sep or not data_dir or not split:
      raise UserError(f"eval.extra item {item!r}: write it as DATA_DIR:split (e.g. data/otherworld:val_degraded)")
    input_pipeline.check_shards(data_dir, split, 1)  # names the folder or the missing split
    if Charset.read(data_dir) != charset:
      raise UserError(f"eval.extra {item}: {data_dir}/chinese.txt differs from the run's character set; "
                      "build that set from this run's DATA_DIR (otherworld build --data ...)")
    out.append((data_dir, split))
  return out


@jax.jit
def _all_finite(tree):
  """True when every float leaf of `tree` is finite (one reduction per leaf, on the devices)."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


class Diverged(UserError):
  """Training produced a non-finite loss, gradient norm or weights: the run stops before saving it."""


LOCK_FILE = "train.lock"


class WorkdirLock:
  """An exclusive lock on WORKDIR/train.lock for one training run (its process 0): a second
  crnn-train on the same workdir is refused with the owner's pid, host and start time.  fcntl.flock:
  the kernel releases it when the owner exits, however it exits (no stale locks after a kill)."""

  def __init__(self, workdir):
    import fcntl
    import socket
    self.path = os.path.join(workdir, LOCK_FILE)
    self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      try:
        owner = json.loads(os.pread(self.fd, 4096, 0).decode("utf-8") or "{}")
      except (ValueError, UnicodeDecodeError):
        owner = {}
      os.close(self.fd)
      who = (f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}, started "
             f"{owner.get('started', '?')}") if owner else "another process"
      raise UserError(f"{workdir} is in use by another crnn-train ({who}; {self.path}): two runs in one workdir "
                      "would overwrite each other's checkpoints. Wait for it to end, stop it, or pass another "
                      "--workdir") from None
    info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                       "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode("utf-8")
    os.ftruncate(self.fd, 0)
    os.pwrite(self.fd, info, 0)

  def release(self):
    if self.fd is not None:
      os.close(self.fd)  # closing the descriptor releases the flock
      self.fd = None


def _disk_full(e):
  """An exception (or one in its chain) from a full disk: OSError ENOSPC, or an orbax/TensorFlow
  error whose text says so."""
  import errno
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if (isinstance(e, OSError) and e.errno == errno.ENOSPC) or "No space left on device" in str(e):
      return True
    e = e.__cause__ or e.__context__
  return False


def _out_of_space(workdir, latest, e):
  """The one line of a checkpoint (or metrics) write that found the disk full: free space now, the
  size of the last checkpoint, and the intact step a rerun resumes from (orbax lists only finished
  steps; an unfinished one is a *.orbax-checkpoint-tmp-* folder it ignores and later removes)."""
  import shutil
  steps = latest.all_steps(read=True) if hasattr(latest, "all_steps") else []
  last = max(steps) if steps else None
  size = ""
  if last is not None:
    d = os.path.join(workdir, "checkpoints", str(last))
    n = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs)
    size = f"; a checkpoint of this run takes {n / 1e6:.1f} MB"
  free = shutil.disk_usage(workdir).free
  first = (str(e).strip().splitlines() or ["ENOSPC"])[0][:160]
  return UserError(f"out of disk space writing into {workdir} ({type(e).__name__}: {first}): {free / 1e6:.0f} MB "
                   f"free{size}. Free some space and rerun the same command: it resumes from "
                   + (f"step {last}, which is intact" if last is not None else "the start (no step was saved)"))


def _report_damaged_shards(config, workdir, p, n_proc, is_main):
  """input.skip_damaged_records: this process's train shards read through once; each damaged one is
  named with the records it loses (its rest past the damage, every epoch), one line each, and the
  count goes to WORKDIR/damaged_records.json (process 0's shards)."""
  t0 = time.time()
  bad = input_pipeline.damaged_shards(config.data_dir, "train", p, n_proc)
  lost = sum(total - read for _, read, total, _ in bad)
  for f, read, total, err in bad:
    print(f"WARNING: skip_damaged_records: {f} stops at a damaged record after {read} of {total} records "
          f"({err}); the {total - read} after it are left out of training", file=sys.stderr)
  print(f"skip_damaged_records: {len(bad)} damaged train shards, {lost} records left out of every epoch "
        f"(checked in {time.time() - t0:.1f} s)", file=sys.stderr)
  if is_main:
    with open(os.path.join(workdir, "damaged_records.json"), "w", encoding="utf-8") as f:
      json.dump({"records_left_out": lost, "shards": [
          {"file": f_, "read": r, "records": t, "error": e} for f_, r, t, e in bad]}, f, indent=2)


def _restore_newest_intact(latest, best, abstract, workdir, n_proc):
  """The newest kept step that restores.  A damaged one (a file missing or truncated) is moved aside
  to checkpoints/<step>.damaged (kept for the user, out of orbax's way: the run will save that step
  again) with a warning, and the next older step is tried; best/ steps past the one resumed from are
  moved aside too (<step>.superseded: the run reaches those steps again).  With several processes a
  damaged latest step is one line instead (every process would have to agree on the move)."""
  damaged = []
  inference.quiet_orbax_leftovers()
  for step in sorted(latest.all_steps(), reverse=True):
    try:
      state = checkpointing.restore(latest, abstract, step)
    except Exception as e:  # noqa: BLE001 -- orbax/tensorstore raise many types for a damaged checkpoint
      first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
      where = os.path.join(workdir, "checkpoints", str(step))
      if n_proc > 1:
        raise UserError(f"checkpoint step {step} ({where}) cannot be restored ({type(e).__name__}: {first}); move "
                        "that folder aside and rerun: the run resumes from the newest intact step") from None
      aside = f"{where}.damaged"
      os.replace(where, aside)
      damaged.append(step)
      print(f"WARNING: checkpoint step {step} cannot be restored ({type(e).__name__}: {first}); moved to {aside}, "
            "trying the next older kept step", file=sys.stderr)
      latest.reload()
      continue
    if damaged:
      for later in [b for b in best.all_steps() if b > step]:
        src = os.path.join(workdir, "best", str(later))
        os.replace(src, src + ".superseded")
        print(f"WARNING: best/{later} is past the resumed step {step}: moved to {src}.superseded", file=sys.stderr)
      best.reload()
    return state
  raise UserError(f"no checkpoint in {workdir}/checkpoints could be restored (damaged: steps {damaged}, moved "
                  "to <step>.damaged); the same command again trains from step 0")


def train_and_evaluate(config, workdir):
  """Trains `config` in `workdir` (resuming from its latest checkpoint) and returns final metrics.
  One run per workdir: process 0 holds WORKDIR/train.lock while it trains (`WorkdirLock`).  Every
  config value is checked first (`config_check.validate`), before the workdir is touched."""
  config_check.validate(config)
  workdir = os.path.abspath(workdir)  # orbax wants absolute paths
  os.makedirs(workdir, exist_ok=True)
  lock = WorkdirLock(workdir) if jax.process_index() == 0 else None
  try:
    return _train_and_evaluate(config, workdir)
  finally:
    if lock is not None:
      lock.release()


def _train_and_evaluate(config, workdir):
  from clu import metric_writers
  from tqdm import tqdm

  charset = check_data(config, workdir)
  is_main = jax.process_index() == 0
  mesh = mesh_lib.make_mesh()
  n_dev, n_proc = mesh.devices.size, jax.process_count()
  gb = config.train.batch_size
  check_layout(config, n_dev, n_proc)
  model = make_model(config, charset.num_classes)
  tx = make_optimizer(config)
  compiled = Compiled(config, model, tx, mesh)
  if is_main:
    charset.write(os.path.join(workdir, "chinese.txt"))
    with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
      f.write(config.to_json_best_effort(indent=2))
    with open(os.path.join(workdir, "run_info.json"), "w", encoding="utf-8") as f:
      json.dump(_run_info(config, mesh), f, indent=2)
    _write_lm(config, workdir, charset)

  t_start = time.time()  # the training clock of train.time_budget_minutes starts here
  latest, best = checkpointing.managers(workdir, config)
  p = jax.process_index()
  spec = pipeline_spec(config, gb // n_proc)
  skip = bool(config.input.get("skip_damaged_records", False))
  if skip:
    _report_damaged_shards(config, workdir, p, n_proc, is_main)
  ds = input_pipeline.train_dataset(config.data_dir, spec, config.input.augment, seed=config.seed,
                                    process_index=p, process_count=n_proc,
                                    shuffle_buffer=config.input.shuffle_buffer, skip_damaged=skip)
  it = iter(ds)
  if latest.latest_step() is not None:
    state = _restore_newest_intact(latest, best, compiled.abstract_with_shardings(), workdir, n_proc)
    start = int(state.step)
    why = checkpointing.restore_data_state(workdir, start, it, p, n_proc)
    if why:
      print(f"WARNING: resumed from step {start} but {why}; the data order restarts from epoch 0, so this "
            "run will not be bitwise equal to an uninterrupted one", file=sys.stderr)
    else:
      print(f"resumed from step {start} in {workdir} (parameters, optimizer and data position)", file=sys.stderr)
  else:
    state = compiled.init(jax.random.PRNGKey(config.seed))
  start = int(state.step)

  writer = metric_writers.create_default_writer(workdir, just_logging=not is_main)
  jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8") if is_main else None

  def log(step, scalars):
    writer.write_scalars(step, scalars)
    if jsonl:
      jsonl.write(json.dumps({"step": step, "time": time.time(), **scalars}) + "\n")
      jsonl.flush()

  budget_s = float(config.train.get("time_budget_minutes", 0.0) or 0.0) * 60
  spent_before = checkpointing.train_seconds_at(workdir, start) if start else 0.0

  def train_seconds():
    return spent_before + time.time() - t_start

  checked = {"finite_at": start}  # the last step whose loss, gradient norm and weights were finite

  def diverged(step, what):
    last = latest.latest_step()
    kept = (f"the latest checkpoint, step {last}, is the last good one and stays the latest; rerunning resumes "
            f"from it" if last is not None else "no checkpoint was saved")
    return Diverged(f"training diverged: {what} at step {step} (finite at step {checked['finite_at']}); nothing "
                    f"non-finite was saved: {kept}. Lower optimizer.learning_rate ({config.optimizer.learning_rate:g}) "
                    f"or raise optimizer.warmup_steps, check the data, or change the seed")

  def check_finite(step):
    """Before anything is saved: the weights (and their EMA) must be finite."""
    if checked["finite_at"] == step:
      return
    if not bool(jax.device_get(_all_finite({"params": state.params, "ema": state.ema,
                                            "batch_stats": state.batch_stats}))):
      raise diverged(step, "the weights are not finite")
    checked["finite_at"] = step

  def save_latest(step, stopped_by_budget=False):
    check_finite(step)
    # The iterator first (synchronously): an orbax step on disk always has its data position.
    checkpointing.save_data_state(workdir, step, it, p, n_proc)
    checkpointing.save(latest, step, state)
    checkpointing.prune_data_states(workdir, set(latest.all_steps()) | {step}, p, n_proc)
    if is_main:
      checkpointing.write_train_time(workdir, step, train_seconds(), stopped_by_budget)

  def over_budget(done):
    if not budget_s:
      return False
    if n_proc == 1:
      return train_seconds() >= budget_s
    if done % config.train.log_every:  # several processes decide together, at log steps only
      return False
    from jax.experimental import multihost_utils
    return bool(multihost_utils.broadcast_one_to_all(np.array(train_seconds() >= budget_s)))

  extra_evals = parse_extra_evals(config, charset)
  preemption = _Preemption(n_proc)
  total = config.train.num_steps
  if budget_s and spent_before >= budget_s:
    print(f"the time budget of {budget_s / 60:g} min (train.time_budget_minutes) was spent at step {start} "
          f"({spent_before / 60:.1f} min): nothing left to train; raise it to go on", file=sys.stderr)
    total = start
  bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True, mininterval=5.0,
             disable=not is_main, file=sys.stderr)
  window = {"t": time.time(), "images": 0}
  final = {}
  counter = compile_stats.CompileCounter()
  # Per width bucket: train-step executables (compiled, or loaded from the persistent cache) and
  # their seconds; one per bucket is the design, more is a recompilation.
  stats = {"train_step_compiles_by_width": {}, "train_step_compile_seconds_by_width": {},
           "recompiles_after_first_use": 0}
  failed = True
  try:
    for step in range(start, total):
      try:
        local = input_pipeline.to_numpy(next(it))
      except Exception as e:  # noqa: BLE001 -- tf.errors.DataLossError: "corrupted record at N", no file named
        if type(e).__name__ != "DataLossError":
          raise
        where = input_pipeline.damaged_record_where(
            e, input_pipeline.process_files(config.data_dir, "train", p, n_proc), "train")
        last = latest.latest_step()
        raise UserError(f"a damaged training record at step {step + 1}: {where}. Rebuild that shard (datagen "
                        "render --overwrite, or restore it from a copy) -- or train on without that shard's rest: "
                        "--config.input.skip_damaged_records=True (counted in the log); the run resumes from its "
                        f"latest checkpoint ({'step ' + str(last) if last is not None else 'none yet'})") from None
      width = mesh_lib.agree_on_width(local["image"].shape[2])
      local = input_pipeline.pad_width(local, width)
      batch = mesh_lib.global_batch({k: local[k] for k in DEVICE_KEYS}, mesh)
      n0, s0, _ = counter.snapshot()
      state, metrics = compiled.train_step(state, batch)
      n1, s1, _ = counter.snapshot()
      if n1 > n0:  # compiles happen synchronously inside the call; attribute them to this width
        key = str(width)
        if key in stats["train_step_compiles_by_width"]:
          stats["recompiles_after_first_use"] += n1 - n0
          bar.write(f"WARNING: the train step recompiled for width {width} at step {step + 1}", file=sys.stderr)
        else:
          bar.write(f"compiled the train step for width {width}: {s1 - s0:.1f} s", file=sys.stderr)
        stats["train_step_compiles_by_width"][key] = stats["train_step_compiles_by_width"].get(key, 0) + n1 - n0
        stats["train_step_compile_seconds_by_width"][key] = round(
            stats["train_step_compile_seconds_by_width"].get(key, 0.0) + s1 - s0, 2)
      window["images"] += gb
      done = step + 1
      budget_stop = done < total and over_budget(done)
      last = done == total or budget_stop
      if budget_stop:
        bar.write(f"time budget reached: {train_seconds() / 60:.1f} of {budget_s / 60:g} min "
                  f"(train.time_budget_minutes) at step {done} of {total}; saving and evaluating",
                  file=sys.stderr)
      if done % config.train.log_every == 0 or last:
        m = jax.device_get(metrics)  # the only host sync of a training window
        bad = [k for k in ("loss", "grad_norm") if k in m and not np.isfinite(float(m[k]))]
        if bad:
          raise diverged(done, " and ".join(f"the {'loss' if k == 'loss' else 'gradient norm'} is "
                                            f"{float(m[k])}" for k in bad))
        dt = time.time() - window["t"]
        scalars = {k: float(v) for k, v in m.items() if k not in ("examples",)}
        scalars["images_per_sec"] = window["images"] / max(dt, 1e-9)
        scalars["wall_minutes"] = (time.time() - t_start) / 60
        scalars["train_minutes"] = train_seconds() / 60  # + earlier processes of a resumed run
        n, secs, hits = counter.snapshot()
        scalars["compiles"], scalars["compile_seconds"], scalars["compile_cache_hits"] = n - hits, secs, hits
        scalars["peak_rss_mb"] = compile_stats.peak_rss_mb()
        log(done, scalars)
        bar.set_postfix(loss=f"{scalars['loss']:.3f}", img_s=f"{scalars['images_per_sec']:.0f}",
                        lr=f"{scalars['learning_rate']:.2e}")
        window = {"t": time.time(), "images": 0}
      bar.update(1)
      if done % config.train.eval_every == 0 or last:
        # The raw weights always; with an EMA also the EMA weights, which are then what crnn-eval,
        # crnn-predict and the best checkpoint go by ("<split>_ema/..." in the metrics).
        final, line = {}, f"step {done}:"
        for weights, suffix in (("raw", ""),) + ((("ema", "_ema"),) if state.ema is not None else ()):
          res, _, _ = evaluate(compiled.steps, variables_of(inference_view(state, weights)), config, config.data_dir,
                               config.eval.split, charset, max_examples=config.eval.max_examples)
          final.update({f"{config.eval.split}{suffix}/{k}": v for k, v in res.items() if isinstance(v, float)})
          line += f" {config.eval.split}{suffix} seq_acc {res['seq_acc']:.4f} cer {res['cer']:.4f}"
        best_acc = res["seq_acc"]
        line += f" (n={res['n']})"
        # Other evaluation worlds (config.eval.extra: "DATA_DIR:split"), read with the weights that
        # crnn-eval uses; they are watched, not used to pick the best checkpoint.
        for data_dir, split in extra_evals:
          view = inference_view(state, "ema" if state.ema is not None else "raw")
          res_x, _, _ = evaluate(compiled.steps, variables_of(view), config, data_dir, split, charset,
                                 max_examples=config.eval.max_examples)
          final.update({f"{split}/{k}": v for k, v in res_x.items() if isinstance(v, float)})
          line += f" {split} seq_acc {res_x['seq_acc']:.4f}"
        log(done, final)
        bar.write(line)
        check_finite(done)
        checkpointing.save(best, done, state, metrics={"seq_acc": best_acc})
        window["t"] = time.time()  # evaluation time is not training throughput
      saved = done % config.train.checkpoint_every == 0 or last
      if saved:
        save_latest(done, stopped_by_budget=budget_stop)
      if budget_stop:
        break
      if preemption.reached(done) and done < total:
        if not saved:
          save_latest(done)
        bar.write(f"preempted (SIGTERM): saved step {done} in {workdir}; rerun the same command to resume",
                  file=sys.stderr)
        break
    failed = False
  except Exception as e:
    if _disk_full(e):
      raise _out_of_space(workdir, latest, e) from None
    raise
  finally:
    preemption.restore()
    counter.close()
    # Let in-flight async saves finish (or fail) here, on an error too: otherwise the interpreter
    # shuts down under orbax's writer threads and their noise buries the real traceback.
    for manager in (latest, best):
      try:
        manager.wait_until_finished()
      except Exception as e:
        if not failed:
          if _disk_full(e):
            raise _out_of_space(workdir, latest, e) from None
          raise
        # the loop's own exception, on its way out, is the one to see
        print(f"WARNING: an async checkpoint save failed too: {type(e).__name__}: {e}", file=sys.stderr)
  bar.close()
  if is_main:
    n, secs, hits = counter.snapshot()
    stats.update(compiles_total=n - hits, cache_hits_total=hits, compile_seconds_total=round(secs, 2),
                 peak_rss_mb=round(compile_stats.peak_rss_mb(), 1), steps=f"{start}-{int(state.step)}")
    with open(os.path.join(workdir, "compile_stats.json"), "w", encoding="utf-8") as f:
      json.dump(stats, f, indent=2)
  writer.flush()
  if jsonl:
    jsonl.close()
  return final
