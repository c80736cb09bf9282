"""The trainer end to end on small generated data: it learns, compiles once per bucket, resumes."""
import functools
import json
import os
import pathlib
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

from configs import tiny
from crnn_jax import input_pipeline, mesh as mesh_lib, train
from crnn_jax.charset import Charset
from crnn_jax.errors import UserError

from conftest import LINES, tiny_config, why, metrics as _metrics

@pytest.fixture(scope="session")
def trained(overfit_data, tmp_path_factory):
  """The tiny model trained long enough to read its six lines back."""
  wd = tmp_path_factory.mktemp("wd") / "tiny"
  config = tiny_config(overfit_data, **{"train.num_steps": 300, "train.eval_every": 300,
                                        "train.checkpoint_every": 100, "optimizer.learning_rate": 1e-2,
                                        "eval.max_examples": 48, "train.ema_decay": 0.9})
  final = train.train_and_evaluate(config, str(wd))
  return wd, final


def test_loss_falls_and_it_reads_its_training_lines(trained):
  wd, final = trained
  losses = [m["loss"] for m in _metrics(wd) if "loss" in m]
  assert losses[-1] < 0.2 * losses[0]
  assert final["train/seq_acc"] >= 0.9 and final["train_ema/seq_acc"] >= 0.9, final


def test_ema_follows_the_weights_with_its_decay(overfit_data):
  """state.ema after each step = d_t * ema + (1 - d_t) * new weights, d_t = min(decay, (1+t)/(10+t))."""
  config = tiny_config(overfit_data, **{"train.ema_decay": 0.5})
  cs = Charset.read(overfit_data)
  compiled = train.Compiled(config, train.make_model(config, cs.num_classes), train.make_optimizer(config),
                            mesh_lib.make_mesh())
  state = compiled.init(jax.random.PRNGKey(0))
  host = lambda tree: jax.tree.map(np.asarray, jax.device_get(tree))
  expect = host({"params": state.params, "batch_stats": state.batch_stats})
  assert jax.tree.all(jax.tree.map(np.array_equal, host(state.ema), expect))  # starts at the init
  spec = train.pipeline_spec(config, config.train.batch_size)
  for t, raw in enumerate(input_pipeline.train_dataset(overfit_data, spec, None, seed=0).take(12)):
    b = input_pipeline.to_numpy(raw)
    state, _ = compiled.train_step(state, mesh_lib.global_batch({k: b[k] for k in train.DEVICE_KEYS},
                                                                compiled.mesh))
    d = min(0.5, (1 + t) / (10 + t))
    now = host({"params": state.params, "batch_stats": state.batch_stats})
    expect = jax.tree.map(lambda e, x: d * e + (1 - d) * x, expect, now)
  got = host(state.ema)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, expect)
  assert not jax.tree.all(jax.tree.map(np.array_equal, got, now))  # an average, not a copy
  assert train.inference_view(state, "raw") is state
  view = train.inference_view(state, "ema")
  assert view.params is state.ema["params"] and view.batch_stats is state.ema["batch_stats"]
  with pytest.raises(UserError, match="choose ema or raw"):
    train.inference_view(state, "best")


def test_checkpoints_from_before_the_ema_field_restore(overfit_data, tmp_path):
  import orbax.checkpoint as ocp
  from crnn_jax import checkpointing
  config = tiny_config(overfit_data)
  cs = Charset.read(overfit_data)
  compiled = train.Compiled(config, train.make_model(config, cs.num_classes), train.make_optimizer(config),
                            mesh_lib.make_mesh())
  state = compiled.init(jax.random.PRNGKey(0))
  latest, _ = checkpointing.managers(str(tmp_path), config)
  latest.save(7, args=ocp.args.StandardSave({k: v for k, v in vars(state).items() if k != "ema"}))  # no `ema` key
  latest.wait_until_finished()
  back = checkpointing.restore(latest, compiled.abstract_with_shardings())
  assert back.ema is None and int(back.step) == 0
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(back.params), jax.device_get(state.params))
  # a run that keeps an EMA cannot start from such a checkpoint: orbax's mismatch error, not a silent init
  c_ema = tiny_config(overfit_data, **{"train.ema_decay": 0.9})
  with_ema = train.Compiled(c_ema, train.make_model(c_ema, cs.num_classes), train.make_optimizer(c_ema),
                            mesh_lib.make_mesh())
  with pytest.raises(ValueError, match="ema"):
    checkpointing.restore(latest, with_ema.abstract_with_shardings())


