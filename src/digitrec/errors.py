"""The one exception type people see: a short message and no traceback (the CLI exits 2, the server answers 4xx).

Every error carries a `code` from CODES, the one table of what each code means, which HTTP status it gets and
which exit status the CLI ends with.  Whoever turns an error into a status decides from the code
(`http_status`, `exit_status`), never from the message text.  Library messages say what is wrong; the CLI
adds which flag to change.
"""

from __future__ import annotations

from typing import NamedTuple


class Code(NamedTuple):
    meaning: str
    http_status: int
    exit_status: int = 2  # the CLI's exit status for a command that stops on this error (1: some inputs failed)


# code -> what it means, and its statuses.  Kept small: a new code is a decision, not a habit.  The codes below
# the blank line are the server's own (request bodies, forms, JSON), never raised by the library.
CODES: dict[str, Code] = {
    "invalid_input": Code("an argument, option or recipe value is wrong", 422),
    "not_found": Code("a file, folder or data set that was named does not exist", 404),
    "invalid_model": Code("a model file that is not a digitrec model, or does not match its architecture", 422),
    "invalid_image": Code("image bytes that cannot be decoded (corrupt, truncated, or not an image)", 422),
    "unsupported_format": Code("an image format digitrec does not decode (only PNG, JPEG, GIF, BMP, TIFF, WebP)",
                               415),
    "too_large": Code("a file, body or image over a size or pixel limit", 413),
    "too_costly": Code("an image whose decoding or preprocessing would pass its time or memory budget", 422),
    "no_ink": Code("a blank or uniform image: nothing to read", 422),
    "not_calibrated": Code("a model without the held-out tables that --max-error or --sets need", 422),
    "missing_dependency": Code("an optional dependency is not installed", 503),
    "data_unavailable": Code("a data set could not be fetched or read", 422),
    "unavailable": Code("the service is busy or not ready; try again", 503),
    "internal": Code("a check inside digitrec failed (a bug, or an export that does not match its model)", 422),

    "too_many_images": Code("a request with more images than the server takes at once", 413),
    "unsupported_media_type": Code("a request body of a content type the endpoint does not take", 415),
    "empty_body": Code("a request without a body", 422),
    "invalid_json": Code("a JSON body that does not parse", 422),
    "invalid_base64": Code("an image in a JSON body that is not base64", 422),
    "invalid_multipart": Code("a multipart form that does not parse", 422),
    "missing_file": Code("a multipart form without the image field", 422),
    "invalid_request": Code("a query parameter or body field out of its range", 422),
    "request_timeout": Code("the request body did not arrive in time", 408),
    "method_not_allowed": Code("an HTTP method the endpoint does not answer", 405),
    "client_closed": Code("the client went away before the answer", 499),
}


class DigitrecError(Exception):
    """Bad input, missing data or an unusable model file, said in one line, with a code from CODES.  `param`
    names the argument or recipe field to change, when there is one: the CLI turns it into its flag."""

    def __init__(self, message: str, code: str = "invalid_input", param: str | None = None) -> None:
        if code not in CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code, self.param = code, param


def http_status(code: str) -> int:
    """The HTTP status of an error code (a code missing from CODES is a bug: 500)."""
    return CODES[code].http_status if code in CODES else 500


def exit_status(code: str) -> int:
    """The CLI's exit status for a command stopped by an error with this code."""
    return CODES[code].exit_status if code in CODES else 2


def missing_dependency(module: str, extra: str) -> DigitrecError:
    """The one-line error for an optional dependency that is not installed."""
    return DigitrecError(f"{module} is not installed: pip install 'digitrec[{extra}]'", code="missing_dependency")
