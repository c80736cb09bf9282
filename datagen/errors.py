"""The one exception type the CLI turns into a one-line message (no traceback)."""


class DatagenError(Exception):
  """Bad input or state: the message names the file/line/value and says what to do."""
