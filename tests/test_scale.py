"""Scale-out and reproducibility: real multi-process runs on 127.0.0.1 (gloo), bitwise reruns,
exact resume after SIGKILL, SIGTERM preemption, resharding on another mesh, bf16, sweeps."""
import json
import os
import pathlib
import random
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from crnn_jax import checkpointing, distributed, input_pipeline, mesh as mesh_lib, train
from crnn_jax.charset import Charset
from crnn_jax.errors import UserError

from conftest import metrics, tiny_config, why

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "multihost_worker.py"
# The reference run every reproducibility test compares with.
STEPS, CKPT_EVERY = 120, 10
# timing and process bookkeeping, not training math
VOLATILE = {"time", "images_per_sec", "wall_minutes", "train_minutes", "compiles", "compile_seconds", "compile_cache_hits", "peak_rss_mb"}


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices=1, **extra):
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
  env.update(TF_CPP_MIN_LOG_LEVEL="2", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  env.update({k: str(v) for k, v in extra.items()})
  return env


# The default config's on-the-fly degradations, on (tiny.py turns them off), ramping in over the
# first half of the reference run: resume and reruns must reproduce them bitwise too.
AUGMENT = ["--config.input.augment.pad_prob=0.3", "--config.input.augment.blur_prob=0.2",
           "--config.input.augment.lowres_prob=0.15", "--config.input.augment.noise_prob=0.3",
           "--config.input.augment.jpeg_prob=0.25", "--config.input.augment.invert_prob=0.1",
           f"--config.input.augment.ramp_steps={STEPS // 2}"]


def _train_cmd(workdir, data, *overrides, devices=1):
  return [sys.executable, "-m", "crnn_jax.main", "--config", "configs/tiny.py", "--workdir", str(workdir),
          f"--config.data_dir={data}", "--config.eval.split=train", f"--cpu_devices={devices}",
          f"--config.train.num_steps={STEPS}", f"--config.train.checkpoint_every={CKPT_EVERY}",
          "--config.train.eval_every=60", "--config.train.log_every=5", *AUGMENT, *overrides]


def _train(workdir, data, *overrides, devices=1, timeout=400):
  out = subprocess.run(_train_cmd(workdir, data, *overrides, devices=devices), cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=timeout)
  assert out.returncode == 0, why(out.stderr)
  return out


def _params(workdir, step=None):
  """The saved parameters and batch statistics of a workdir's latest (or given) checkpoint."""
  import orbax.checkpoint as ocp
  d = pathlib.Path(workdir) / "checkpoints"
  step = step if step is not None else max(int(p.name) for p in d.iterdir() if p.name.isdigit())
  item = d / str(step) / "default"  # CheckpointManager's single-item layout
  ck = ocp.PyTreeCheckpointer()
  meta = ck.metadata(item).item_metadata.tree
  # As host numpy arrays: the checkpoint may come from another device count than this process's.
  tree = ck.restore(item, args=ocp.args.PyTreeRestore(
      restore_args=jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)))
  flat = jax.tree_util.tree_flatten_with_path({"params": tree["params"], "batch_stats": tree["batch_stats"]})[0]
  return step, {jax.tree_util.keystr(k): np.asarray(v) for k, v in flat}


def _assert_bitwise(a, b):
  assert a.keys() == b.keys()
  diff = [k for k in a if not np.array_equal(a[k], b[k])]
  assert not diff, f"{len(diff)} arrays differ, e.g. {diff[:3]}"


def _curve(workdir):
  return [{k: v for k, v in m.items() if k not in VOLATILE} for m in metrics(workdir)]


def _wait_for_step(proc, workdir, step, timeout=300):
  """Waits until metrics.jsonl logs `step` (the process must still be running)."""
  t = time.time()
  path = pathlib.Path(workdir) / "metrics.jsonl"
  while time.time() - t < timeout:
    if path.exists() and any(json.loads(l).get("step", 0) >= step for l in path.read_text().splitlines()):
      return
    assert proc.poll() is None, why(proc.stderr.read())
    time.sleep(0.05)
  raise AssertionError(f"no step {step} within {timeout} s")


@pytest.fixture(scope="session")
def reference(overfit_data, tmp_path_factory):
  wd = tmp_path_factory.mktemp("ref") / "wd"
  _train(wd, overfit_data)
  return wd


# ---- determinism and exact resume ------------------------------------------------------------
def test_same_config_and_seed_give_bitwise_identical_runs(reference, overfit_data, tmp_path):
  _train(tmp_path / "again", overfit_data)
  s1, p1 = _params(reference)
  s2, p2 = _params(tmp_path / "again")
  assert s1 == s2 == STEPS
  _assert_bitwise(p1, p2)
  assert _curve(reference) == _curve(tmp_path / "again")  # losses, norms, eval metrics: all equal


