"""The HTTP plumbing under the routers: errors and their answers, request bodies with their limits, and the
OpenAPI description of an image body.

Every error the app answers is JSON `{"error": code, "detail": text}` (plus `verdict` for an image that was
read but is no digit); its status comes from the code, through `digitrec.errors.http_status`, never from the
message.  (A request the HTTP parser cannot read gets uvicorn's own plain-text 400.)

A body is read with a deadline and refused (413) as soon as it passes the byte limit; JSON and multipart are
parsed in a worker thread, after a cheap upper bound on the number of items.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from digitrec.errors import http_status

MAX_BATCH = 256
BODY_TIMEOUT_S = 10.0  # a body must arrive within this (slow uploads are cut off: 408)
IMAGE_TYPES = ("image/", "application/octet-stream")


# --- errors ---------------------------------------------------------------------------------------------------

class ApiError(Exception):
    """An error answered as `{"error": code, "detail": detail[, "verdict": verdict]}`, its status from the code."""

    def __init__(self, code: str, detail: str, verdict: str | None = None) -> None:
        super().__init__(detail)
        self.code, self.detail, self.verdict = code, detail, verdict
        self.status = http_status(code)


def error_response(code: str, detail: str, status: int | None = None, verdict: str | None = None) -> JSONResponse:
    """The error answer; `status` only where it does not come from the code (an unexpected error's 500, or a
    status Starlette chose).  A 503 says when to try again."""
    status = status or http_status(code)
    body = {"error": code, "detail": detail}
    if verdict:
        body["verdict"] = verdict
    headers = {"Retry-After": "1"} if status == 503 else None
    return JSONResponse(body, status_code=status, headers=headers)


async def _api_error(request: Request, e: ApiError) -> JSONResponse:
    return error_response(e.code, e.detail, e.status, e.verdict)


async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
    return error_response(code, str(e.detail), e.status_code)


async def _unexpected_error(request: Request, e: Exception) -> JSONResponse:
    # (the guard in middleware.py answers and logs errors from the routes; this is for errors outside it)
    return error_response("internal", "internal server error", 500)


async def _validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
    return error_response("invalid_request", str(e.errors()[:3])[:500])


def install_error_handlers(app: FastAPI) -> None:
    """Every error, ours and the framework's, answered in the `{"error", "detail"}` form."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
    app.add_exception_handler(RequestValidationError, _validation_error)


# --- request bodies ---------------------------------------------------------------------------------------------

async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes (declared or actually sent), and
    with 408 when it takes longer than BODY_TIMEOUT_S to arrive."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError("too_large", f"body of {declared} bytes is over the limit of {limit} bytes")
    chunks, size = [], 0
    deadline = time.monotonic() + BODY_TIMEOUT_S
    stream = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), max(0.0, deadline - time.monotonic()))
        except StopAsyncIteration:
            return b"".join(chunks)
        except asyncio.TimeoutError:
            raise ApiError("request_timeout", f"the body did not arrive within {BODY_TIMEOUT_S:g} s") from None
        size += len(chunk)
        if size > limit:
            raise ApiError("too_large", f"body is over the limit of {limit} bytes")
        chunks.append(chunk)


def _b64(text) -> bytes:
    if not isinstance(text, str):
        raise ApiError("invalid_json", "images must be base64 strings")
    if text.startswith("data:"):  # a data URL, as canvas.toDataURL() makes
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError("invalid_base64", "image data is not valid base64") from None


def parse_json(body: bytes, many: bool) -> list[tuple[str, bytes]]:
    # Items are separated by commas and a data URL holds one: more commas than this means too many images,
    # found before a single string is made.
    if body.count(b",") > 2 * MAX_BATCH + 16:
        raise ApiError("too_many_images", f"more than {MAX_BATCH} images in one request")
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise ApiError("invalid_json", "the body is not valid JSON") from None
    if not isinstance(document, dict):
        raise ApiError("invalid_json", 'expected an object: {"image": "<base64>"} or {"images": [...]}')
    if many and isinstance(document.get("images"), list):
        if len(document["images"]) > MAX_BATCH:
            raise ApiError("too_many_images", f"{len(document['images'])} images; at most {MAX_BATCH} per request")
        return [(f"image{i}", _b64(v)) for i, v in enumerate(document["images"])]
    if "image" in document:
        return [("image", _b64(document["image"]))]
    expected = '{"image": "<base64>"}' + (' or {"images": [...]}' if many else "")
    raise ApiError("invalid_json", f"expected {expected}")


