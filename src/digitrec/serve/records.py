"""What the routers read from a prediction or read record of `inference.predict`: its verdict, and the error it
stands for.  An error is told by its `error_code`, never by its message.  The routers read a typed record
(`inference.records`) as the JSON the CLI prints, its `to_dict()`."""

from __future__ import annotations

from digitrec.serve.http import ApiError


def verdict(record: dict) -> str:
    """digit, uncertain or not_a_digit for an answer; no_ink or error for an image without one."""
    if record.get("verdict"):
        return record["verdict"]
    if record.get("error_code") == "no_ink":
        return "no_ink"
    if record.get("error"):
        return "error"
    return "uncertain" if record.get("uncertain") else "digit"


def record_error(record: dict) -> ApiError | None:
    """The error of a record that has no answer (its code, its message as the detail), else None."""
    if record.get("error") is None:
        return None
    return ApiError(record.get("error_code") or "invalid_image", record["error"], verdict=verdict(record))
