"""TFRecord shards written through tensorflow-datasets: the feature spec lives here, once.

DATA_DIR loads with `tfds.builder_from_directory(DATA_DIR)`; shards are named
`crnn_poem-{split}.tfrecord-{i:05d}-of-{n:05d}` (tfds' default template) and every split has a
multiple of 8 shards, so 1, 2, 4 or 8 hosts each read whole shards.

One `tf.train.Example` per image (tfds features):
  image    JPEG bytes, exactly as rendered (or as imported); [H, W, C] uint8 when decoded,
           C = 1 (grayscale, default) or 3 (`--color`)
  text     the label, UTF-8
  label    int64 file indices into chinese.txt (model class = index + 1, blank = 0)
  font     font name (file stem, `#face` for a collection face; `import` for imported images)
  variant  int32, which of the line's rendered variants this is
  line_id  int64, corpus line number (balance lines are numbered after the corpus)
  source   "corpus" | "balance" | "import"

Decoding: tfds' own Image decoding uses libjpeg's fast IDCT, a few grey levels off the JPEG's
exact pixels.  Read with `decoders={"image": tfds.decode.SkipDecoding()}` and decode with
`tf.io.decode_jpeg(..., dct_method=JPEG_DCT_METHOD)` to get exactly what PIL (and the renderer)
decode from the same bytes.
"""
import os
import pathlib

import numpy as np

DATASET_NAME = "crnn_poem"
JPEG_DCT_METHOD = "INTEGER_ACCURATE"
SHARD_MULTIPLE = 8


def features(channels: int = 1):
  import tensorflow_datasets as tfds
  return tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=(None, None, channels), encoding_format="jpeg"),
      "text": tfds.features.Text(),
      "label": tfds.features.Sequence(np.int64),
      "font": tfds.features.Text(),
      "variant": tfds.features.Tensor(shape=(), dtype=np.int32),
      "line_id": tfds.features.Tensor(shape=(), dtype=np.int64),
      "source": tfds.features.Text(),
  })


def num_shards(num_examples: int, examples_per_shard: int) -> int:
  """Smallest multiple of 8 shards that keeps shards at most `examples_per_shard` long."""
  groups = max(1, -(-num_examples // (SHARD_MULTIPLE * examples_per_shard)))
  return SHARD_MULTIPLE * groups


def shard_path(data_dir, split: str, shard: int, total: int) -> pathlib.Path:
  return pathlib.Path(data_dir) / f"{DATASET_NAME}-{split}.tfrecord-{shard:05d}-of-{total:05d}"


class SplitWriter:
  """Writes one split's examples in order into `total` shards.

  Shard s holds the examples whose *planned* position falls in [s*P/total, (s+1)*P/total), so
  shard boundaries are fixed before rendering and examples rejected later leave the other
  shards unchanged: the bytes do not depend on how the work was spread over processes.
  """

  def __init__(self, data_dir, split, planned: int, total: int, channels: int):
    import tensorflow as tf
    self._tf = tf
    self.data_dir, self.split, self.planned, self.total = data_dir, split, planned, total
    self.features = features(channels)
    self.shard_lengths = [0] * total
    self.num_bytes = 0
    self._shard = -1
    self._writer = None

  def _open(self, shard):
    if self._writer is not None:
      self._writer.close()
    self._shard = shard
    self._writer = self._tf.io.TFRecordWriter(str(shard_path(self.data_dir, self.split, shard, self.total)))

  def write(self, position: int, example: dict) -> None:
    shard = position * self.total // max(1, self.planned)
    while self._shard < shard:
      self._open(self._shard + 1)
    # Re-serialized with map keys sorted: protobuf writes a tf.train.Example's feature map in a
    # per-process hash order otherwise, so the same examples gave other shard bytes in every run.
    data = self._tf.train.Example.FromString(self.features.serialize_example(example)).SerializeToString(
        deterministic=True)
    self._writer.write(data)
    self.shard_lengths[shard] += 1
    self.num_bytes += len(data)

  def close(self):
    while self._shard < self.total - 1:  # trailing shards whose examples were all rejected
      self._open(self._shard + 1)
    self._writer.close()
    self._writer = None

  def split_info(self):
    import tensorflow_datasets as tfds
    return tfds.core.SplitInfo(name=self.split, shard_lengths=list(self.shard_lengths),
                               num_bytes=self.num_bytes)


def write_metadata(data_dir, split_infos, channels: int, description: str) -> None:
  """dataset_info.json + features.json, so tfds.builder_from_directory(data_dir) works."""
  import tensorflow_datasets as tfds
  template = tfds.core.ShardedFileTemplate(
      data_dir=os.fspath(data_dir), dataset_name=DATASET_NAME, filetype_suffix="tfrecord")
  tfds.folder_dataset.write_metadata(
      data_dir=os.fspath(data_dir), features=features(channels), split_infos=split_infos,
      filename_template=template, version="1.0.0", description=description, check_data=True)


def remove_shards(data_dir, split="*") -> int:
  """Deletes earlier shards of this dataset name (a rebuild with other counts leaves none)."""
  n = 0
  for p in pathlib.Path(data_dir).glob(f"{DATASET_NAME}-{split}.tfrecord-*-of-*"):
    p.unlink()
    n += 1
  return n
