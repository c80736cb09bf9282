"""Replacing one generated section of BENCHMARKS.md, between its begin/end markers."""
import pathlib
import re


def replace_section(path, begin, end, section, heading):
  """`section` must start with `begin` and end with `end`; a new one goes under `heading`."""
  path = pathlib.Path(path)
  text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
  if begin in text:
    text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: section, text, flags=re.S)
  else:
    text = text.rstrip("\n") + f"\n\n## {heading}\n\n" + section + "\n"
  path.write_text(text, encoding="utf-8")


def emit(lines, write, begin, end, heading):
  """Prints a generated section (its lines, `begin` first and `end` last) and, with `write` (a
  path), replaces that section of the file."""
  text = "\n".join(lines)
  print(text)
  if write:
    replace_section(write, begin, end, text, heading)
  return text
