"""HTTP API and drawing page: FastAPI in front of the same `predict` functions the CLI uses.

Images arrive as a multipart file, a raw image body, or JSON with base64 data.  What a request may cost is
bounded at every step:
- the body is read with a deadline and refused (413) as soon as it passes the byte limit;
- JSON and multipart are parsed in a worker thread, after a cheap upper bound on the number of items;
- every image is decoded and prepared (ink found, a line cut into digits, each scaled to 28x28) in a sandboxed
  worker process (`sandbox.DecodePool`: memory limit, deadline, killed when the client hangs up); only the
  model runs in the server's process, on one of a few request threads (two per worker; a request that finds
  none free within QUEUE_WAIT_S is 503);
- past --max-concurrency requests in flight, 503 with Retry-After; headers and idle connections have
  deadlines, a request's target and headers a size bound, and open connections a bound
  (`protocol.GuardedHttpToolsProtocol`).
Every error the app answers is JSON `{"error": code, "detail": text}`; the status comes from the error's code
(STATUS_BY_CODE).  (A request the HTTP parser cannot read gets uvicorn's own plain-text 400.)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
from fastapi import Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from digitrec.errors import DigitrecError
from digitrec.files import sha256_file
from digitrec.imaging.prepare import Prepared
from digitrec.inference.predict import NO_INK, Predictor, predict_images, read_images
from digitrec.memory import FreedMemoryReturner
from digitrec.serve import metrics
from digitrec.serve import model as served_model
from digitrec.serve.protocol import GuardedHttpToolsProtocol  # (httptools missing: `serve` says which extra to install)
from digitrec.serve.sandbox import (
    DEFAULT_DEADLINE_S,
    DEFAULT_MEMORY_MB,
    DEFAULT_WORKERS,
    QUEUE_WAIT_S,
    Cancelled,
    DecodePool,
)

DEFAULT_MAX_BYTES = 5 * 1024 * 1024
MAX_BATCH = 256
BODY_TIMEOUT_S = 10.0  # a body must arrive within this (slow uploads are cut off: 408)
REQUEST_BUDGET_S = 2.5  # decoding all of a request's images must fit in this
IMAGE_TYPES = ("image/", "application/octet-stream")
NO_DIGITS = np.zeros((0, 28, 28), np.float32)
NO_DIGITS.flags.writeable = False  # one array for every failed image
STATIC = Path(__file__).parent / "static"
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

# error code -> HTTP status.  Codes come from errors.CODES, and the server's own (bodies, forms, JSON).
STATUS_BY_CODE = {
    "too_large": 413, "too_many_images": 413, "unsupported_format": 415, "unsupported_media_type": 415,
    "invalid_image": 422, "no_ink": 422, "too_costly": 422, "invalid_input": 422, "empty_body": 422,
    "invalid_json": 422, "invalid_base64": 422, "invalid_multipart": 422, "missing_file": 422,
    "invalid_request": 422, "request_timeout": 408, "not_found": 404, "method_not_allowed": 405,
    "unavailable": 503, "missing_dependency": 503, "client_closed": 499,
}

log = logging.getLogger("digitrec.serve")


class ApiError(Exception):
    def __init__(self, code: str, detail: str, status: int | None = None, verdict: str | None = None) -> None:
        self.code, self.detail, self.verdict = code, detail, verdict
        self.status = status or STATUS_BY_CODE.get(code, 422)


def error_response(code: str, detail: str, status: int, verdict: str | None = None) -> JSONResponse:
    body = {"error": code, "detail": detail}
    if verdict:
        body["verdict"] = verdict
    headers = {"Retry-After": "1"} if status == 503 else None
    return JSONResponse(body, status_code=status, headers=headers)


# --- settings: flags > DIGITREC_* environment > defaults ----------------------------------------------------

@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    model: str | None = None
    backend: str | None = None
    workers: int = 1
    max_bytes: int = DEFAULT_MAX_BYTES
    max_concurrency: int = 64
    cors_origin: list[str] = field(default_factory=list)
    log_format: str = "text"
    log_level: str = "info"
    decode_workers: int = DEFAULT_WORKERS
    decode_memory_mb: int = DEFAULT_MEMORY_MB
    decode_timeout: float = DEFAULT_DEADLINE_S
    model_threads: int = 1

    @classmethod
    def resolve(cls, flags: dict | None = None, environ=os.environ) -> "Settings":
        """Each option from its flag if given, else DIGITREC_<NAME>, else the default; validated."""
        values = {}
        for f in fields(cls):
            given = (flags or {}).get(f.name)
            if given is None or given == []:
                text = environ.get(f"DIGITREC_{f.name.upper()}")
                if text in (None, ""):
                    continue
                try:
                    given = ([o.strip() for o in text.split(",") if o.strip()] if f.name == "cors_origin" else
                             int(text) if f.type in ("int",) else float(text) if f.type == "float" else text)
                except ValueError:
                    raise DigitrecError(f"DIGITREC_{f.name.upper()}={text!r} is not a valid {f.type}") from None
            values[f.name] = given
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if min(self.workers, self.max_bytes, self.max_concurrency, self.decode_workers, self.decode_memory_mb,
               self.model_threads) < 1:
            raise DigitrecError("--workers, --max-bytes, --max-concurrency, --decode-workers, "
                                "--decode-memory-mb and --model-threads must be positive")
        if not 0 < self.port < 65536:
            raise DigitrecError("--port must be in 1-65535")
        if self.decode_timeout <= 0:
            raise DigitrecError("--decode-timeout must be positive")
        if self.log_format not in ("text", "json"):
            raise DigitrecError("--log-format must be text or json")
        if self.log_level.lower() not in ("debug", "info", "warning", "error", "critical"):
            raise DigitrecError("--log-level must be debug, info, warning, error or critical")

    def to_environ(self) -> dict[str, str]:
        return {f"DIGITREC_{k.upper()}": (",".join(v) if isinstance(v, list) else "" if v is None else str(v))
                for k, v in asdict(self).items()}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record), "level": record.levelname.lower(), "pid": record.process,
                 "message": record.getMessage()}
        entry.update(getattr(record, "fields", {}))
        return json.dumps(entry)


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else
                         logging.Formatter("%(asctime)s %(process)d %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(settings.log_level.upper())
    log.propagate = False


# --- request bodies ----------------------------------------------------------------------------------------

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


def parse_multipart(body: bytes, content_type: str, many: bool) -> list[tuple[str, bytes]]:
    """The parts named `file` (or `files`) of a multipart body already in memory; parts are counted as the
    parser meets them and refused past MAX_BATCH."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise ApiError("invalid_multipart", "multipart/form-data without a boundary")
    parts: list[dict] = []
    state = {"field": b"", "headers": {}}

    def on_part_begin():
        if len(parts) >= MAX_BATCH + 8:
            raise ApiError("too_many_images", f"more than {MAX_BATCH} parts in one form")
        parts.append({"headers": {}, "data": []})

    def on_header_field(data, start, end):
        state["field"] += data[start:end]

    def on_header_value(data, start, end):
        parts[-1]["headers"][state["field"].lower()] = parts[-1]["headers"].get(state["field"].lower(), b"") + \
            data[start:end]

    def on_header_end():
        state["field"] = b""

    def on_part_data(data, start, end):
        parts[-1]["data"].append(data[start:end])

    try:
        parser = MultipartParser(boundary, {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
                                            "on_header_value": on_header_value, "on_header_end": on_header_end,
                                            "on_part_data": on_part_data})
        parser.write(body)
        parser.finalize()
    except ApiError:
        raise
    except Exception as e:  # noqa: BLE001  (malformed multipart of any kind)
        raise ApiError("invalid_multipart", f"could not parse the form: {type(e).__name__}") from None
    uploads = []
    for part in parts:
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


