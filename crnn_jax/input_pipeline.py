"""tf.data over the datagen TFRecords: per-process shards -> decode -> resize -> width buckets.

Each process reads its own shards (tfds `InputContext`), so the shard count (a multiple of 8)
must divide by the process count.  Images are resized to `input.height` keeping their aspect
ratio, then right-padded into the smallest width bucket that holds them: a few compiled shapes
instead of one per batch.  Wider images are squeezed into the largest bucket.

Host batches are numpy dicts (shapes for a local batch of b):
  image    [b, H, Wb, 1] float32 in [0, 1]     Wb = the bucket width
  frames   [b] int32   valid CTC frames = resized width // model width stride
  label    [b, L] int32 model classes (file index + 1), 0-padded; L = input.max_label_length
  label_len [b] int32
  feasible [b] bool    frames >= len + repeated neighbours, and 0 < len <= L
  weight   [b] float32 1 for real examples, 0 for padding rows (last eval batch)
  font, text [b] bytes
"""
import dataclasses

import numpy as np

JPEG_DCT_METHOD = "INTEGER_ACCURATE"  # exact libjpeg pixels (tfds' default decoder is the fast IDCT)


def _tf():
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")  # TensorFlow stays off any GPU: JAX owns it
  return tf


@dataclasses.dataclass(frozen=True)
class PipelineSpec:
  height: int
  buckets: tuple
  stride: int
  max_label_length: int
  local_batch_size: int


def _builder(data_dir, split):
  _tf()
  import tensorflow_datasets as tfds
  from crnn_jax.errors import UserError
  import pathlib
  if not pathlib.Path(data_dir, "dataset_info.json").exists():
    raise UserError(f"DATA_DIR {data_dir} is missing or empty (no dataset_info.json); "
                    f"make it with `datagen build --out {data_dir}` or pass --config.data_dir")
  builder = tfds.builder_from_directory(str(data_dir))
  if split not in builder.info.splits:
    raise UserError(f"DATA_DIR {data_dir} has no split {split!r} (it has {list(builder.info.splits)})")
  return builder


def check_shards(data_dir, split, process_count):
  """The split's shard count; raises UserError if `process_count` processes cannot share it."""
  from crnn_jax.errors import UserError
  shards = _builder(data_dir, split).info.splits[split].num_shards
  if process_count > 1 and shards % process_count:
    raise UserError(f"split {split!r} of {data_dir} has {shards} shards, which {process_count} processes cannot "
                    "share evenly; use a process count that divides it, or rebuild the data (datagen writes a "
                    "multiple of 8 shards; `--examples-per-shard` sets how many)")
  return shards


def process_files(data_dir, split, process_index=0, process_count=1):
  """This process's shard files: shard i belongs to process i % process_count."""
  check_shards(data_dir, split, process_count)
  files = [str(f) for f in _builder(data_dir, split).info.splits[split].filepaths]
  return files[process_index::process_count]


def open_split(data_dir, split, process_index=0, process_count=1, shuffle_seed=None):
  """tf.data of raw examples of this process's shards (image left as JPEG bytes)."""
  tf = _tf()
  import tensorflow_datasets as tfds
  builder = _builder(data_dir, split)
  check_shards(data_dir, split, process_count)
  read_config = tfds.ReadConfig(
      shuffle_seed=shuffle_seed, interleave_cycle_length=4,
      input_context=tf.distribute.InputContext(num_input_pipelines=process_count,
                                               input_pipeline_id=process_index))
  return builder.as_dataset(split=split, shuffle_files=shuffle_seed is not None, read_config=read_config,
                            decoders={"image": tfds.decode.SkipDecoding()})


# Element keys for the stateless augmentation: (epoch * process_count + process) * 2**28 + i.
_EPOCH_STRIDE = 2 ** 28


def _knob(augment, name):
  """An on-the-fly augmentation knob, 0 when the config predates it (or there is no augment)."""
  return float(augment.get(name, 0.0)) if augment is not None else 0.0


