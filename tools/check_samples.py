"""Checks crnn-predict's reading of docs/samples against the text in each file's name.

    python tools/check_samples.py runs/poem_cpu/samples.tsv

Each sample's name starts with the text it shows (`风华正茂_original_test_02.jpg`).  Prints one
line per sample (ok / WRONG with both texts) and exits 1 if any is misread: the last step of
`make main`, so a model that misreads the original example's own test image is not quietly
accepted.
"""
import pathlib
import sys


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  if len(argv) != 1:
    print(__doc__, file=sys.stderr)
    return 2
  path = pathlib.Path(argv[0])
  if not path.exists():
    print(f"check_samples: {path} does not exist; run crnn-predict --output {path} docs/samples first",
          file=sys.stderr)
    return 2
  wrong = total = 0
  for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
    if not line.strip():
      continue
    name, sep, text = line.partition("\t")
    if not sep:
      print(f"check_samples: {path}:{n}: expected path<TAB>text, got {line!r}", file=sys.stderr)
      return 2
    truth = pathlib.Path(name).name.split("_")[0]
    total += 1
    ok = text == truth
    wrong += not ok
    print(f"{'ok   ' if ok else 'WRONG'} {pathlib.Path(name).name}: read {text!r}" + ("" if ok else f", shows {truth!r}"))
  print(f"{total - wrong} of {total} samples read right")
  return 1 if wrong or not total else 0


if __name__ == "__main__":
  sys.exit(main())
