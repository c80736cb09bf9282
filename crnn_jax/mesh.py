"""The device mesh and how arrays are laid out on it.

One `data` axis over every device of every process.  Batches are split along it; the train
state is replicated (the model is small; a `model` axis would go beside `data`).
"""
import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def make_mesh():
  return Mesh(np.asarray(jax.devices()).reshape(-1), ("data",))


def replicated(mesh):
  return NamedSharding(mesh, P())


def data_sharded(mesh):
  return NamedSharding(mesh, P("data"))


def global_batch(local: dict, mesh) -> dict:
  """Host-local numpy rows -> global jax.Arrays sharded along `data`.

  Each process passes only its own rows; on one process this is the whole batch.  (Passing a
  process-local array to a jitted function as if it were global would be wrong on many hosts.)
  """
  sharding = data_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}


def agree_on_width(width: int) -> int:
  """Every process must feed the same shape each step: the widest local bucket wins."""
  if jax.process_count() == 1:
    return width
  return int(np.max(multihost_utils.process_allgather(np.asarray([width], np.int32))))
