"""The character set: one deterministic order, the original example's files, and model classes.

Order: characters sorted by Unicode code point.  (The original built its list from a Python
`set`, so indices changed from run to run and a checkpoint could not be reused with data
generated later.)  Code point order depends only on *which* characters occur.

Index conventions -- the one place they are written down:
  * file index i  = line i (0-based) of `chinese.txt`; the `label` feature of every TFRecord
    example holds file indices, and `ord_2_index_map.json` maps to them, as in the original.
  * model class   = file index + 1.  Class 0 is the CTC blank.  (The original put the blank last;
    converters from its checkpoints must shift by one.)

Files, in the original `establish_char_dict.py` encoding (every key and value a JSON string):
  chinese.txt                        one character per line, UTF-8
  char_dict/char_dict.json           {"21407": "原"}     code point -> character
  char_dict/ord_2_index_map.json     {"21407": "0"}      code point -> file index
  char_dict/index_2_ord_map.json     {"0": "21407"}      file index -> code point
"""
import json
import pathlib

from datagen.errors import DatagenError

CHARSET_FILE = "chinese.txt"
CHAR_DICT_DIR = "char_dict"
CHAR_DICT = "char_dict.json"
ORD_2_INDEX = "ord_2_index_map.json"
INDEX_2_ORD = "index_2_ord_map.json"
BLANK_CLASS = 0


class Charset:
  """An ordered character set.  `chars[i]` has file index i and model class i + 1."""

  def __init__(self, chars):
    chars = list(chars)
    if not chars:
      raise DatagenError("the character set is empty")
    dup = sorted({c for c in chars if chars.count(c) > 1}) if len(set(chars)) != len(chars) else []
    if dup:
      raise DatagenError(f"the character set lists {''.join(dup)!r} more than once")
    for c in chars:
      if len(c) != 1 or c.isspace():
        raise DatagenError(f"character set entry {c!r} is not one visible character")
    self.chars = chars
    self._index = {c: i for i, c in enumerate(chars)}

  @classmethod
  def from_texts(cls, texts):
    """Sorted by code point: deterministic whatever the order of `texts`."""
    return cls(sorted({c for t in texts for c in t}))

  def __len__(self):
    return len(self.chars)

  def __contains__(self, c):
    return c in self._index

  def __eq__(self, other):
    return isinstance(other, Charset) and self.chars == other.chars

  @property
  def num_classes(self) -> int:
    """Model outputs: every character + the CTC blank (class 0)."""
    return len(self.chars) + 1

  def encode(self, text: str) -> list:
    """Text -> file indices (what the TFRecord `label` feature holds)."""
    try:
      return [self._index[c] for c in text]
    except KeyError as e:
      raise DatagenError(f"character {e.args[0]!r} (U+{ord(e.args[0]):04X}) of {text!r} "
                         "is not in the character set") from None

  def decode(self, indices) -> str:
    return "".join(self.chars[i] for i in indices)

  def missing(self, text: str) -> list:
    return [c for c in text if c not in self._index]

  # ---- files ------------------------------------------------------------------------------
  def write(self, data_dir) -> None:
    data_dir = pathlib.Path(data_dir)
    (data_dir / CHAR_DICT_DIR).mkdir(parents=True, exist_ok=True)
    (data_dir / CHARSET_FILE).write_text("".join(c + "\n" for c in self.chars), encoding="utf-8")
    char_dict = {str(ord(c)): c for c in self.chars}
    ord_2_index = {str(ord(c)): str(i) for i, c in enumerate(self.chars)}
    index_2_ord = {str(i): str(ord(c)) for i, c in enumerate(self.chars)}
    for name, obj in ((CHAR_DICT, char_dict), (ORD_2_INDEX, ord_2_index), (INDEX_2_ORD, index_2_ord)):
      with open(data_dir / CHAR_DICT_DIR / name, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=4)
        f.write("\n")

  @classmethod
  def read_txt(cls, path):
    """Reads a `chinese.txt` (one character per line)."""
    path = pathlib.Path(path)
    try:
      text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
      raise DatagenError(f"cannot read character list {path}: {e.strerror}") from None
    except UnicodeDecodeError:
      raise DatagenError(f"{path}: not UTF-8; save the character list as UTF-8") from None
    chars, seen = [], {}
    for n, line in enumerate(text.splitlines(), start=1):
      c = line.strip("\r\n")
      if c == "":
        continue
      if len(c) != 1 or c.isspace():
        raise DatagenError(f"{path}:{n}: {c!r} is not one visible character; chinese.txt holds one per line")
      if c in seen:
        raise DatagenError(f"{path}:{n}: {c!r} is listed twice (first on line {seen[c]})")
      seen[c] = n
      chars.append(c)
    if not chars:
      raise DatagenError(f"{path}: no characters (one per line); an empty character list reads nothing")
    return cls(chars)

  @classmethod
  def read(cls, data_dir):
    """Reads chinese.txt and checks the three char_dict maps agree with it."""
    data_dir = pathlib.Path(data_dir)
    if not (data_dir / CHARSET_FILE).exists():
      raise DatagenError(f"{data_dir} has no {CHARSET_FILE}; run `datagen charset --out {data_dir}`")
    cs = cls.read_txt(data_dir / CHARSET_FILE)
    maps_dir = data_dir / CHAR_DICT_DIR
    expected = {
        CHAR_DICT: {str(ord(c)): c for c in cs.chars},
        ORD_2_INDEX: {str(ord(c)): str(i) for i, c in enumerate(cs.chars)},
        INDEX_2_ORD: {str(i): str(ord(c)) for i, c in enumerate(cs.chars)},
    }
    for name, want in expected.items():
      path = maps_dir / name
      if not path.exists():
        continue  # a user's own data may carry chinese.txt only; the maps follow from it
      try:
        got = json.loads(path.read_text(encoding="utf-8"))
      except (OSError, ValueError) as e:
        raise DatagenError(f"{path}: unreadable JSON ({e})") from None
      if got != want:
        bad = next((k for k in want if got.get(k) != want[k]), next(iter(set(got) - set(want)), None))
        raise DatagenError(
            f"{path} disagrees with {data_dir / CHARSET_FILE} (first at key {bad!r}: "
            f"{got.get(bad)!r} vs {want.get(bad)!r}); regenerate with `datagen charset`")
    return cs