def _gaussian_blur(tf, x, sigma):
  """[H, W, 1] float image blurred by a Gaussian of std `sigma` (a scalar tensor, > 0); 7 taps."""
  t = tf.range(-3, 4, dtype=tf.float32)
  k = tf.exp(-0.5 * tf.square(t / sigma))
  k /= tf.reduce_sum(k)
  img = tf.pad(x[None], [[0, 0], [3, 3], [3, 3], [0, 0]], mode="SYMMETRIC")
  img = tf.nn.conv2d(img, tf.reshape(k, [7, 1, 1, 1]), 1, "VALID")
  return tf.nn.conv2d(img, tf.reshape(k, [1, 7, 1, 1]), 1, "VALID")[0]


def ramp_factor(tf, index, ramp_examples, process_count):
  """How far the on-the-fly degradations are switched on for the element with key `index`:
  0 -> 1 linearly over the first `ramp_examples` examples of the whole run (all processes'
  epoch-0 elements i count as i * process_count), 1 from epoch 1 on.  A pure function of the key,
  so a resumed run ramps exactly as an uninterrupted one."""
  stream = index // _EPOCH_STRIDE
  i = tf.cast(index % _EPOCH_STRIDE, tf.float32)
  first_epoch = stream < process_count
  return tf.where(first_epoch, tf.minimum(1.0, i * float(process_count) / float(ramp_examples)), 1.0)


def _degrade(tf, x, augment, sseed, scale):
  """On-the-fly degradations of a resized [H, W, 1] float image in [0, 1]: inversion (light on
  dark), blur, low resolution, noise, JPEG re-encoding, each with its own probability (x `scale`,
  the ramp) and stateless key; a knob at 0 adds no op."""
  def maybe(k, prob, fn, value):
    if prob <= 0:
      return value
    on = tf.random.stateless_uniform([], sseed + k) < prob * scale
    return tf.cond(on, lambda: fn(value), lambda: value)

  x = maybe(21, _knob(augment, "invert_prob"), lambda v: 1.0 - v, x)
  h, w = tf.shape(x)[0], tf.shape(x)[1]
  blur_max = max(0.3, _knob(augment, "blur_max"))
  x = maybe(10, _knob(augment, "blur_prob"), lambda v: _gaussian_blur(
      tf, v, tf.random.stateless_uniform([], sseed + 11, 0.3, blur_max)), x)

  def lowres(v):
    f = tf.random.stateless_uniform([], sseed + 13, _knob(augment, "lowres_min"), 0.9)
    small = tf.maximum(1, tf.cast(tf.cast(tf.stack([h, w]), tf.float32) * f, tf.int32))
    return tf.image.resize(tf.image.resize(v, small, antialias=True), [h, w])
  x = maybe(12, _knob(augment, "lowres_prob"), lowres, x)
  x = maybe(14, _knob(augment, "noise_prob"), lambda v: tf.clip_by_value(
      v + tf.random.stateless_normal(tf.shape(v), sseed + 16) *
      tf.random.stateless_uniform([], sseed + 15, 0.01, max(0.01, _knob(augment, "noise_max"))), 0.0, 1.0), x)

  def jpeg(v):
    q = tf.random.stateless_uniform([], sseed + 18, int(max(1, _knob(augment, "jpeg_min"))), 96, dtype=tf.int32)
    return tf.reshape(tf.image.adjust_jpeg_quality(v, q), tf.shape(v))
  return maybe(17, _knob(augment, "jpeg_prob"), jpeg, x)


