"""The one exception type people see: a short message and no traceback (the CLI exits 2, the server answers 4xx).

Every error carries a `code` from CODES.  Whoever turns an error into an exit status or an HTTP status decides
from the code, never from the message text (the server's table is `serve.app.STATUS_BY_CODE`)."""

from __future__ import annotations

# code -> what it means.  Kept small: a new code is a decision, not a habit.
CODES = {
    "invalid_input": "an argument, option or recipe value is wrong",
    "not_found": "a file, folder or data set that was named does not exist",
    "invalid_model": "a model file that is not a digitrec model, or does not match its architecture",
    "invalid_image": "image bytes that cannot be decoded (corrupt, truncated, or not an image)",
    "unsupported_format": "an image format digitrec does not decode (only PNG, JPEG, GIF, BMP, TIFF, WebP)",
    "too_large": "a file, body or image over a size or pixel limit",
    "too_costly": "an image whose decoding or preprocessing would pass its time or memory budget",
    "no_ink": "a blank or uniform image: nothing to read",
    "missing_dependency": "an optional dependency is not installed",
    "data_unavailable": "a data set could not be fetched or read",
    "unavailable": "the service is busy or not ready; try again",
    "internal": "a check inside digitrec failed (a bug, or an export that does not match its model)",
}


class DigitrecError(Exception):
    """Bad input, missing data or an unusable model file, said in one line, with a code from CODES."""

    def __init__(self, message: str, code: str = "invalid_input") -> None:
        if code not in CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code


def missing_dependency(module: str, extra: str) -> DigitrecError:
    """The one-line error for an optional dependency that is not installed."""
    return DigitrecError(f"{module} is not installed: pip install 'digitrec[{extra}]'", code="missing_dependency")
