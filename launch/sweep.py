"""Run a config's grid: one crnn-train run (own workdir) per combination, here or on a cluster.

    python launch/sweep.py --config configs/tiny.py --workdir_root runs/sweep_tiny [--print]
        [--cpu_devices 2] [--eval_split test] [-- --config.data_dir=data/poem ...]

The config file declares its grid beside `get_config`:

    def get_sweep():
      return {"seed": [0, 1, 2], "optimizer.learning_rate": [1e-3, 2e-3]}

Runs are the product of the lists, in order, each in WORKDIR_ROOT/<key=value,...>.  Without
--print they run here one after another (a finished run is resumed, i.e. skipped, so an
interrupted sweep is restarted by running the same command); with --print the commands are
printed one per line, for a cluster's job array (e.g. `sbatch launch/slurm.sbatch CMD`).
Arguments after `--` go to every run.  Then: `crnn-report WORKDIR_ROOT/*`.
"""
import argparse
import importlib.util
import itertools
import os
import pathlib
import shlex
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_grid(config_path):
  spec = importlib.util.spec_from_file_location("sweep_config", config_path)
  mod = importlib.util.module_from_spec(spec)
  sys.path.insert(0, str(ROOT))
  spec.loader.exec_module(mod)
  if not hasattr(mod, "get_sweep"):
    raise SystemExit(f"sweep: error: {config_path} has no get_sweep(); add one returning "
                     "{'config.key': [values, ...]}")
  grid = mod.get_sweep()
  base = mod.get_config()
  for key, values in grid.items():
    node = base
    for part in key.split("."):
      if part not in node:
        raise SystemExit(f"sweep: error: get_sweep() of {config_path} names {key!r}, which the config does not have")
      node = node[part]
    if not isinstance(values, (list, tuple)) or not values:
      raise SystemExit(f"sweep: error: get_sweep()[{key!r}] must be a non-empty list")
  return grid


def points(grid):
  keys = list(grid)
  for combo in itertools.product(*(grid[k] for k in keys)):
    yield dict(zip(keys, combo))


def run_name(point):
  return ",".join(f"{k.split('.')[-1]}={v}" for k, v in point.items())


def commands(config, root, grid, cpu_devices, extra, python):
  for point in points(grid):
    wd = os.path.join(root, run_name(point))
    cmd = [python, "-m", "crnn_jax.main", "--config", config, "--workdir", wd]
    if cpu_devices:
      cmd.append(f"--cpu_devices={cpu_devices}")
    cmd += [f"--config.{k}={v}" for k, v in point.items()] + list(extra)
    yield wd, cmd


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  extra = []
  if "--" in argv:
    i = argv.index("--")
    argv, extra = argv[:i], argv[i + 1:]
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--config", required=True)
  ap.add_argument("--workdir_root", required=True)
  ap.add_argument("--print", action="store_true", help="print the commands instead of running them")
  ap.add_argument("--cpu_devices", type=int, default=0)
  ap.add_argument("--eval_split", default=None, help="after each run, crnn-eval it on this split")
  ap.add_argument("--python", default=sys.executable)
  args = ap.parse_args(argv)
  grid = load_grid(args.config)
  cmds = list(commands(args.config, args.workdir_root, grid, args.cpu_devices, extra, args.python))
  if args.print:
    for _, cmd in cmds:
      print(shlex.join(cmd))
    return 0
  for i, (wd, cmd) in enumerate(cmds):
    print(f"sweep: run {i + 1}/{len(cmds)}: {wd}", file=sys.stderr, flush=True)
    rc = subprocess.run(cmd, cwd=ROOT).returncode
    if rc != 0:
      print(f"sweep: error: run {wd} exited with {rc}; fix it and rerun the sweep (finished runs are kept)",
            file=sys.stderr)
      return rc
    if args.eval_split:
      rc = subprocess.run([args.python, "-m", "crnn_jax.evaluate", "--workdir", wd, "--split", args.eval_split],
                          cwd=ROOT, stdout=subprocess.DEVNULL).returncode
      if rc != 0:
        return rc
  print(f"sweep: {len(cmds)} runs in {args.workdir_root}; report: crnn-report {args.workdir_root}/*", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