def preprocess_fn(spec: PipelineSpec, augment=None, seed=0, process_count=1):
  """Returns a tf function (index, example) -> padded example (see module docstring).

  `augment` (config.input.augment; None for evaluation): per example, keyed statelessly by
  (seed, index), so a resumed run or another process sees the same pixels:
    pad_prob/pad_max   extra top/bottom margin, U(0, pad_max) x height each, in the border's grey
                       (text that fills less of the line's height)
    width_jitter       resized width x U(1 - j, 1 + j)
    contrast, brightness
    invert_prob, blur_prob/blur_max, lowres_prob/lowres_min, noise_prob/noise_max (std, in [0, 1] units),
    jpeg_prob/jpeg_min on the resized image: every epoch sees new degradations on top of datagen's.
    ramp_steps         the probabilities of pad/invert/blur/lowres/noise/jpeg grow from 0 to their value over
                       the run's first ramp_steps x batch_size examples (`ramp_factor`): the model
                       leaves CTC's early plateau on easier images (BENCHMARKS.md, "Robust reading").
  """
  tf = _tf()
  buckets = tf.constant(spec.buckets, tf.int32)
  max_w = spec.buckets[-1]

  ramp_examples = _knob(augment, "ramp_steps") * spec.local_batch_size * process_count

  def fn(index, ex):
    img = tf.io.decode_jpeg(ex["image"], channels=1, dct_method=JPEG_DCT_METHOD)
    sseed = tf.stack([tf.cast(seed, tf.int64), tf.cast(index, tf.int64)])
    scale = (ramp_factor(tf, tf.cast(index, tf.int64), ramp_examples, process_count) if ramp_examples > 0
             else tf.constant(1.0))
    pad_prob = _knob(augment, "pad_prob")
    if pad_prob > 0:
      def pad(im):
        f = tf.random.stateless_uniform([2], sseed + 20, 0.0, _knob(augment, "pad_max"))
        t_b = tf.cast(f * tf.cast(tf.shape(im)[0], tf.float32), tf.int32)
        border = tf.cast(tf.round(tf.reduce_mean(tf.cast(tf.concat([im[:1], im[-1:]], 0), tf.float32))), tf.uint8)
        return tf.pad(im, [[t_b[0], t_b[1]], [0, 0], [0, 0]], constant_values=border)
      img = tf.cond(tf.random.stateless_uniform([], sseed + 19) < pad_prob * scale, lambda: pad(img), lambda: img)
    h = tf.shape(img)[0]
    w = tf.shape(img)[1]
    new_w = tf.cast(tf.round(tf.cast(w, tf.float32) * spec.height / tf.cast(h, tf.float32)), tf.float32)
    if augment is not None and augment.width_jitter > 0:
      new_w *= tf.random.stateless_uniform([], sseed, 1 - augment.width_jitter, 1 + augment.width_jitter)
    new_w = tf.clip_by_value(tf.cast(new_w, tf.int32), spec.stride, max_w)
    x = tf.image.resize(tf.cast(img, tf.float32) / 255.0, [spec.height, new_w], antialias=True)
    if augment is not None and (augment.contrast > 0 or augment.brightness > 0):
      c = tf.random.stateless_uniform([], sseed + 1, 1 - augment.contrast, 1 + augment.contrast)
      b = tf.random.stateless_uniform([], sseed + 2, -augment.brightness, augment.brightness)
      # (x - mean) * c + mean + b as one scale and one offset, in float64: x * c is exact there,
      # so the result cannot depend on how TensorFlow's graph optimiser groups or fuses the adds
      # (it did: the chain of adds gave images 1 ulp apart from process to process).
      c64 = tf.cast(c, tf.float64)
      offset = tf.cast(tf.reduce_mean(x), tf.float64) * (1.0 - c64) + tf.cast(b, tf.float64)
      x = tf.cast(tf.clip_by_value(tf.cast(x, tf.float64) * c64 + offset, 0.0, 1.0), tf.float32)
    if augment is not None:
      x = _degrade(tf, x, augment, sseed, scale)
    bucket = tf.argmax(tf.cast(buckets >= new_w, tf.int32), output_type=tf.int32)
    width = tf.gather(buckets, bucket)
    fill = tf.reduce_mean(x)  # pad with the image's mean grey: no hard edge at the end
    x = tf.pad(x, [[0, 0], [0, width - new_w], [0, 0]], constant_values=fill)
    label = tf.cast(ex["label"], tf.int32) + 1  # file index -> model class (0 = blank)
    n = tf.shape(label)[0]
    repeats = tf.reduce_sum(tf.cast(label[1:] == label[:-1], tf.int32))
    frames = new_w // spec.stride
    feasible = (n > 0) & (n <= spec.max_label_length) & (frames >= n + repeats)
    label = label[:spec.max_label_length]
    label = tf.pad(label, [[0, spec.max_label_length - tf.shape(label)[0]]])
    return {"image": x, "frames": frames, "label": label, "label_len": tf.minimum(n, spec.max_label_length),
            "feasible": feasible, "bucket": bucket, "weight": tf.constant(1.0),
            "font": ex["font"], "text": ex["text"]}
  return fn