# --- OpenAPI: the bodies and answers, so that /docs can "Try it out" --------------------------------------

def _image_body(many: bool) -> dict:
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


class ErrorBody(BaseModel):
    error: str = Field(description="a code: too_large, unsupported_format, invalid_image, no_ink, ...")
    detail: str
    verdict: str | None = None


class Prediction(BaseModel):
    digit: int | None = Field(description="null when the verdict is not_a_digit")
    confidence: float
    uncertain: bool
    verdict: str = Field(description="digit, uncertain, not_a_digit")
    topk: list[tuple[int, float]]
    probabilities: list[float]
    image: str | None = Field(None, description="the 28x28 the model saw, base64 PNG (?include_image=true)")


class BatchItem(BaseModel):
    name: str
    digit: int | None = None
    confidence: float | None = None
    uncertain: bool | None = None
    verdict: str
    topk: list[tuple[int, float]] | None = None
    probabilities: list[float] | None = None
    error: str | None = None
    detail: str | None = None


class BatchResult(BaseModel):
    results: list[BatchItem]


class ReadDigit(BaseModel):
    digit: int | None
    confidence: float
    box: list[int]
    verdict: str | None = None


class ReadResult(BaseModel):
    text: str
    digits: list[ReadDigit]
    verdict: str


ERRORS = {status: {"model": ErrorBody} for status in (408, 413, 415, 422, 503)}


