"""The one exception type the CLI turns into a one-line message (no traceback)."""


class DatagenError(Exception):
  """Bad input or state: the message names the file/line/value and says what to do."""


def is_disk_full(e: BaseException) -> bool:
  """An exception (or one in its chain) from a full disk: OSError ENOSPC, or TensorFlow's
  ResourceExhausted/Unknown error whose text says so (TFRecordWriter, tf.io.gfile)."""
  import errno
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
      return True
    if "No space left on device" in str(e) or "ENOSPC" in str(e):
      return True
    e = e.__cause__ or e.__context__
  return False