def test_sigkill_at_an_arbitrary_step_then_resume_is_bitwise_equal(reference, overfit_data, tmp_path):
  wd = tmp_path / "killed"
  proc = subprocess.Popen(_train_cmd(wd, overfit_data), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  try:
    _wait_for_step(proc, wd, 25)
    time.sleep(random.Random().uniform(0.0, 0.3))  # not on a checkpoint boundary, by design
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
  finally:
    proc.kill()
  killed_at = max(m["step"] for m in metrics(wd))
  assert killed_at < STEPS, "the run finished before the kill: nothing was resumed"
  out = _train(wd, overfit_data)
  assert "resumed from step" in out.stderr and "data position" in out.stderr, out.stderr[-2000:]
  s, p = _params(wd)
  assert s == STEPS
  _assert_bitwise(_params(reference)[1], p)
  # The resumed curve continues the uninterrupted one exactly (past the restored step).
  ref = {m["step"]: m for m in _curve(reference) if "loss" in m}
  mine = [m for m in _curve(wd) if "loss" in m]
  assert all(ref[m["step"]] == m for m in mine)


def test_sigterm_saves_a_checkpoint_and_exits_0(reference, overfit_data, tmp_path):
  wd = tmp_path / "preempted"
  proc = subprocess.Popen(_train_cmd(wd, overfit_data), cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  try:
    _wait_for_step(proc, wd, 35)
    proc.send_signal(signal.SIGTERM)
    t = time.time()
    _, err = proc.communicate(timeout=60)  # the grace period
    grace = time.time() - t
  finally:
    proc.kill()
  assert proc.returncode == 0, err[-3000:]
  assert "preempted (SIGTERM): saved step" in err
  step, _ = _params(wd)
  assert 35 <= step < STEPS and grace < 60
  _train(wd, overfit_data)  # the rerun finishes the schedule, bitwise as if never stopped
  _assert_bitwise(_params(reference)[1], _params(wd)[1])


def test_resume_on_another_mesh_reshards(overfit_data, tmp_path):
  wd = tmp_path / "remesh"
  _train(wd, overfit_data, "--config.train.num_steps=20", devices=1)
  out = _train(wd, overfit_data, "--config.train.num_steps=30", devices=2)
  assert "resumed from step 20" in out.stderr
  step, p = _params(wd)
  assert step == 30 and all(np.isfinite(v).all() for v in p.values())
  info = json.loads((wd / "run_info.json").read_text())
  assert info["mesh"] == {"data": 2}


def test_data_state_of_another_process_count_is_explained(overfit_data, tmp_path):
  (tmp_path / "data_state" / "2p").mkdir(parents=True)
  spec = train.pipeline_spec(tiny_config(overfit_data), 8)
  it = iter(input_pipeline.train_dataset(overfit_data, spec, None, seed=0))
  why = checkpointing.restore_data_state(str(tmp_path), 10, it, 0, 1)
  assert "saved by 2 process(es)" in why and "this run has 1" in why


def test_pruning_data_states_clears_what_a_killed_write_left(overfit_data, tmp_path):
  """A SIGKILL inside tf.train.Checkpoint.write leaves `step_<N>_temp/` (a folder) and
  `*.tempstate*` files; pruning must remove them (it once died on the folder, failing a resume)."""
  spec = train.pipeline_spec(tiny_config(overfit_data), 8)
  it = iter(input_pipeline.train_dataset(overfit_data, spec, None, seed=0))
  next(it)
  d = tmp_path / "data_state" / "1p" / "process_0"
  (d / "step_30_temp").mkdir(parents=True)  # a write of step 30 was killed; the rerun writes it again
  (d / "step_30_temp" / "part-00000-of-00001.index").write_bytes(b"half")
  for step in (10, 20, 30):
    checkpointing.save_data_state(str(tmp_path), step, it, 0, 1)
  (d / "step_30_temp").mkdir(exist_ok=True)
  (d / "step_30_temp" / "part-00000-of-00001.index").write_bytes(b"half")
  (d / "step_20.data-00000-of-00001.tempstate123").write_bytes(b"half")
  checkpointing.prune_data_states(str(tmp_path), {20, 30}, 0, 1)
  left = sorted(p.name for p in d.iterdir())
  assert left == ["step_20.data-00000-of-00001", "step_20.index", "step_30.data-00000-of-00001", "step_30.index"], left
  assert checkpointing.restore_data_state(str(tmp_path), 30, it, 0, 1) is None


def test_data_order_is_a_pure_function_of_seed_epoch_process(overfit_data):
  spec = train.pipeline_spec(tiny_config(overfit_data), 8)

  def texts(seed, p, n=2, k=14):
    ds = input_pipeline.train_dataset(overfit_data, spec, None, seed=seed, process_index=p, process_count=n)
    return [t for b in ds.take(k) for t in b["text"].numpy().tolist()]
  a = texts(0, 0)
  assert a == texts(0, 0)
  assert a != texts(1, 0) and a != texts(0, 1)
  # Process p reads only its own shards.
  files = [input_pipeline.process_files(overfit_data, "train", p, 2) for p in (0, 1)]
  assert files[0] and files[1] and not set(files[0]) & set(files[1])


def test_augmented_batches_are_bitwise_equal_from_process_to_process(small_data):
  """The default config's augmented training batches, pulled in fresh processes with JAX's two
  CPU devices live (as crnn-train runs), are equal to the bit.  They were not: the brightness /
  contrast chain of float adds came out 1 ulp apart in some images from one process to another
  (all four of four processes differed over these 64 batches), so the default config's training
  was not reproducible across runs."""
  cmd = [sys.executable, str(ROOT / "tests" / "pipeline_digest.py"), str(small_data),
         str(ROOT / "configs" / "poem_cpu.py"), "64"]
  runs = [subprocess.run(cmd, env=_env(2), capture_output=True, text=True, timeout=300, cwd=ROOT) for _ in range(2)]
  for r in runs:
    assert r.returncode == 0, why(r.stderr)
  a, b = (json.loads(r.stdout.strip().splitlines()[-1]) for r in runs)
  assert a["devices"] == 2 and len(a["digests"]) == 64
  assert a["digests"] == b["digests"], [i for i, (x, y) in enumerate(zip(a["digests"], b["digests"])) if x != y]


# ---- multi-host ------------------------------------------------------------------------------
def _worker(data, out, steps, bn_groups, devices, **env):
  return subprocess.Popen([sys.executable, str(WORKER), str(data), str(out), str(steps), str(bn_groups)],
                          env=_env(devices, **env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def _reports(procs):
  try:
    outs = [p.communicate(timeout=300) for p in procs]  # a hang fails here instead of blocking CI
  finally:
    for p in procs:
      p.kill()
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  return [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]


def _assert_same_run(path_a, path_b):
  a, b = np.load(path_a), np.load(path_b)
  assert set(a.files) == set(b.files) and len(a.files) > 10
  for k in a.files:
    np.testing.assert_allclose(b[k], a[k], rtol=2e-5, atol=2e-6, err_msg=k)


# bn_groups=4 on 4 devices: the step runs under shard_map (per-device batch norm, one all-reduce).
@pytest.mark.parametrize("bn_groups", [1, 4])
def test_two_processes_match_one_process_with_the_same_global_batch(overfit_data, tmp_path, bn_groups):
  steps = 6
  (one,) = _reports([_worker(overfit_data, tmp_path / "one.npz", steps, bn_groups, 4)])
  port = _free_port()
  reports = _reports([_worker(overfit_data, tmp_path / "two.npz", steps, bn_groups, 2,
                              JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=2, JAX_PROCESS_ID=i)
                      for i in range(2)])
  assert [r["process"] for r in reports] == [0, 1] and all(r["devices"] == 4 for r in reports + [one])
  _assert_same_run(tmp_path / "one.npz", tmp_path / "two.npz")


def test_bn_groups_compute_the_same_on_one_device_and_on_four(overfit_data, tmp_path):
  """The config's batch-norm groups, not the machine, define the computation: 4 groups on one
  device (reshaped statistics) = 4 devices with one group each (shard_map)."""
  runs = _reports([_worker(overfit_data, tmp_path / f"d{d}.npz", 6, 4, d) for d in (1, 4)])
  assert [r["devices"] for r in runs] == [1, 4]
  _assert_same_run(tmp_path / "d1.npz", tmp_path / "d4.npz")


def test_crnn_train_as_two_local_processes(overfit_data, tmp_path):
  wd, logs = tmp_path / "wd", tmp_path / "logs"
  out = subprocess.run([str(ROOT / "launch" / "multiprocess.sh"), "2", "--devices", "2", "--logs", str(logs), "--",
                        "--config", "configs/tiny.py", "--workdir", str(wd), f"--config.data_dir={overfit_data}",
                        "--config.eval.split=train", "--config.train.num_steps=20",
                        "--config.train.checkpoint_every=10", "--config.train.eval_every=20"],
                       env=_env(PYTHON=sys.executable), capture_output=True, text=True, timeout=400, cwd=ROOT)
  assert out.returncode == 0, why(out.stderr) + (logs / "process_1.log").read_text()[-2000:]
  assert (wd / "checkpoints" / "20").is_dir()
  for p in (0, 1):
    assert list((wd / "data_state" / "2p" / f"process_{p}").glob("step_20.index")), p
  steps = [m["step"] for m in metrics(wd) if "loss" in m]
  assert steps == sorted(set(steps)) and steps[-1] == 20  # one writer: process 0
  assert len(list(wd.glob("events.out.tfevents*"))) == 1
  info = json.loads((wd / "run_info.json").read_text())
  assert info["process_count"] == 2 and info["mesh"] == {"data": 4}
  # The time budget with several processes: they decide together at a log step (tiny: every 10)
  # and all stop there.  The clock of the first 20 steps is zeroed so that 0.1 s of budget is
  # spent by step 21 and the stop falls at step 30 whatever this machine's speed.
  tt = json.loads((wd / "train_time.json").read_text())
  tt["seconds_at_step"]["20"] = 0.0
  (wd / "train_time.json").write_text(json.dumps(tt))
  out = subprocess.run([str(ROOT / "launch" / "multiprocess.sh"), "2", "--devices", "2", "--logs", str(logs), "--",
                        "--config", "configs/tiny.py", "--workdir", str(wd), f"--config.data_dir={overfit_data}",
                        "--config.eval.split=train", "--config.train.num_steps=60",
                        "--config.train.checkpoint_every=100", "--config.train.eval_every=100",
                        f"--config.train.time_budget_minutes={0.1 / 60}"],
                       env=_env(PYTHON=sys.executable), capture_output=True, text=True, timeout=400, cwd=ROOT)
  assert out.returncode == 0, why(out.stderr) + (logs / "process_1.log").read_text()[-2000:]
  assert json.loads((wd / "train_time.json").read_text())["stopped_by_time_budget_at"] == 30
  assert (wd / "checkpoints" / "30").is_dir() and not (wd / "checkpoints" / "40").exists()
  for p in (0, 1):
    assert list((wd / "data_state" / "2p" / f"process_{p}").glob("step_30.index")), p


def test_a_coordinator_that_never_answers_is_one_line(overfit_data, tmp_path):
  t = time.time()
  out = subprocess.run([sys.executable, "-m", "crnn_jax.main", "--config", "configs/tiny.py", "--workdir",
                        str(tmp_path / "w"), f"--config.data_dir={overfit_data}",
                        f"--coordinator_address=127.0.0.1:{_free_port()}", "--num_processes=2", "--process_id=1",
                        "--distributed_timeout=5"],
                       env=_env(), capture_output=True, text=True, timeout=120, cwd=ROOT)
  assert out.returncode == 2, why(out.stderr)
  assert "could not join the distributed run" in out.stderr and "Traceback" not in out.stderr, out.stderr[-3000:]
  assert time.time() - t < 100


_PROBE = """
import sys
from crnn_jax import distributed
port = int(sys.argv[1])
distributed.initialize(f"127.0.0.1:{port}", 1, 0, timeout_s=30)
ips = []
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
  for line in open(table).read().splitlines()[1:]:
    local, state = line.split()[1], line.split()[3]
    ip, p = local.split(":")
    if state == "0A" and int(p, 16) == port:  # LISTEN
      ips.append(ip)
print("LISTEN", ",".join(ips))
"""


def test_the_coordinator_listens_only_where_it_was_told(tmp_path):
  """Process 0 given 127.0.0.1:PORT: its coordinator's listening socket is on loopback (127.0.0.1,
  or ::ffff:127.0.0.1), not on every interface (0.0.0.0 / ::) as jax's default bind was."""
  if not os.path.exists("/proc/net/tcp"):
    pytest.skip("no /proc/net/tcp to read the listening sockets from")
  port = _free_port()
  out = subprocess.run([sys.executable, "-c", _PROBE, str(port)], env=_env(), capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
  line = [l for l in out.stdout.splitlines() if l.startswith("LISTEN")]
  assert out.returncode == 0 and line, why(out.stderr)
  ips = line[0].split()[1].split(",")
  loopback = {"0100007F", "0000000000000000FFFF00000100007F"}  # 127.0.0.1 as /proc/net/tcp and tcp6 write it
  assert ips and set(ips) <= loopback, ips


def test_distributed_detection():
  assert distributed.detect(env={}) == (None, {})
  mode, kw = distributed.detect(env={"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2",
                                     "JAX_PROCESS_ID": "1"})
  assert mode == "explicit" and kw == {"coordinator_address": "h:1", "num_processes": 2, "process_id": 1,
                                       "coordinator_bind_address": "h:1"}
  assert distributed.detect("h:2", 2, 0, env={"JAX_COORDINATOR_BIND_ADDRESS": "0.0.0.0:2"})[1][
      "coordinator_bind_address"] == "0.0.0.0:2"
  assert distributed.detect("h:2", 4, 3, env={})[1]["process_id"] == 3
  assert distributed.detect(env={"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"})[0] == "slurm"
  assert distributed.detect(env={"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"})[0] is None
  assert distributed.detect(env={"TPU_WORKER_HOSTNAMES": "a,b"})[0] == "tpu"
  with pytest.raises(UserError, match="--process_id not given"):
    distributed.detect("h:1", 2, None, env={})
  with pytest.raises(UserError, match="needs a port"):
    distributed.detect("h", 2, 0, env={})
  with pytest.raises(UserError, match="not in"):
    distributed.detect("h:1", 2, 2, env={})


def test_process_count_must_divide_shards_and_batch(overfit_data):
  with pytest.raises(UserError, match="3 processes cannot share"):
    input_pipeline.check_shards(overfit_data, "train", 3)
  c = tiny_config(overfit_data, **{"train.batch_size": 6})
  with pytest.raises(UserError, match="must divide by the 4 processes"):
    train.check_layout(c, n_devices=4, n_processes=4)
  with pytest.raises(UserError, match="must divide by the 4 devices"):
    train.check_layout(c, n_devices=4, n_processes=1)
  train.check_layout(tiny_config(overfit_data), n_devices=4, n_processes=2)


# ---- mixed precision -------------------------------------------------------------------------
def test_bf16_compute_with_f32_params_trains(overfit_data):
  c = tiny_config(overfit_data, **{"model.dtype": "bfloat16", "optimizer.learning_rate": 1e-2})
  cs = Charset.read(overfit_data)
  compiled = train.Compiled(c, train.make_model(c, cs.num_classes), train.make_optimizer(c), mesh_lib.make_mesh())
  state = compiled.init(jax.random.PRNGKey(0))
  spec = train.pipeline_spec(c, c.train.batch_size)
  losses = []
  for raw in input_pipeline.train_dataset(overfit_data, spec, None, seed=0).take(80):
    b = input_pipeline.to_numpy(raw)
    state, m = compiled.train_step(state, mesh_lib.global_batch({k: b[k] for k in train.DEVICE_KEYS},
                                                                compiled.mesh))
    losses.append(float(m["loss"]))
  assert all(x.dtype == np.float32 for x in jax.tree.leaves(state.params))
  assert np.isfinite(losses).all() and np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5]), losses[::10]


# ---- sweeps and reports ----------------------------------------------------------------------
def test_sweep_prints_one_command_per_grid_point(tmp_path):
  out = subprocess.run([sys.executable, "launch/sweep.py", "--config", "configs/tiny.py", "--workdir_root",
                        str(tmp_path / "sw"), "--print", "--", "--config.data_dir=D"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  assert len(lines) == 3 and len({l.split("--workdir ")[1].split()[0] for l in lines}) == 3
  assert all("--config.data_dir=D" in l for l in lines)
  assert [f"--config.seed={s}" in l for s, l in zip((0, 1, 2), lines)] == [True] * 3


def test_sweep_runs_locally_and_report_aggregates(overfit_data, tmp_path):
  root = tmp_path / "sw"
  out = subprocess.run([sys.executable, "launch/sweep.py", "--config", "configs/tiny.py", "--workdir_root",
                        str(root), "--", f"--config.data_dir={overfit_data}", "--config.eval.split=train",
                        "--config.train.num_steps=20", "--config.train.eval_every=10",
                        # the 2nd and 3rd seeds load the 1st's compiled steps (suite time)
                        f"--compilation_cache={tmp_path / 'xla_cache'}"],
                       capture_output=True, text=True, timeout=600, cwd=ROOT, env=_env())
  assert out.returncode == 0, why(out.stderr)
  runs = sorted(p for p in root.iterdir() if p.is_dir())
  assert len(runs) == 3
  rep = subprocess.run([sys.executable, "-m", "crnn_jax.report", *map(str, runs), "--plot",
                        str(tmp_path / "curves.png")], capture_output=True, text=True, timeout=120, cwd=ROOT,
                       env=_env())
  assert rep.returncode == 0, why(rep.stderr)
  table = rep.stdout
  assert "| 3 |" in table and "±" in table and "seq acc" in table, table
  assert (tmp_path / "curves.png").stat().st_size > 1000