class _FormParts:
    """The parts of a multipart body as python-multipart's parser calls back: each part's headers and data;
    parts are counted as the parser meets them and refused past MAX_BATCH (+ a few that are not files)."""

    def __init__(self) -> None:
        self.parts: list[dict] = []
        self.field = b""

    def callbacks(self) -> dict:
        return {"on_part_begin": self.on_part_begin, "on_header_field": self.on_header_field,
                "on_header_value": self.on_header_value, "on_header_end": self.on_header_end,
                "on_part_data": self.on_part_data}

    def on_part_begin(self) -> None:
        if len(self.parts) >= MAX_BATCH + 8:
            raise ApiError("too_many_images", f"more than {MAX_BATCH} parts in one form")
        self.parts.append({"headers": {}, "data": []})

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        headers, name = self.parts[-1]["headers"], self.field.lower()
        headers[name] = headers.get(name, b"") + data[start:end]

    def on_header_end(self) -> None:
        self.field = b""

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self.parts[-1]["data"].append(data[start:end])


def parse_multipart(body: bytes, content_type: str, many: bool) -> list[tuple[str, bytes]]:
    """The parts named `file` (or `files`) of a multipart body already in memory."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise ApiError("invalid_multipart", "multipart/form-data without a boundary")
    form = _FormParts()
    try:
        parser = MultipartParser(boundary, form.callbacks())
        parser.write(body)
        parser.finalize()
    except ApiError:
        raise
    except Exception as e:  # noqa: BLE001  (malformed multipart of any kind)
        raise ApiError("invalid_multipart", f"could not parse the form: {type(e).__name__}") from None
    uploads = []
    for part in form.parts:
        _, disposition = parse_options_header(part["headers"].get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("latin-1")
        if name in ("file", "files") and b"filename" in disposition:
            uploads.append((disposition[b"filename"].decode("utf-8", "replace") or f"file{len(uploads)}",
                            b"".join(part["data"])))
    if not uploads:
        raise ApiError("missing_file", "the form has no file field named `file`" + (" or `files`" if many else ""))
    if len(uploads) > MAX_BATCH:
        raise ApiError("too_many_images", f"{len(uploads)} images; at most {MAX_BATCH} per request")
    return uploads


async def images_from(request: Request, limit: int, many: bool) -> list[tuple[str, bytes]]:
    """[(name, image bytes)] from a multipart form (field `file`, or `files` for several), a raw image body,
    or JSON ({"image": base64} / {"images": [base64, ...]}).  Parsing runs in a thread, off the event loop."""
    content_type = request.headers.get("content-type", "")
    kind = content_type.split(";")[0].strip().lower()
    if not kind:
        raise ApiError("unsupported_media_type", "send an image (image/png, image/jpeg, ...), "
                                                 "multipart/form-data or application/json")
    if not (kind in ("multipart/form-data", "application/json") or kind.startswith(IMAGE_TYPES)):
        raise ApiError("unsupported_media_type", f"{kind} is not accepted: send an image, "
                                                 "multipart/form-data or application/json")
    body = await read_body(request, limit)
    if not body:
        raise ApiError("empty_body", "the request has no image")
    if kind == "multipart/form-data":
        return await run_in_threadpool(parse_multipart, body, content_type, many)
    if kind == "application/json":
        return await run_in_threadpool(parse_json, body, many)
    return [("body", body)]


# --- OpenAPI: the bodies and answers, so that /docs can "Try it out" ---------------------------------------------

class ErrorBody(BaseModel):
    error: str = Field(description="a code: too_large, unsupported_format, invalid_image, no_ink, ...")
    detail: str
    verdict: str | None = None


ERRORS = {status: {"model": ErrorBody} for status in (408, 413, 415, 422, 503)}


def image_body(many: bool) -> dict:
    """The three ways to send an image (a form, a raw body, JSON base64), as an operation's openapi_extra."""
    files = ({"files": {"type": "array", "items": {"type": "string", "format": "binary"}}} if many else
             {"file": {"type": "string", "format": "binary"}})
    json_schema = ({"type": "object", "properties": {"images": {"type": "array", "maxItems": MAX_BATCH,
                                                                "items": {"type": "string", "format": "byte"}}},
                    "required": ["images"]} if many else
                   {"type": "object", "properties": {"image": {"type": "string", "format": "byte",
                                                               "description": "base64, or a data: URL"}},
                    "required": ["image"]})
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": files, "required": list(files)}},
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        "application/json": {"schema": json_schema}}}}
