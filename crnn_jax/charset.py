"""Reading the character set that datagen wrote (crnn_jax never imports datagen).

Model class = line index of chinese.txt + 1; class 0 is the CTC blank (see datagen/charset.py,
where the convention is written down for the data side).
"""
import pathlib

from crnn_jax.errors import UserError

CHARSET_FILE = "chinese.txt"


class Charset:
  def __init__(self, chars):
    self.chars = list(chars)
    self._class = {c: i + 1 for i, c in enumerate(self.chars)}

  @classmethod
  def read(cls, path):
    path = pathlib.Path(path)
    if path.is_dir():
      path = path / CHARSET_FILE
    if not path.exists():
      raise UserError(f"{path} does not exist: a DATA_DIR made by `datagen build` (or a workdir) has it")
    try:
      lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
      raise UserError(f"{path}: not UTF-8 ({e.reason} at byte {e.start}); chinese.txt is UTF-8, one character "
                      "per line") from None
    chars, seen = [], {}
    for n, c in enumerate(lines, 1):
      if c == "":
        continue
      if len(c) != 1:
        raise UserError(f"{path}:{n}: {c!r} is not one character")
      if c in seen:
        raise UserError(f"{path}:{n}: {c!r} is listed twice (first on line {seen[c]}): each character is one "
                        "class of the model")
      seen[c] = n
      chars.append(c)
    if not chars:
      raise UserError(f"{path}: no characters (one per line)")
    return cls(chars)

  def __len__(self):
    return len(self.chars)

  def __eq__(self, other):
    return isinstance(other, Charset) and self.chars == other.chars

  @property
  def num_classes(self) -> int:
    return len(self.chars) + 1

  def classes(self, text):
    return [self._class[c] for c in text]

  def text(self, classes) -> str:
    """Model classes (blank excluded by the caller) -> text."""
    return "".join(self.chars[k - 1] for k in classes if 0 < k <= len(self.chars))

  def write(self, path):
    pathlib.Path(path).write_text("".join(c + "\n" for c in self.chars), encoding="utf-8")