def _verdict(record: dict) -> str:
    if record.get("verdict"):
        return record["verdict"]
    if record.get("error_code") == "no_ink" or record.get("error") == NO_INK:
        return "no_ink"
    if record.get("error"):
        return "error"
    return "uncertain" if record.get("uncertain") else "digit"


def _record_error(record: dict) -> ApiError | None:
    if record.get("error") is None:
        return None
    code = record.get("error_code") or ("no_ink" if record["error"] == NO_INK else "invalid_image")
    return ApiError(code, record["error"], verdict=_verdict(record))


def _retrieved(job: asyncio.Future) -> None:
    if not job.cancelled():
        job.exception()


def _prediction(record: dict, probabilities, include_image: bool) -> dict:
    out = {k: record[k] for k in ("digit", "confidence", "uncertain")}
    out["verdict"] = _verdict(record)
    out["topk"] = record["topk"][:3]
    out["probabilities"] = [float(p) for p in probabilities]
    if include_image and record.get("image") is not None:
        out["image"] = base64.b64encode(record["image"]).decode()
    metrics.count_prediction(out["digit"], out["verdict"])
    return out


class ServedPredictor:
    """The Predictor as the server calls it: at most MODEL_CHUNK images per model call (a
    /v1/read of a hundred "digits" must not hold the activations of all of them, with their test-time shifts,
    at once), with inference time and batch size recorded as metrics."""

    MODEL_CHUNK = 16

    def __init__(self, predictor: Predictor, source: Path) -> None:
        self.inner = predictor
        self.source = source  # the model file people gave (the predictor may run its ONNX export: serve/model.py)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def probabilities(self, digits):
        if not len(digits):
            return self.inner.probabilities(digits)
        out = []
        for first in range(0, len(digits), self.MODEL_CHUNK):
            chunk = digits[first:first + self.MODEL_CHUNK]
            start = time.perf_counter()
            out.append(self.inner.probabilities(chunk))  # no autograd: the backends run without it
            metrics.INFERENCE_SECONDS.observe(time.perf_counter() - start)
            metrics.BATCH_SIZE.observe(len(chunk))
        return np.concatenate(out)


# --- the app -------------------------------------------------------------------------------------------------

