"""What the bench scripts share: loading a config file, with `key=python_literal` overrides."""
import ast
import importlib.util


def parse_sets(pairs):
  """["model.dropout=0.1", ...] -> [("model.dropout", 0.1), ...]."""
  out = []
  for p in pairs or []:
    key, _, val = p.partition("=")
    out.append((key, ast.literal_eval(val)))
  return out


def apply_sets(config, sets):
  for key, val in sets:
    node = config
    *parents, leaf = key.split(".")
    for k in parents:
      node = node[k]
    node[leaf] = val
  return config


def load_config(path, sets=()):
  """`get_config()` of a config file (configs/*.py), with `sets` applied."""
  spec = importlib.util.spec_from_file_location("cfg", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return apply_sets(mod.get_config(), sets)