def test_workdir_contents(trained):
  wd, _ = trained
  for name in ("config.json", "run_info.json", "chinese.txt", "metrics.jsonl", "checkpoints", "best"):
    assert (wd / name).exists(), name
  assert list(wd.glob("events.out.tfevents*")), "TensorBoard events"
  info = json.loads((wd / "run_info.json").read_text())
  assert info["versions"]["jax"] == jax.__version__ and info["devices"]
  m = _metrics(wd)[-2]
  assert {"loss", "learning_rate", "grad_norm", "images_per_sec", "infeasible", "compiles",
          "peak_rss_mb"} <= set(m)
  stats = json.loads((wd / "compile_stats.json").read_text())
  # one compile per width bucket the run met, each attributed to its width; none after first use
  by_w = stats["train_step_compiles_by_width"]
  assert by_w and all(n >= 1 for n in by_w.values()), stats
  assert set(stats["train_step_compile_seconds_by_width"]) == set(by_w)
  assert stats["recompiles_after_first_use"] == 0
  assert stats["peak_rss_mb"] > 50 and stats["compiles_total"] >= len(by_w)


def test_train_step_compiles_once_per_width_bucket(overfit_data):
  config = tiny_config(overfit_data)
  cs = Charset.read(overfit_data)
  model = train.make_model(config, cs.num_classes)
  tx = train.make_optimizer(config)
  buckets = config.input.width_buckets
  compiled = train.Compiled(config, model, tx, mesh_lib.make_mesh(),
                            wrap=lambda f: chex.assert_max_traces(f, n=len(buckets)))
  state = compiled.init(jax.random.PRNGKey(0))
  spec = train.pipeline_spec(config, config.train.batch_size)
  seen = set()
  for raw in input_pipeline.train_dataset(overfit_data, spec, None, seed=0).take(40):
    b = input_pipeline.to_numpy(raw)
    seen.add(b["image"].shape[2])
    state, m = compiled.train_step(state, mesh_lib.global_batch({k: b[k] for k in train.DEVICE_KEYS},
                                                                compiled.mesh))
  assert len(seen) >= 2  # several buckets were used, each compiled once (else chex raises)
  assert int(state.step) == 40


def test_same_global_batch_same_loss_on_1_and_8_devices(overfit_data, tmp_path):
  script = pathlib.Path(__file__).with_name("multihost_worker.py")
  losses = []
  for n in (1, 8):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={n}", TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, str(script), str(overfit_data), str(tmp_path / f"{n}.npz"), "3"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, why(out.stderr)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["devices"] == n and res["processes"] == 1
    losses.append(res)
  np.testing.assert_allclose(losses[0]["losses"], losses[1]["losses"], rtol=2e-5)


def test_resume_continues_step_count_and_loss_curve(overfit_data, tmp_path):
  wd = tmp_path / "wd"
  c = tiny_config(overfit_data, **{"train.num_steps": 40, "train.checkpoint_every": 40, "train.eval_every": 40})
  train.train_and_evaluate(c, str(wd))
  first = _metrics(wd)
  c2 = tiny_config(overfit_data, **{"train.num_steps": 80, "train.checkpoint_every": 40, "train.eval_every": 40})
  train.train_and_evaluate(c2, str(wd))
  later = _metrics(wd)[len(first):]
  steps = [m["step"] for m in later if "loss" in m]
  assert steps == [50, 60, 70, 80]  # continues at 41, not at 1
  initial = first[0]["loss"]
  before = [m["loss"] for m in first if "loss" in m][-1]
  after = [m["loss"] for m in later if "loss" in m][0]
  assert after < 0.5 * initial and after < 2 * before  # the curve goes on, it does not restart


