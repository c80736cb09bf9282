"""orbax checkpoints of the train state: the latest N for resuming, and the best by accuracy."""
import os
import re
import shutil

import orbax.checkpoint as ocp


def managers(workdir, config):
  # Both managers save the same step at the end of a run (and at every step that is both an eval
  # and a checkpoint step).  With several processes each async save ends in a cross-process
  # barrier named after the step; without a prefix per manager the two barriers share that name
  # and the second fails ("Barrier _async_write_complete.20 is already ongoing") when the first
  # is still open, as happens on a loaded machine.
  def mp(prefix):
    return ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=prefix)
  latest = ocp.CheckpointManager(
      f"{workdir}/checkpoints",
      options=ocp.CheckpointManagerOptions(max_to_keep=config.train.keep_checkpoints, create=True,
                                           multiprocessing_options=mp("latest")))
  best = ocp.CheckpointManager(
      f"{workdir}/best",
      options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True, best_fn=lambda m: m["seq_acc"],
                                           best_mode="max", multiprocessing_options=mp("best")))
  return latest, best


def save(manager, step, state, metrics=None):
  manager.save(int(step), args=ocp.args.StandardSave(state), metrics=metrics)


def restore(manager, abstract_state, step=None):
  """Restores onto the shardings of `abstract_state` (a pytree of ShapeDtypeStructs)."""
  step = manager.latest_step() if step is None else step
  try:
    return manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
  except ValueError as e:
    # A run without an EMA restores checkpoints written before TrainState had the `ema` field
    # (None): the same arrays, one key fewer on disk.
    if getattr(abstract_state, "ema", 0) is not None or "ema:" not in str(e):
      raise
  fields = {k: v for k, v in vars(abstract_state).items() if k != "ema"}
  restored = manager.restore(step, args=ocp.args.StandardRestore(fields))
  return abstract_state.replace(**restored)


# ---- the data iterator: each process's tf.data position, beside the orbax step ----------------
# Layout: WORKDIR/data_state/<process_count>p/process_<i>/step_<N>.{index,data-*}.  Written
# (synchronously) before the orbax save of the same step, so an orbax step that exists always
# has its iterator state; a run resumed with another process count finds none and says so.
def _data_dir(workdir, process_index, process_count):
  return os.path.join(workdir, "data_state", f"{process_count}p", f"process_{process_index}")


def save_data_state(workdir, step, iterator, process_index, process_count):
  import tensorflow as tf
  d = _data_dir(workdir, process_index, process_count)
  os.makedirs(d, exist_ok=True)
  tf.train.Checkpoint(iterator=iterator).write(os.path.join(d, f"step_{int(step)}"))


def restore_data_state(workdir, step, iterator, process_index, process_count):
  """Restores `iterator` to where it was at `step`; returns None, or why it could not."""
  import tensorflow as tf
  prefix = os.path.join(_data_dir(workdir, process_index, process_count), f"step_{int(step)}")
  if not os.path.exists(prefix + ".index"):
    others = sorted(os.listdir(os.path.join(workdir, "data_state"))) if os.path.isdir(
        os.path.join(workdir, "data_state")) else []
    if others and f"{process_count}p" not in others:
      return (f"the data iterator was saved by {', '.join(o[:-1] for o in others)} process(es), this run has "
              f"{process_count}: each process reads other shards now")
    return f"no data iterator state for step {step} in {workdir}/data_state"
  tf.train.Checkpoint(iterator=iterator).read(prefix).assert_consumed()
  return None


def prune_data_states(workdir, keep_steps, process_index, process_count):
  """Deletes this process's iterator states for steps orbax no longer keeps, and what a killed
  write left behind (TF writes through a `step_<N>_temp/` folder and `*.tempstate*` files)."""
  d = _data_dir(workdir, process_index, process_count)
  if not os.path.isdir(d):
    return
  keep = {int(s) for s in keep_steps}
  for name in os.listdir(d):
    m = re.match(r"step_(\d+)(.*)$", name)
    if not m:
      continue
    leftover = m.group(2).startswith("_temp") or ".tempstate" in m.group(2)
    if int(m.group(1)) in keep and not leftover:
      continue
    path = os.path.join(d, name)
    if os.path.isdir(path):
      shutil.rmtree(path, ignore_errors=True)
    else:
      try:
        os.remove(path)
      except FileNotFoundError:
        pass


# ---- training wall time: seconds spent up to each saved step, for train.time_budget_minutes ----
TRAIN_TIME_FILE = "train_time.json"


def read_train_time(workdir):
  import json
  path = os.path.join(workdir, TRAIN_TIME_FILE)
  if not os.path.exists(path):
    return {"seconds_at_step": {}, "stopped_by_time_budget_at": None}
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def train_seconds_at(workdir, step):
  """Training seconds spent up to a saved `step` (0 for step 0 or a run saved before the file existed)."""
  return float(read_train_time(workdir)["seconds_at_step"].get(str(int(step)), 0.0))


def write_train_time(workdir, step, seconds, stopped_by_budget=False):
  import json
  info = read_train_time(workdir)
  info["seconds_at_step"][str(int(step))] = round(float(seconds), 2)
  if stopped_by_budget:
    info["stopped_by_time_budget_at"] = int(step)
  tmp = os.path.join(workdir, TRAIN_TIME_FILE + ".tmp")
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(info, f, indent=1)
  os.replace(tmp, os.path.join(workdir, TRAIN_TIME_FILE))
