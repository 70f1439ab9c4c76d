"""HTTP API and drawing page: FastAPI in front of the same `predict` functions the CLI uses.

Images arrive as a multipart file, a raw image body, or JSON with base64 data.  The body is read in chunks and
refused (413) as soon as it passes the limit, before anything is decoded; every error is a JSON
`{"error": ..., "detail": ...}` with a 4xx status.  Decoding, preprocessing and inference run in worker threads
(the event loop stays free); the Predictor lets one model call run at a time.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import threading
import time
from collections import defaultdict
from pathlib import Path

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from ..predict import NO_INK, Predictor, predict_images, read_images
from ..preprocess import TOO_LARGE

DEFAULT_MAX_BYTES = 5 * 1024 * 1024
MAX_BATCH = 256
IMAGE_TYPES = ("image/", "application/octet-stream")
STATIC = Path(__file__).parent / "static"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

log = logging.getLogger("digitrec.serve")


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str) -> None:
        self.status, self.error, self.detail = status, error, detail


class Metrics:
    """Request counts, errors and a latency histogram per path, in Prometheus' text format."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.buckets: dict[str, list[int]] = defaultdict(lambda: [0] * len(LATENCY_BUCKETS))
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    def observe(self, method: str, path: str, status: int, seconds: float) -> None:
        with self.lock:
            self.requests[(method, path, status)] += 1
            self.sums[path] += seconds
            self.counts[path] += 1
            for i, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    self.buckets[path][i] += 1

    def render(self) -> str:
        with self.lock:
            lines = ["# HELP digitrec_requests_total HTTP requests by method, path and status.",
                     "# TYPE digitrec_requests_total counter"]
            for (method, path, status), n in sorted(self.requests.items()):
                lines.append(f'digitrec_requests_total{{method="{method}",path="{path}",status="{status}"}} {n}')
            lines += ["# HELP digitrec_request_errors_total Requests answered with a 4xx or 5xx status.",
                      "# TYPE digitrec_request_errors_total counter"]
            errors = defaultdict(int)
            for (_, path, status), n in self.requests.items():
                if status >= 400:
                    errors[path] += n
            for path, n in sorted(errors.items()):
                lines.append(f'digitrec_request_errors_total{{path="{path}"}} {n}')
            lines += ["# HELP digitrec_request_seconds Request latency.", "# TYPE digitrec_request_seconds histogram"]
            for path in sorted(self.counts):
                for bound, n in zip(LATENCY_BUCKETS, self.buckets[path]):
                    lines.append(f'digitrec_request_seconds_bucket{{path="{path}",le="{bound}"}} {n}')
                lines.append(f'digitrec_request_seconds_bucket{{path="{path}",le="+Inf"}} {self.counts[path]}')
                lines.append(f'digitrec_request_seconds_sum{{path="{path}"}} {self.sums[path]:.6f}')
                lines.append(f'digitrec_request_seconds_count{{path="{path}"}} {self.counts[path]}')
        return "\n".join(lines) + "\n"


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes (declared or actually sent)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"body of {declared} bytes is over the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "too_large", f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _b64(text) -> bytes:
    if not isinstance(text, str):
        raise ApiError(422, "invalid_json", "images must be base64 strings")
    if text.startswith("data:"):  # a data URL, as canvas.toDataURL() makes
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, "invalid_base64", "image data is not valid base64") from None


