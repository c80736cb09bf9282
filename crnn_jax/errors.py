"""The exception the command-line tools print as one line (no traceback)."""


class UserError(Exception):
  """Bad input: the message names the file/key/value and what to do."""