def test_a_diverging_run_stops_before_saving_and_non_finite_weights_are_refused(overfit_data, tmp_path, monkeypatch):
  """A NaN learning rate from step 21 on: the loss goes NaN, the run stops with one line naming the
  step, the latest checkpoint stays step 20 (finite, readable); a checkpoint with NaN weights written
  anyway (here by hand) is refused by the inference core with the step named.  (crnn-train refuses a
  NaN learning rate up front, tests/test_config_check.py: here the config check is bypassed to stand
  for a divergence no check can foresee.)"""
  from crnn_jax import checkpointing, inference
  wd = tmp_path / "wd"
  kw = {"train.checkpoint_every": 20, "train.eval_every": 20, "train.log_every": 10}
  train.train_and_evaluate(tiny_config(overfit_data, **{"train.num_steps": 20, **kw}), str(wd))

  monkeypatch.setattr(train.config_check, "validate", lambda c: c)
  with pytest.raises(train.Diverged, match=r"diverged: the loss is nan .*at step 30 \(finite at step 20\).*"
                                             r"step 20, is the last good one"):
    train.train_and_evaluate(tiny_config(overfit_data, **{"train.num_steps": 60, "optimizer.learning_rate": float("nan"),
                                                          **kw}), str(wd))
  assert sorted(int(p.name) for p in (wd / "checkpoints").iterdir() if p.name.isdigit()) == [20]
  assert inference.load(str(wd), "latest").step == 20  # still reads
  # NaN weights on disk (as a run without the guard would have left them): refused, named.
  latest, _ = checkpointing.managers(str(wd), tiny_config(overfit_data))
  c = tiny_config(overfit_data)
  state = checkpointing.restore(latest, train.Compiled(c, train.make_model(c, Charset.read(
      str(wd / "chinese.txt")).num_classes), train.make_optimizer(c), mesh_lib.make_mesh()).abstract_with_shardings())
  bad = state.replace(params=jax.tree.map(lambda x: x * np.nan, state.params),
                      ema=jax.tree.map(lambda x: x * np.nan, state.ema))
  checkpointing.save(latest, 21, bad)
  latest.wait_until_finished()
  with pytest.raises(UserError, match=r"checkpoint step 21 .* non-finite (ema|raw) weights .*an earlier step"):
    inference.load(str(wd), "latest")


