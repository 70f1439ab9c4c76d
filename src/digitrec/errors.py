"""The one exception type people see: a short message and no traceback (the CLI exits 2, the server answers 4xx)."""


class DigitrecError(Exception):
    """Bad input, missing data or an unusable model file, said in one line."""
