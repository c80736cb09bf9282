"""preview.png: a grid of samples read back from the TFRecords, each with its label and font."""
import io
import pathlib

from PIL import Image, ImageDraw

from datagen import fonts as fonts_lib

CELL_W, IMG_H, LABEL_H, PAD = 460, 48, 40, 8


def read_examples(data_dir, split, n):
  """The first `n` examples of a split as dicts (image as PIL, text, font, ...)."""
  import tensorflow_datasets as tfds
  builder = tfds.builder_from_directory(str(data_dir))
  if split not in builder.info.splits or n <= 0:
    return []
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          decoders={"image": tfds.decode.SkipDecoding()}).take(n)
  out = []
  for ex in tfds.as_numpy(ds):
    out.append({"image": Image.open(io.BytesIO(ex["image"])), "text": ex["text"].decode(),
                "font": ex["font"].decode(), "source": ex["source"].decode(), "split": split})
  return out


def make_preview(data_dir, per_split=(("train", 16), ("validation", 6), ("test", 6)), columns=2):
  data_dir = pathlib.Path(data_dir)
  items = [ex for split, n in per_split for ex in read_examples(data_dir, split, n)]
  rows = -(-len(items) // columns)
  sheet = Image.new("RGB", (columns * (CELL_W + PAD) + PAD, rows * (IMG_H + LABEL_H + PAD) + PAD),
                    (255, 255, 255))
  draw = ImageDraw.Draw(sheet)
  label_font = fonts_lib.load_font(fonts_lib.default_fonts()[0], 18)
  for k, ex in enumerate(items):
    r, c = divmod(k, columns)
    x, y = PAD + c * (CELL_W + PAD), PAD + r * (IMG_H + LABEL_H + PAD)
    im = ex["image"].convert("RGB")
    w = min(CELL_W, max(1, round(im.width * IMG_H / im.height)))
    sheet.paste(im.resize((w, IMG_H), Image.Resampling.BILINEAR), (x, y))
    draw.text((x, y + IMG_H + 2), ex["text"], font=label_font, fill=(0, 0, 0))
    tag = f"{ex['split']} · {ex['font']} · {ex['source']}"
    draw.text((x, y + IMG_H + 24), tag, fill=(120, 120, 120))
  path = data_dir / "preview.png"
  sheet.save(path)
  return path, len(items)