def test_a_damaged_checkpoint_falls_back_to_the_newest_intact_one(overfit_data, tmp_path, caplog, capsys, monkeypatch):
  """Steps 20 and 40 kept; step 40's files damaged (its array data deleted, best/ too): best and
  latest read step 20 with a warning naming the damaged step; step 40 asked for by number, or
  every step damaged, is one line.  crnn-predict in a fresh process: an answer, no traceback.
  crnn-train resumes from step 20; a full disk at its step 60 is one line, step 40 stays usable."""
  import logging
  from crnn_jax import inference
  wd = tmp_path / "wd"
  kw = {"train.checkpoint_every": 20, "train.eval_every": 20, "train.keep_checkpoints": 3}
  train.train_and_evaluate(tiny_config(overfit_data, **{**kw, "train.num_steps": 40}), str(wd))

  def damage(step_dir):
    data = [p for p in step_dir.rglob("*") if p.is_file() and "ocdbt.process" in str(p)]
    assert data, sorted(step_dir.rglob("*"))
    for p in data:
      p.unlink()
  damage(wd / "checkpoints" / "40")
  damage(wd / "best" / "40")
  for which in ("latest", "best"):
    with caplog.at_level(logging.WARNING, logger="crnn_jax.inference"):
      caplog.clear()
      assert inference.load(str(wd), which).step == 20
    assert "cannot be restored" in caplog.text and "40" in caplog.text
  with pytest.raises(UserError, match="no checkpoint of .* could be restored: step 40"):
    inference.load(str(wd), "40")
  out = subprocess.run([sys.executable, "-m", "crnn_jax.predict", "--workdir", str(wd), "--cpu-devices", "1",
                        str(pathlib.Path(__file__).parents[1] / "docs" / "samples")],
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0 and out.stdout.strip() and "Traceback" not in out.stderr, out.stderr[-3000:]
  assert "cannot be restored" in out.stderr and len(out.stderr.splitlines()) < 20, out.stderr[-3000:]
  # crnn-train resuming: step 40 moved to checkpoints/40.damaged (and best/40, past the resumed step,
  # to best/40.superseded), resumed from step 20 with its data position, 40 saved afresh.  Then the
  # disk fills up while step 60 is saved (OSError ENOSPC from orbax's save, as a full disk gives):
  # one line naming the workdir, the free space, the checkpoint size and the step a rerun resumes
  # from; step 40 stays the latest, intact and readable.
  import errno
  from crnn_jax import checkpointing
  real_save = checkpointing.save

  def save(manager, step, state, metrics=None):
    if int(step) >= 60:
      raise OSError(errno.ENOSPC, "No space left on device", str(manager.directory))
    return real_save(manager, step, state, metrics)
  monkeypatch.setattr(checkpointing, "save", save)
  capsys.readouterr()
  with pytest.raises(UserError, match=rf"out of disk space writing into {wd} \(OSError: .*No space left on device.*\): "
                                      r"\d+ MB free; a checkpoint of this run takes [\d.]+ MB\. .*resumes from step 40, "
                                      "which is intact"):
    train.train_and_evaluate(tiny_config(overfit_data, **{**kw, "train.num_steps": 60}), str(wd))
  monkeypatch.setattr(checkpointing, "save", real_save)
  err = capsys.readouterr().err
  assert "checkpoint step 40 cannot be restored" in err and "resumed from step 20" in err, err[-3000:]
  assert (wd / "checkpoints" / "40.damaged").is_dir() and (wd / "best" / "40.superseded").is_dir()
  assert {20, 40} <= {int(p.name) for p in (wd / "checkpoints").iterdir() if p.name.isdigit()}
  logged = [m["step"] for m in _metrics(wd) if "loss" in m]
  assert logged.count(30) == 2  # steps 21-40 trained again
  assert inference.load(str(wd), "latest").step == 40
  # Every kept step damaged: one line.
  for step in (20, 40):
    damage(wd / "checkpoints" / str(step))
  with pytest.raises(UserError, match="no checkpoint of .* could be restored"):
    inference.load(str(wd), "latest")


def test_a_corrupted_training_record_is_one_line_naming_its_file(trained, overfit_data, tmp_path, capsys):
  """A byte flipped inside a record of one train shard: tf.data's `corrupted record at N` becomes
  one line naming that shard, and the latest checkpoint is what a rerun resumes from."""
  import shutil
  data = tmp_path / "data"
  shutil.copytree(overfit_data, data)
  shards = sorted(data.glob("*-train.tfrecord-*"))
  bad = shards[len(shards) // 2]
  raw = bytearray(bad.read_bytes())
  raw[len(raw) // 2] ^= 0xFF  # inside a record's image bytes: its CRC no longer matches
  bad.write_bytes(bytes(raw))
  c = tiny_config(data, **{"train.num_steps": 200, "train.checkpoint_every": 200, "train.eval_every": 200})
  with pytest.raises(UserError, match=rf"a damaged training record at step \d+: {bad}.*resumes from its latest"):
    train.train_and_evaluate(c, str(tmp_path / "wd"))
  # Evaluation over the same split (crnn-eval's path) with a trained run's weights: one line too.
  from crnn_jax import evaluate, inference
  r = inference.load(str(trained[0]), "latest")
  with pytest.raises(UserError, match=rf"a damaged train record: {bad}"):
    evaluate.evaluate(r.steps, r.variables, r.config, str(data), "train", r.charset)
  # input.skip_damaged_records: the shard is read up to the damage, its rest left out and counted
  # (the log and damaged_records.json), training and its evaluations run to the end.
  wd = tmp_path / "wd_skip"
  c = tiny_config(data, **{"train.num_steps": 10, "train.checkpoint_every": 10, "train.eval_every": 10,
                           "input.skip_damaged_records": True})
  capsys.readouterr()
  train.train_and_evaluate(c, str(wd))
  out, err = capsys.readouterr()
  report = json.loads((wd / "damaged_records.json").read_text())
  [shard] = report["shards"]
  assert shard["file"] == str(bad) and 0 < shard["read"] < shard["records"]
  lost = shard["records"] - shard["read"]
  assert report["records_left_out"] == lost
  assert f"skip_damaged_records: 1 damaged train shards, {lost} records left out of every epoch" in err, err
  assert f"(n={48 - lost})" in out, out  # the evaluation read every record but those


def test_a_second_run_on_a_busy_workdir_is_refused(overfit_data, tmp_path):
  """Another process holds WORKDIR/train.lock: crnn-train refuses in one line naming its pid; once
  that process is killed (SIGKILL: no clean-up) the lock is free and training runs."""
  wd = tmp_path / "wd"
  wd.mkdir()
  holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from crnn_jax import train; "
                             "lock = train.WorkdirLock(sys.argv[1]); print('locked', flush=True); time.sleep(300)",
                             str(wd)], stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    c = tiny_config(overfit_data, **{"train.num_steps": 2, "train.eval_every": 2, "train.checkpoint_every": 2})
    with pytest.raises(UserError, match=rf"in use by another crnn-train \(pid {holder.pid} on "):
      train.train_and_evaluate(c, str(wd))
    assert not (wd / "checkpoints").exists()  # refused before anything was written
    out = subprocess.run([sys.executable, "-m", "crnn_jax.main", "--config", "configs/tiny.py", "--workdir", str(wd),
                          f"--config.data_dir={overfit_data}"], capture_output=True, text=True, timeout=120,
                         cwd=pathlib.Path(__file__).parents[1])
    assert out.returncode == 2 and f"pid {holder.pid}" in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]
  finally:
    holder.kill()
    holder.wait()
  train.WorkdirLock(str(wd)).release()  # free again: the kernel released the killed owner's lock


def test_time_budget_stops_saves_evaluates_and_is_not_trained_past(overfit_data, tmp_path, capsys):
  """train.time_budget_minutes: the run stops on time at an earlier step, with its checkpoint and
  final evaluation; the same command again trains no further; a larger budget goes on."""
  from crnn_jax import checkpointing
  wd = tmp_path / "wd"
  # 0.1 s of budget: spent by the first step (its compile alone takes seconds).
  c = tiny_config(overfit_data, **{"train.num_steps": 40, "train.checkpoint_every": 40, "train.eval_every": 40,
                                   "train.time_budget_minutes": 0.1 / 60})
  final = train.train_and_evaluate(c, str(wd))
  info = checkpointing.read_train_time(str(wd))
  stop = info["stopped_by_time_budget_at"]
  assert stop is not None and 1 <= stop < 40, info
  assert float(info["seconds_at_step"][str(stop)]) >= 0.1
  latest, _ = checkpointing.managers(str(wd), c)
  assert latest.latest_step() == stop  # saved where it stopped, off the checkpoint interval
  assert "train/seq_acc" in final and any(m.get("step") == stop and "train/seq_acc" in m for m in _metrics(wd))
  assert "time budget reached" in capsys.readouterr().err
  # Again: the budget is spent, nothing is trained.
  assert train.train_and_evaluate(c, str(wd)) == {}
  assert "nothing left to train" in capsys.readouterr().err
  assert checkpointing.managers(str(wd), c)[0].latest_step() == stop
  # A budget it cannot spend here: it resumes and finishes the 40 steps, the clock carried over.
  c3 = tiny_config(overfit_data, **{"train.num_steps": 40, "train.checkpoint_every": 40, "train.eval_every": 40,
                                    "train.time_budget_minutes": 60.0})
  train.train_and_evaluate(c3, str(wd))
  info = checkpointing.read_train_time(str(wd))
  assert checkpointing.managers(str(wd), c3)[0].latest_step() == 40
  assert info["seconds_at_step"]["40"] > info["seconds_at_step"][str(stop)]


def test_workdir_with_another_charset_is_refused(overfit_data, tmp_path):
  wd = tmp_path / "wd"
  wd.mkdir()
  (wd / "chinese.txt").write_text("一\n二\n", encoding="utf-8")
  with pytest.raises(UserError, match="another character set"):
    train.train_and_evaluate(tiny_config(overfit_data), str(wd))


def test_missing_or_empty_data_dir(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(UserError, match="does not exist"):
    train.train_and_evaluate(tiny_config(tmp_path / "nope"), str(tmp_path / "wd1"))
  (empty / "chinese.txt").write_text("一\n", encoding="utf-8")
  with pytest.raises(UserError, match="missing or empty"):
    train.train_and_evaluate(tiny_config(empty), str(tmp_path / "wd2"))


def _cli(*args, timeout=300):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout, env=env,
                        cwd=pathlib.Path(__file__).parents[1])


def test_unknown_config_key_is_one_line(tmp_path, overfit_data):
  out = _cli("crnn_jax.main", "--config", "configs/tiny.py", "--workdir", str(tmp_path / "w"),
             f"--config.data_dir={overfit_data}", "--config.train.nope=3")
  assert out.returncode != 0
  assert "Traceback" not in out.stderr and "nope" in out.stderr, out.stderr[-3000:]


def test_cli_charset_mismatch_is_one_line(tmp_path, overfit_data):
  wd = tmp_path / "w"
  wd.mkdir()
  (wd / "chinese.txt").write_text("一\n", encoding="utf-8")
  out = _cli("crnn_jax.main", "--config", "configs/tiny.py", "--workdir", str(wd),
             f"--config.data_dir={overfit_data}")
  assert out.returncode == 2 and "Traceback" not in out.stderr
  assert "crnn-train: error:" in out.stderr and "another character set" in out.stderr


def test_predict_reads_training_lines_and_reports_bad_images(trained, overfit_data, tmp_path, capsys):
  from PIL import Image
  from crnn_jax import predict
  import tensorflow_datasets as tfds
  wd, _ = trained
  b = tfds.builder_from_directory(str(overfit_data))
  truth = {}
  for i, ex in enumerate(tfds.as_numpy(b.as_dataset(split="train", decoders={
      "image": tfds.decode.SkipDecoding()}).take(12))):
    p = tmp_path / f"{i:02d}.jpg"
    p.write_bytes(ex["image"])
    truth[str(p)] = ex["text"].decode()
  # A user's own crop: colour, another height, wide margins.
  src = Image.open(next(iter(truth))).convert("RGB")
  big = Image.new("RGB", (src.width * 3 + 80, src.height * 3 + 60), (250, 240, 200))
  big.paste(src.resize((src.width * 3, src.height * 3)), (40, 30))
  big.save(tmp_path / "colour.png")
  truth[str(tmp_path / "colour.png")] = truth[next(iter(truth))]
  (tmp_path / "broken.jpg").write_bytes(open(next(iter(truth)), "rb").read()[:100])
  Image.new("L", (1, 1)).save(tmp_path / "dot.png")
  tsv = tmp_path / "out.tsv"
  code = predict.main(["--workdir", str(wd), "--output", str(tsv), str(tmp_path)])
  out, err = capsys.readouterr()
  assert code == 1 and "broken.jpg" in err and "1 of" in err and "Traceback" not in err
  rows = dict(l.split("\t") for l in out.strip().splitlines())
  assert tsv.read_text(encoding="utf-8") == out
  right = sum(rows[p] == t for p, t in truth.items())
  assert right >= 0.8 * len(truth), rows
  # A folder with no image in it: one line naming it, exit 2 (it once gave no output and exit 0).
  (tmp_path / "nothing").mkdir()
  (tmp_path / "nothing" / "notes.txt").write_text("x")
  assert predict.main(["--workdir", str(wd), str(tmp_path / "nothing")]) == 2
  _, err = capsys.readouterr()
  assert f"{tmp_path / 'nothing'} holds no image files" in err and "Traceback" not in err


def test_eval_cli_prints_metrics_and_writes_a_gallery(trained, overfit_data, capsys):
  from crnn_jax import evaluate
  wd, _ = trained
  pred = wd / "pred.tsv"
  assert evaluate.main(["--workdir", str(wd), "--split", "train", "--gallery", "10",
                        "--predictions", str(pred)]) == 0
  res = json.loads(capsys.readouterr().out)
  assert res["n"] == 48 and res["seq_acc"] >= 0.9 and "by_font" in res and "by_length" in res
  assert res["weights"] == "ema"  # the run kept an EMA: evaluation goes by it unless told otherwise
  assert evaluate.main(["--workdir", str(wd), "--split", "train", "--gallery", "0", "--weights", "raw"]) == 0
  raw = json.loads(capsys.readouterr().out)
  assert raw["weights"] == "raw" and raw["n"] == 48 and raw["seq_acc"] >= 0.9
  assert (wd / "eval_train.json").exists()
  rows = pred.read_text(encoding="utf-8").splitlines()
  assert rows[0].split("\t") == ["reference", "prediction", "font", "edit_distance"] and len(rows) == 49
  assert {r.split("\t")[0] for r in rows[1:]} <= set(LINES)
  # the six training lines, 8 variants each: every reference character counted in its bin
  assert sum(b["chars"] for b in res["by_train_count"].values()) == sum(len(r.split("\t")[0]) for r in rows[1:])
  # A kept step by number, into its own file; a step the run did not keep is named with those it did.
  assert evaluate.main(["--workdir", str(wd), "--split", "train", "--gallery", "0", "--checkpoint", "200",
                        "--max-examples", "16"]) == 0
  at200 = json.loads(capsys.readouterr().out)
  assert at200["checkpoint_step"] == 200 and at200["n"] == 16
  assert json.loads((wd / "eval_train_step200.json").read_text(encoding="utf-8"))["checkpoint_step"] == 200
  assert evaluate.main(["--workdir", str(wd), "--split", "train", "--checkpoint", "150"]) == 2
  err = capsys.readouterr().err
  assert "keeps no checkpoint of step 150" in err and "200" in err


def test_beam_search_with_the_lm_in_eval_and_predict(trained, overfit_data, tmp_path, capsys):
  """--decoder beam builds W/lm3.json from the training lines, reads as well as greedy on the
  tiny model's own lines, reports the greedy reading of the same outputs beside it, and
  crnn-predict then decodes from the workdir alone."""
  from crnn_jax import evaluate, lm as lm_lib, predict
  wd, _ = trained
  lm_path = wd / "lm3.json"
  if lm_path.exists():
    lm_path.unlink()
  pred = tmp_path / "pred.tsv"
  assert evaluate.main(["--workdir", str(wd), "--split", "train", "--gallery", "0", "--decoder", "beam",
                        "--lm-weight", "0.3", "--predictions", str(pred)]) == 0
  res = json.loads(capsys.readouterr().out)
  rows = [r.split("\t") for r in pred.read_text(encoding="utf-8").splitlines()]
  assert rows[0] == ["reference", "prediction", "font", "edit_distance", "greedy_prediction"] and len(rows) == 49
  assert sum(r[0] == r[4] for r in rows[1:]) == round(res["greedy"]["seq_acc"] * 48)
  assert res["decoding"] == {"decoder": "beam", "beam": 8, "topk": 8, "prune": -12.0, "lm_weight": 0.3,
                             "length_bonus": 0.0, "lm_order": 3}
  assert res["n"] == res["greedy"]["n"] == 48
  assert res["seq_acc"] >= 0.9 and res["greedy"]["seq_acc"] >= 0.9
  assert set(res["greedy"]["by_font"]) == set(res["by_font"])
  lm = lm_lib.CharNgramLM.load(str(lm_path))
  assert lm.order == 3 and lm.score(LINES[0]) > lm.score(LINES[0][::-1])
  # predict: beam + LM gives the same texts as greedy on these clear training images
  import tensorflow_datasets as tfds
  b = tfds.builder_from_directory(str(overfit_data))
  for i, ex in enumerate(tfds.as_numpy(b.as_dataset(split="train", decoders={
      "image": tfds.decode.SkipDecoding()}).take(8))):
    (tmp_path / f"{i}.jpg").write_bytes(ex["image"])
  assert predict.main(["--workdir", str(wd), str(tmp_path)]) == 0
  greedy = capsys.readouterr().out
  assert predict.main(["--workdir", str(wd), "--decoder", "beam", "--lm-weight", "0.3", str(tmp_path)]) == 0
  beam = capsys.readouterr().out
  g, bm = (dict(l.split("\t") for l in o.strip().splitlines()) for o in (greedy, beam))
  assert len(g) == 8 and sum(g[k] == bm[k] for k in g) >= 7, (g, bm)


def test_compilation_cache_serves_a_rerun(tmp_path, overfit_data):
  """`crnn-train --compilation_cache DIR`: the second run of the same config compiles (almost)
  nothing of its own; the first fills DIR."""
  cache = tmp_path / "cache"
  stats = []
  for name in ("a", "b"):
    out = _cli("crnn_jax.main", "--config", "configs/tiny.py", "--workdir", str(tmp_path / name),
               f"--config.data_dir={overfit_data}", "--config.train.num_steps=4", "--config.train.eval_every=4",
               "--config.eval.split=train", "--config.eval.max_examples=8", "--compilation_cache", str(cache))
    assert out.returncode == 0, why(out.stderr)
    stats.append(json.loads((tmp_path / name / "compile_stats.json").read_text()))
  assert any(cache.iterdir()), "the cache folder stayed empty"
  first, second = stats
  assert first["compiles_total"] >= 2 and first["cache_hits_total"] == 0, first
  # the same train-step executables, now loaded instead of compiled
  assert second["train_step_compiles_by_width"] == first["train_step_compiles_by_width"], (first, second)
  assert second["cache_hits_total"] >= sum(second["train_step_compiles_by_width"].values()), second
  assert second["compiles_total"] < first["compiles_total"], (first, second)