def _grouped(ds, spec, drop_remainder):
  tf = _tf()
  return ds.group_by_window(
      key_func=lambda ex: tf.cast(ex["bucket"], tf.int64),
      reduce_func=lambda _, w: w.batch(spec.local_batch_size, drop_remainder=drop_remainder),
      window_size=spec.local_batch_size)


def train_dataset(data_dir, spec, augment, seed, process_index=0, process_count=1,
                  shuffle_buffer=4096, split="train", skip_damaged=False):
  """Endless, shuffled, bucketed local batches.

  The order is a pure function of (seed, epoch, process): epoch e of process p reads p's shards
  in an order drawn from (seed, e, p), permutes their records in blocks of `shuffle_buffer`
  with keys drawn from the same, and augments element i with the stateless key (seed, e, p, i).  Restarting a run therefore
  replays the same stream; the trainer also checkpoints the iterator itself (exact resume).
  `skip_damaged`: a shard is read up to its first damaged record and its rest is left out (tf.data
  cannot find the next record past a bad length); `damaged_shards` counts what that leaves out.
  """
  tf = _tf()
  import tensorflow_datasets as tfds
  features = _builder(data_dir, split).info.features
  files = tf.constant(process_files(data_dir, split, process_index, process_count))
  n_files = int(files.shape[0])
  seed, p, n_proc = int(seed), int(process_index), int(process_count)

  def epoch(e):
    stream = e * n_proc + p
    order = tf.random.experimental.stateless_shuffle(files, seed=tf.stack([tf.constant(seed, tf.int64), stream]))
    read = (lambda f: tf.data.TFRecordDataset(f).ignore_errors()) if skip_damaged else tf.data.TFRecordDataset
    ds = tf.data.Dataset.from_tensor_slices(order).interleave(read, cycle_length=min(4, n_files), block_length=8)
    # A stateless block shuffle (tf's shuffle() with a per-epoch seed is not checkpointable):
    # blocks of `shuffle_buffer` records, each permuted by (seed, epoch, process, block).
    ds = ds.batch(shuffle_buffer).enumerate().map(
        lambda j, recs: tf.random.experimental.stateless_shuffle(
            recs, seed=tf.stack([tf.constant(seed, tf.int64), stream * _EPOCH_STRIDE + j])))
    return ds.unbatch().enumerate().map(lambda i, rec: (stream * _EPOCH_STRIDE + i, rec))

  def decode(key, rec):
    return key, features.deserialize_example(rec, decoders={"image": tfds.decode.SkipDecoding()})

  ds = tf.data.Dataset.range(2 ** 31).flat_map(epoch)
  ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.map(preprocess_fn(spec, augment, seed, n_proc), num_parallel_calls=tf.data.AUTOTUNE)
  ds = _grouped(ds, spec, drop_remainder=True).prefetch(4)
  options = tf.data.Options()
  options.deterministic = True
  return ds.with_options(options)