async def images_from(request: Request, limit: int, many: bool) -> list[tuple[str, bytes]]:
    """[(name, image bytes)] from a multipart form (field `file`, or `files` for several), a raw image body,
    or JSON ({"image": base64} / {"images": [base64, ...]})."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not content_type:
        raise ApiError(415, "unsupported_media_type", "send an image (image/png, image/jpeg, ...), "
                                                       "multipart/form-data or application/json")
    body = await read_body(request, limit)
    if not body:
        raise ApiError(422, "empty_body", "the request has no image")
    if content_type == "multipart/form-data":
        async def replay():
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=MAX_BATCH, max_fields=MAX_BATCH,
                                                             max_part_size=limit)
        except Exception as e:  # malformed multipart of any kind
            raise ApiError(422, "invalid_multipart", f"could not parse the form: {e}") from None
        try:
            uploads = [v for k, v in form.multi_items() if k in ("file", "files") and hasattr(v, "read")]
            if not uploads:
                raise ApiError(422, "missing_file", "the form has no file field named `file`" +
                               (" or `files`" if many else ""))
            return [(u.filename or f"file{i}", await u.read()) for i, u in enumerate(uploads)]
        finally:
            await form.close()  # the parts are spooled temporary files
    if content_type == "application/json":
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            raise ApiError(422, "invalid_json", "the body is not valid JSON") from None
        if not isinstance(document, dict):
            raise ApiError(422, "invalid_json", 'expected an object: {"image": "<base64>"} or {"images": [...]}')
        if many and isinstance(document.get("images"), list):
            return [(f"image{i}", _b64(v)) for i, v in enumerate(document["images"])]
        if "image" in document:
            return [("image", _b64(document["image"]))]
        expected = '{"image": "<base64>"}' + (' or {"images": [...]}' if many else "")
        raise ApiError(422, "invalid_json", f"expected {expected}")
    if content_type.startswith(IMAGE_TYPES):
        return [("body", body)]
    raise ApiError(415, "unsupported_media_type", f"{content_type} is not accepted: send an image, "
                                                   "multipart/form-data or application/json")


def _record_error(record: dict) -> ApiError | None:
    if record.get("error") is None:
        return None
    if record["error"] == NO_INK:
        return ApiError(422, "no_ink", NO_INK)
    if record["error"].startswith(TOO_LARGE):
        return ApiError(413, "too_large", record["error"])
    return ApiError(422, "invalid_image", record["error"])


def _prediction(record: dict, probabilities, include_image: bool) -> dict:
    out = {k: record[k] for k in ("digit", "confidence", "uncertain")}
    out["topk"] = record["topk"][:3]
    out["probabilities"] = [float(p) for p in probabilities]
    if include_image:
        out["image"] = base64.b64encode(record["image"]).decode()
    return out


def create_app(model: str | os.PathLike | None = None, backend: str | None = None,
               max_bytes: int = DEFAULT_MAX_BYTES) -> FastAPI:
    predictor = Predictor(model, backend)
    metrics = Metrics()
    app = FastAPI(title="digitrec", version=predictor.meta.get("digitrec_version", ""),
                  description="Handwritten digit recognition: predict single digits, read lines of digits.")

    def predict_sync(items, include_image):
        records = predict_images(items, predictor, topk=10, include_image=include_image)
        # topk=10 lists every class: the probabilities in class order come from it
        return [(r, [dict(r["topk"]).get(d, 0.0) for d in range(10)] if r["topk"] else None) for r in records]

    @app.middleware("http")
    async def log_and_count(request: Request, call_next):
        start = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception:  # never let an unexpected error take the server down
            log.exception("unhandled error")
            response = JSONResponse({"error": "internal", "detail": "internal server error"}, status_code=500)
        seconds = time.perf_counter() - start
        route = request.scope.get("route")
        path = route.path if route is not None else "unmatched"
        metrics.observe(request.method, path, response.status_code, seconds)
        log.info("%s %s %d %.1fms", request.method, request.url.path, response.status_code, seconds * 1000)
        return response

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        return JSONResponse({"error": e.error, "detail": e.detail}, status_code=e.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):
        return JSONResponse({"error": "http_error", "detail": str(e.detail)}, status_code=e.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError):
        return JSONResponse({"error": "invalid_request", "detail": str(e.errors()[:3])}, status_code=422)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse((STATIC / "index.html").read_text())

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        return {"ready": True, "backend": predictor.backend}

    @app.get("/v1/model")
    async def model_info():
        meta = predictor.meta
        return {"architecture": meta.get("architecture"), "members": meta.get("members"),
                "recipe": meta.get("recipe"), "test_accuracy": meta.get("test_accuracy"),
                "dataset": meta.get("dataset"), "data_sha256": meta.get("data_sha256"),
                "backend": predictor.backend, "path": str(predictor.path)}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus():
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post("/v1/predict")
    async def predict(request: Request, include_image: bool = Query(False, description="add the 28x28 (base64 PNG)")):
        """One image -> digit, confidence, the 10 probabilities, `uncertain`."""
        items = await images_from(request, max_bytes, many=False)
        (record, probabilities), = await run_in_threadpool(predict_sync, items[:1], include_image)
        error = _record_error(record)
        if error:
            raise error
        return _prediction(record, probabilities, include_image)

    @app.post("/v1/predict/batch")
    async def predict_batch(request: Request):
        """Several images -> one result, or one error, per image."""
        items = await images_from(request, max_bytes, many=True)
        if len(items) > MAX_BATCH:
            raise ApiError(413, "too_many_images", f"{len(items)} images; at most {MAX_BATCH} per request")
        results = []
        for record, probabilities in await run_in_threadpool(predict_sync, items, False):
            error = _record_error(record)
            results.append({"name": record["path"], **({"error": error.error, "detail": error.detail} if error
                                                        else _prediction(record, probabilities, False))})
        return {"results": results}

    @app.post("/v1/read")
    async def read(request: Request):
        """A line of digits -> the string, per-digit confidences and boxes."""
        items = await images_from(request, max_bytes, many=False)

        record = (await run_in_threadpool(read_images, items[:1], predictor))[0]
        error = _record_error({"error": record["error"]})
        if error:
            raise error
        return {"text": record["text"], "digits": record["digits"]}

    from .explain import explain_router  # POST /v1/explain (imported here: that module imports this one)
    app.include_router(explain_router(predictor, max_bytes))
    return app


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` and several worker processes: settings come from the environment."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(message)s")  # in every worker
    return create_app(os.environ.get("DIGITREC_MODEL") or None, os.environ.get("DIGITREC_BACKEND") or None,
                      int(os.environ.get("DIGITREC_MAX_BYTES", DEFAULT_MAX_BYTES)))


def serve(host: str = "127.0.0.1", port: int = 8000, model: str | None = None, backend: str | None = None,
          workers: int = 1, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    import uvicorn

    os.environ.update(DIGITREC_MODEL=model or "", DIGITREC_BACKEND=backend or "", DIGITREC_MAX_BYTES=str(max_bytes))
    app_from_env()  # load the model once here, so a bad model file is a clear error before the server starts
    uvicorn.run("digitrec.serve.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                access_log=False, log_level="warning")

