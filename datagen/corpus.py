"""Reading the corpus: THUOCL's `<phrase>\\t<DF>` lines, or plain one-line-per-text files."""
import dataclasses
import hashlib
import importlib.resources
import pathlib

from datagen.errors import DatagenError


def default_corpus_path() -> pathlib.Path:
  """The vendored THUOCL_poem.txt (MIT, see datagen/corpus/THUOCL_LICENSE)."""
  return pathlib.Path(str(importlib.resources.files("datagen") / "corpus" / "THUOCL_poem.txt"))


@dataclasses.dataclass(frozen=True)
class Corpus:
  path: str
  sha256: str
  lines: tuple  # texts in file order; line_id = position in this tuple

  def __len__(self):
    return len(self.lines)


def sha256_file(path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def read_corpus(path=None, require_tab: bool = True) -> Corpus:
  """Reads a corpus file.

  THUOCL lines are `<phrase>\\t<document frequency>`; with `require_tab=False` a line is the
  whole text (a user's own list of lines).  Duplicate texts are kept once (first occurrence):
  a duplicate could otherwise land in both training and test.
  """
  path = pathlib.Path(path) if path else default_corpus_path()
  try:
    raw = path.read_bytes()
  except OSError as e:
    raise DatagenError(f"cannot read corpus {path}: {e.strerror}; pass --corpus FILE") from None
  try:
    text = raw.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    line = raw[: e.start].count(b"\n") + 1
    raise DatagenError(f"{path}:{line}: not UTF-8 ({e.reason}); save the corpus as UTF-8") from None
  lines, seen = [], set()
  for n, line in enumerate(text.splitlines(), start=1):
    if not line.strip():
      continue
    if require_tab:
      if "\t" not in line:
        raise DatagenError(
            f"{path}:{n}: line {line!r} has no tab; THUOCL lines are '<phrase>\\t<count>' "
            "(use --plain-corpus for one text per line)")
      phrase = line.split("\t", 1)[0].strip()
    else:
      phrase = line.strip()
    if not phrase:
      raise DatagenError(f"{path}:{n}: empty text before the tab")
    if any(c.isspace() for c in phrase):
      raise DatagenError(f"{path}:{n}: text {phrase!r} contains whitespace; one text per line")
    if phrase not in seen:
      seen.add(phrase)
      lines.append(phrase)
  if not lines:
    raise DatagenError(f"corpus {path} is empty: no text lines found")
  return Corpus(path=str(path), sha256=sha256_file(path), lines=tuple(lines))