def eval_dataset(data_dir, spec, split, process_index=0, process_count=1, max_examples=None, skip_damaged=False):
  """`skip_damaged`: each shard read up to its first damaged record (train_dataset's)."""
  tf = _tf()
  if skip_damaged:
    import tensorflow_datasets as tfds
    features = _builder(data_dir, split).info.features
    files = process_files(data_dir, split, process_index, process_count)
    ds = tf.data.Dataset.from_tensor_slices(files).interleave(
        lambda f: tf.data.TFRecordDataset(f).ignore_errors(), cycle_length=min(4, len(files)), block_length=16)
    ds = ds.map(lambda rec: features.deserialize_example(rec, decoders={"image": tfds.decode.SkipDecoding()}))
  else:
    ds = open_split(data_dir, split, process_index, process_count)
  if max_examples:
    ds = ds.take(max_examples // process_count)
  ds = ds.enumerate().map(preprocess_fn(spec), num_parallel_calls=tf.data.AUTOTUNE)
  ds = _grouped(ds, spec, drop_remainder=False).prefetch(2)
  options = tf.data.Options()
  options.deterministic = True
  return ds.with_options(options)


def to_numpy(batch):
  return {k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in batch.items()}


def pad_rows(batch, size):
  """Pads a short (last) batch to `size` rows with weight-0 copies of its first row."""
  n = len(batch["weight"])
  if n == size:
    return batch
  out = {}
  for k, v in batch.items():
    filler = np.repeat(v[:1], size - n, axis=0)
    if k == "weight":
      filler = np.zeros_like(filler)
    if k == "feasible":
      filler = np.zeros_like(filler)
    out[k] = np.concatenate([v, filler], axis=0)
  return out


def pad_width(batch, width):
  """Right-pads a batch's images to `width` (another process's bucket this step)."""
  img = batch["image"]
  if img.shape[2] == width:
    return batch
  fill = img.mean(axis=(1, 2, 3), keepdims=True)
  pad = np.broadcast_to(fill, img.shape[:2] + (width - img.shape[2], 1))
  return dict(batch, image=np.concatenate([img, pad], axis=2))


def find_corrupted_record(files):
  """Reads each TFRecord file through to its end -> (file, the error's first line) for the first one
  that fails (a damaged record: its length or CRC does not match), else None.  For naming the file
  when tf.data reports `corrupted record at N` without one."""
  import tensorflow as tf
  for f in files:
    try:
      for _ in tf.data.TFRecordDataset(f):
        pass
    except (tf.errors.DataLossError, tf.errors.OutOfRangeError, tf.errors.InvalidArgumentError) as e:
      return f, (str(e.message if hasattr(e, "message") else e).strip().splitlines() or [""])[0][:200]
  return None


def damaged_shards(data_dir, split, process_index=0, process_count=1):
  """This process's shards of `split` read through -> [(file, records read, records the shard holds,
  the error's first line)] for each that stops at a damaged record, in file order."""
  import tensorflow as tf
  info = _builder(data_dir, split).info.splits[split]
  files = [str(f) for f in info.filepaths]
  lengths = list(info.shard_lengths)
  out = []
  for i in range(process_index, len(files), process_count):
    n = 0
    try:
      for _ in tf.data.TFRecordDataset(files[i]):
        n += 1
    except (tf.errors.DataLossError, tf.errors.OutOfRangeError, tf.errors.InvalidArgumentError) as e:
      first = (str(e.message if hasattr(e, "message") else e).strip().splitlines() or [""])[0][:200]
      out.append((files[i], n, int(lengths[i]), first))
  return out


def damaged_record_where(error, files, what):
  """A tf.data DataLossError ("corrupted record at N", no file named) -> "FILE (its error)" for the
  first of `files` that fails to read through, or a phrase naming the shards and the error."""
  found = find_corrupted_record(files)
  return f"{found[0]} ({found[1]})" if found else f"one of {len(files)} {what} shards ({str(error).strip()[:200]})"

