"""What datagen wrote in a DATA_DIR, so that `--overwrite` removes that and nothing else.

`begin(out)` (before a build or an import writes anything) records the names already in the folder;
`finish(out)` records the top-level names the build added.  Both live in `datagen_manifest.json`.
`--overwrite` then removes (`owned`):
  - a finished build's recorded names; an interrupted one's ("writing"): datagen's names that were
    not in the folder when it began;
  - a dataset of a datagen from before the manifest (meta.json with its render counts beside
    dataset_info.json): datagen's names;
  - never a folder holding a file datagen does not write there (a user's Train/notes.txt, a
    splits/ of their own), and nothing at all in a folder with datagen's names but no trace of a
    datagen build: those are refused, named, for the user to move.
"""
import fnmatch
import json
import pathlib

MANIFEST = "datagen_manifest.json"
# datagen's top-level names in a DATA_DIR, and the files it writes inside its folders.
FILES = ("chinese.txt", "dataset_info.json", "features.json", "meta.json", "preview.png", MANIFEST)
FOLDERS = {"char_dict": ("*.json",), "splits": ("*.txt", "*.json"), "pic": ("*.jpg", "*.png"),
           "Train": ("sample.txt",), "Validation": ("sample.txt",), "Test": ("sample.txt",)}


def _ours_by_name(out, shard_prefix):
  names = [n for n in (*FILES, *FOLDERS) if (out / n).exists()]
  return names + sorted(p.name for p in out.glob(f"{shard_prefix}-*.tfrecord-*"))


def _read(out):
  p = out / MANIFEST
  if not p.exists():
    return None
  try:
    m = json.loads(p.read_text(encoding="utf-8"))
    return m if isinstance(m, dict) else None
  except (OSError, UnicodeDecodeError, json.JSONDecodeError):
    return None


def _write(out, m):
  tmp = out / (MANIFEST + ".tmp")
  tmp.write_text(json.dumps(m, indent=1, ensure_ascii=False), encoding="utf-8")
  tmp.replace(out / MANIFEST)


def begin(out, shard_prefix, build_args=None):
  """Before a build or an import writes into `out`: records what is there that is not datagen's
  (an earlier manifest's names, or an earlier datagen dataset's, stay datagen's), and the settings
  (`build_args`) it was started with: a rerun with the same ones starts an interrupted build again."""
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  names = {p.name for p in out.iterdir()} - {MANIFEST, MANIFEST + ".tmp"}
  old = _read(out)
  if old is not None and old.get("status") == "done":
    pre = names - set(old.get("written", []))
  elif old is not None:
    pre = names & set(old.get("preexisting", []))
  elif _legacy_meta(out / "meta.json") and (out / "dataset_info.json").exists():
    pre = names - set(_ours_by_name(out, shard_prefix))
  else:
    pre = names
  _write(out, {"status": "writing", "preexisting": sorted(pre), "build_args": build_args})


def update(out, **fields):
  """Adds fields to an unfinished build's manifest (the settings it was started with, its size
  estimate); no manifest (a render step run alone): nothing."""
  out = pathlib.Path(out)
  m = _read(out)
  if m is not None:
    m.update(fields)
    _write(out, m)


def read(out):
  """The manifest of `out` ({} if none)."""
  return _read(pathlib.Path(out)) or {}


def finish(out):
  out = pathlib.Path(out)
  m = _read(out) or {"preexisting": []}
  pre = set(m.get("preexisting", []))
  _write(out, {"status": "done", "preexisting": sorted(pre),
               "written": sorted(p.name for p in out.iterdir() if p.name not in pre and p.name != MANIFEST)})
  (out / (MANIFEST + ".tmp")).unlink(missing_ok=True)


def _foreign_inside(path, name):
  """Files under a datagen folder that datagen does not write there (relative to its parent)."""
  pats = FOLDERS.get(name)
  if pats is None or not path.is_dir():
    return []
  bad = []
  for f in sorted(path.rglob("*")):
    if f.is_file() and not any(fnmatch.fnmatch(f.name, p) for p in pats):
      bad.append(str(f.relative_to(path.parent)))
    elif f.is_dir() and name != "pic":  # only pic/ has subfolders (pic/<line>/<variant>_<font>.jpg)
      bad.append(str(f.relative_to(path.parent)) + "/")
  return bad


def owned(out, shard_prefix):
  """-> (names datagen may remove, [(name or file, why)] it must not touch) for `out`."""
  out = pathlib.Path(out)
  present = _ours_by_name(out, shard_prefix)
  m = _read(out)
  if m is not None and m.get("status") == "done":
    written = set(m.get("written", [])) | {MANIFEST}
    candidates = [n for n in present if n in written]
    foreign = [(n, "not written by the datagen build recorded in " + MANIFEST) for n in present if n not in written]
  elif m is not None:  # an interrupted build or import
    pre = set(m.get("preexisting", []))
    candidates = [n for n in present if n not in pre]
    foreign = [(n, "was in the folder before datagen's (unfinished) build began") for n in present if n in pre]
  elif (out / "meta.json").exists() and (out / "dataset_info.json").exists() and _legacy_meta(out / "meta.json"):
    candidates, foreign = present, []
  else:
    return [], [(n, f"no {MANIFEST} and no meta.json of a datagen build: not datagen's as far as it can tell")
                for n in present]
  keep = []
  for n in candidates:
    bad = _foreign_inside(out / n, n)
    if bad:
      foreign += [(b, "a file datagen does not write there") for b in bad[:5]]
    else:
      keep.append(n)
  return keep, foreign


def _legacy_meta(path):
  """meta.json of a datagen render (its image counts)."""
  if not path.exists():
    return False
  try:
    m = json.loads(path.read_text(encoding="utf-8"))
  except (OSError, UnicodeDecodeError, json.JSONDecodeError):
    return False
  return isinstance(m, dict) and "counts" in m