def create_app(settings: Settings | None = None) -> FastAPIOffline:
    settings = settings or Settings()
    predictor = ServedPredictor(*served_model.load(settings.model, settings.backend, settings.model_threads))
    pool = DecodePool(settings.decode_workers, settings.decode_memory_mb, settings.decode_timeout)
    app = FastAPIOffline(title="digitrec", version=predictor.meta.digitrec_version or "0",
                         description="Handwritten digit recognition: predict single digits, read lines of digits.")
    pool.on_replace = metrics.DECODERS_REPLACED.inc
    app.state.decode_pool = pool
    in_flight = {"n": 0}
    freed_memory = FreedMemoryReturner()  # after a burst of requests, their memory goes back to the OS
    # Requests are prepared and run by two threads per preparing worker: enough to keep every worker busy while
    # another thread runs the model, few enough that they rarely wait on each other.  Measured with 16 `hey`
    # clients (Intel Xeon, 2 workers): a thread per request (Starlette's pool: up to 40) made 29-30 context
    # switches a request and 303-320 requests/s; 4 threads 16-17 and 321-345 requests/s, the p99 halved
    # (137 -> 66 ms); 2, 3, 6 and 8 threads did worse.  A request waits for a thread at most QUEUE_WAIT_S (then
    # 503); the queue holds at most --max-concurrency requests, since a request that ends leaves it.
    request_threads = ThreadPoolExecutor(2 * pool.size, thread_name_prefix="digitrec-request")
    # at shutdown: first drop queued requests, then stop the preparing workers
    app.router.on_shutdown.append(lambda: request_threads.shutdown(wait=False, cancel_futures=True))
    app.router.on_shutdown.append(pool.close)
    # the model people named (the shipped float file when none), and the file that runs (its int8 export, an
    # ONNX export of it, or itself)
    model_sha256 = sha256_file(predictor.source)
    served_sha256 = sha256_file(Path(predictor.path))

    async def prepared(request: Request, items: list[tuple[str, bytes]], line: bool = False, then=None):
        """Prepare on a request thread, in the sandbox (sandbox.py); stop (and kill the workers) when the client
        hangs up.  Returns [(name, Prepared)], or then([(name, Prepared)]) run in the same thread (preparing,
        then the model: one thread hop a request).  No thread free within QUEUE_WAIT_S: 503."""
        cancel, started = threading.Event(), threading.Event()

        def one(data: bytes, deadline: float) -> Prepared:
            start = time.perf_counter()
            try:
                return pool.prepare(data, line, deadline, cancel)
            except DigitrecError as e:
                return Prepared(NO_DIGITS, error=e)
            finally:
                metrics.DECODE_SECONDS.observe(time.perf_counter() - start)

        def work():
            started.set()
            deadline = time.monotonic() + REQUEST_BUDGET_S  # from when a thread takes the request up
            if len(items) == 1:  # the common case: no threads to start
                ready = [(items[0][0], one(items[0][1], deadline))]
            else:  # a batch's images go to every worker at once: they share one time budget (REQUEST_BUDGET_S)
                with ThreadPoolExecutor(pool.size) as threads:
                    ready = list(zip([name for name, _ in items],
                                     threads.map(lambda data: one(data, deadline), [data for _, data in items])))
            return ready if then is None else then(ready)

        async def client_gone():
            while (await request.receive())["type"] != "http.disconnect":
                pass

        job = asyncio.get_running_loop().run_in_executor(request_threads, work)
        job.add_done_callback(_retrieved)  # a job that outlives its request: its error is nobody's to log
        watcher = asyncio.ensure_future(client_gone())
        try:
            done, _ = await asyncio.wait({job, watcher}, timeout=QUEUE_WAIT_S, return_when=asyncio.FIRST_COMPLETED)
            if not done and not started.is_set():  # every request thread busy all that time
                metrics.REJECTED.inc()
                raise ApiError("unavailable", f"the server is busy: no request thread was free for "
                                              f"{QUEUE_WAIT_S:g} s; try again")
            if not done:
                await asyncio.wait({job, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not job.done():
                raise ApiError("client_closed", "the client closed the connection")
            if job.cancelled():  # dropped from the queue: the server is shutting down
                raise ApiError("unavailable", "the server is shutting down")
            return job.result()
        except Cancelled:
            raise ApiError("client_closed", "the client closed the connection") from None
        finally:
            cancel.set()  # a running job stops at its next check (also when this handler is cancelled) ...
            job.cancel()  # ... and a queued one is dropped (a no-op once it is done)
            watcher.cancel()

    def predict_sync(items, include_image):
        records = predict_images(items, predictor, topk=10, include_image=include_image)
        # topk=10 lists every class: the probabilities in class order come from it
        return [(r, [dict(r["topk"]).get(d, 0.0) for d in range(10)] if r["topk"] else None) for r in records]

    # Pure ASGI middleware: request ID, bounded concurrency, metrics with fixed labels, logging, and the
    # last line of defence (an unexpected error is a JSON 500, logged, never a dropped connection).
    inner_app = app.build_middleware_stack

    async def guard(scope, receive, send, call):
        if scope["type"] != "http":
            return await call(scope, receive, send)
        start = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        status = {"code": 500, "sent": False}

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                status["code"], status["sent"] = message["status"], True
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"x-request-id", request_id.encode())]}
            await send(message)

        limited = scope["path"].startswith("/v1/") and scope["method"] == "POST"
        metrics.IN_FLIGHT.inc()
        try:
            if limited and in_flight["n"] >= settings.max_concurrency:
                metrics.REJECTED.inc()
                await error_response("unavailable", f"over {settings.max_concurrency} requests in flight; "
                                     "try again", 503)(scope, receive, send_with_id)
                return
            in_flight["n"] += limited
            try:
                await call(scope, receive, send_with_id)
            finally:
                in_flight["n"] -= limited
                if limited:
                    freed_memory.poke()
        except Exception:  # noqa: BLE001
            log.exception("unhandled error", extra={"fields": {"request_id": request_id}})
            if not status["sent"]:
                await error_response("internal", "internal server error", 500)(scope, receive, send_with_id)
        finally:
            metrics.IN_FLIGHT.dec()
            seconds = time.perf_counter() - start
            route = scope.get("route")
            metrics.REQUEST_SECONDS.labels(metrics.method_label(scope["method"]),
                                           getattr(route, "path", "unmatched"), str(status["code"])).observe(seconds)
            log.info("%s %s %d %.1fms", metrics.method_label(scope["method"]), scope["path"][:200],
                     status["code"], seconds * 1000,
                     extra={"fields": {"request_id": request_id, "method": metrics.method_label(scope["method"]),
                                       "path": scope["path"][:200], "status": status["code"],
                                       "ms": round(seconds * 1000, 2)}})

    def build_middleware_stack():
        stack = inner_app()

        async def app_with_guard(scope, receive, send):
            await guard(scope, receive, send, stack)

        return app_with_guard

    app.build_middleware_stack = build_middleware_stack
    if settings.cors_origin:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origin, allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", "X-Request-ID"], expose_headers=["X-Request-ID"])

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        return error_response(e.code, e.detail, e.status, e.verdict)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        return error_response(code, str(e.detail), e.status_code)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, e: Exception):  # Starlette logs it and re-raises to `guard`
        return error_response("internal", "internal server error", 500)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError):
        return error_response("invalid_request", str(e.errors()[:3])[:500], 422)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse((STATIC / "index.html").read_text())

    @app.api_route("/healthz", methods=["GET", "HEAD"])
    async def healthz():
        return {"status": "ok"}

    @app.api_route("/readyz", methods=["GET", "HEAD"])
    async def readyz():
        return {"ready": True, "backend": predictor.backend}

    @app.get("/v1/model")
    async def model_info():
        """The model being served: name, content hash and metadata (no file paths)."""
        meta = predictor.meta
        return {"name": meta.name or predictor.source.stem, "sha256": model_sha256,
                "architecture": meta.architecture, "members": meta.members,
                "recipe": meta.recipe, "test_accuracy": meta.test_accuracy,
                "dataset": meta.dataset, "data_sha256": meta.data_sha256,
                "backend": predictor.backend, "precision": "int8" if meta.quantized_from else "fp32",
                "served_sha256": served_sha256}

    @app.get("/metrics", include_in_schema=False)
    async def prometheus():
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.post("/v1/predict", response_model=Prediction, response_model_exclude_none=True, responses=ERRORS,
              openapi_extra=_image_body(False))
    async def predict(request: Request, include_image: bool = Query(False, description="add the 28x28 (base64 PNG)")):
        """One image -> digit, confidence, the 10 probabilities, `uncertain`, `verdict`."""
        (record, probabilities), = await prepared(
            request, (await images_from(request, settings.max_bytes, many=False))[:1],
            then=lambda items: predict_sync(items, include_image))
        error = _record_error(record)
        if error:
            metrics.count_prediction(None, error.verdict)
            raise error
        return _prediction(record, probabilities, include_image)

    @app.post("/v1/predict/batch", response_model=BatchResult, responses=ERRORS, openapi_extra=_image_body(True))
    async def predict_batch(request: Request):
        """Several images (at most 256) -> one result, or one error, per image."""
        results = []
        for record, probabilities in await prepared(request, await images_from(request, settings.max_bytes, many=True),
                                                    then=lambda items: predict_sync(items, False)):
            error = _record_error(record)
            if error:
                metrics.count_prediction(None, error.verdict)
                results.append({"name": record["path"], "error": error.code, "detail": error.detail,
                                "verdict": error.verdict})
            else:
                results.append({"name": record["path"], **_prediction(record, probabilities, False)})
        return {"results": results}

    @app.post("/v1/read", response_model=ReadResult, responses=ERRORS, openapi_extra=_image_body(False))
    async def read(request: Request):
        """A line of digits -> the string, per-digit confidences and boxes."""
        try:
            record, = await prepared(request, (await images_from(request, settings.max_bytes, many=False))[:1],
                                     line=True, then=lambda items: read_images(items, predictor))
        except DigitrecError as e:  # a refusal from the analysis (e.g. too_costly), answered like the others
            raise ApiError(e.code, str(e)) from None
        error = _record_error(record)
        if error:
            raise error
        return {"text": record["text"], "digits": record["digits"], "verdict": _verdict(record)}

    if predictor.source.suffix != ".onnx":  # explanations need the PyTorch model (gradients); an ONNX model
        # served on onnxruntime never imports torch
        from digitrec.serve.explain import (
            explain_router,  # POST /v1/explain (imported here: that module imports this one)
        )
        app.include_router(explain_router(predictor, settings.max_bytes, prepared))
    return app


