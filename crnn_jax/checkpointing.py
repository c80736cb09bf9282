"""orbax checkpoints of the train state: the latest N for resuming, and the best by accuracy."""
import orbax.checkpoint as ocp


def managers(workdir, config):
  latest = ocp.CheckpointManager(
      f"{workdir}/checkpoints",
      options=ocp.CheckpointManagerOptions(max_to_keep=config.train.keep_checkpoints, create=True))
  best = ocp.CheckpointManager(
      f"{workdir}/best",
      options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True, best_fn=lambda m: m["seq_acc"],
                                           best_mode="max"))
  return latest, best


def save(manager, step, state, metrics=None):
  manager.save(int(step), args=ocp.args.StandardSave(state), metrics=metrics)


def restore(manager, abstract_state, step=None):
  """Restores onto the shardings of `abstract_state` (a pytree of ShapeDtypeStructs)."""
  step = manager.latest_step() if step is None else step
  return manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