def app_from_env() -> FastAPIOffline:
    """Factory for `uvicorn --factory` and each worker process: settings come from DIGITREC_* variables."""
    settings = Settings.resolve()
    configure_logging(settings)
    return create_app(settings)


def serve(settings: Settings) -> None:
    import resource
    import tempfile

    import uvicorn

    os.environ.update(settings.to_environ())
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="digitrec-metrics-")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # room for the connection bound and the decoders
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else max(soft, 4096), hard))
    # Load the model once here, so a bad model file is a clear error before the server starts (and a PyTorch
    # model is exported to ONNX once, before the workers start: serve/model.py).
    served_model.load(settings.model, settings.backend, settings.model_threads)
    print(f"digitrec serving on http://{settings.host}:{settings.port}/ (API docs at /docs)", flush=True)
    uvicorn.run("digitrec.serve.app:app_from_env", factory=True, host=settings.host, port=settings.port,
                workers=settings.workers, access_log=False, log_level="warning", http=GuardedHttpToolsProtocol,
                # asyncio's own loop, not uvloop: measured, uvloop took 0.5 ms off a request's p50, but with it a
                # burst of eight hostile uploads held /healthz for 101-114 ms (22-57 ms on asyncio's loop).
                loop="asyncio", timeout_keep_alive=5, timeout_graceful_shutdown=5)
