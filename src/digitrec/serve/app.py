"""HTTP API and drawing page: FastAPI in front of the same `predict` functions the CLI uses.

The app factory (`create_app`) loads the model, starts the sandboxed preparing workers and the request threads
(runner.py), and puts the routers together (routers/: page, status, predict, read, explain) behind the guard
(middleware.py) and the error handlers (http.py).  What a request may cost is bounded at every step:
- the body is read with a deadline and refused (413) as soon as it passes the byte limit; JSON and multipart
  are parsed in a worker thread, after a cheap upper bound on the number of items (http.py);
- every image is decoded and prepared (ink found, a line cut into digits, each scaled to 28x28) in a sandboxed
  worker process (`sandbox.DecodePool`: memory limit, deadline, killed when the client hangs up); only the
  model runs in the server's process, on one of a few request threads (two per worker; a request that finds
  none free within QUEUE_WAIT_S is 503) (runner.py);
- past --max-concurrency requests in flight, 503 with Retry-After (middleware.py); headers and idle
  connections have deadlines, a request's target and headers a size bound, and open connections a bound
  (`protocol.GuardedHttpToolsProtocol`).
Every error the app answers is JSON `{"error": code, "detail": text}`; the status comes from the error's code
(`digitrec.errors.http_status`).  (A request the HTTP parser cannot read gets uvicorn's own plain-text 400.)
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi_offline import FastAPIOffline

from digitrec.files import sha256_file
from digitrec.inference.predict import load_reader
from digitrec.serve import metrics
from digitrec.serve import model as served_model
from digitrec.serve.config import Settings
from digitrec.serve.http import install_error_handlers
from digitrec.serve.logs import configure_logging
from digitrec.serve.middleware import GuardMiddleware
from digitrec.serve.protocol import (
    GuardedHttpToolsProtocol,  # (httptools missing: `serve` says which extra to install)
)
from digitrec.serve.routers import page, predict, read, status
from digitrec.serve.runner import Runner, ServedPredictor
from digitrec.serve.sandbox import DecodePool
from digitrec.serve.state import ServerState


def create_app(settings: Settings | None = None) -> FastAPIOffline:
    """The app for `settings` (None: Settings.resolve(), from DIGITREC_* variables and the defaults)."""
    settings = settings or Settings.resolve()
    predictor = ServedPredictor(*served_model.load(settings.model, settings.backend, settings.model_threads))
    pool = DecodePool(settings.decode_workers, settings.decode_memory_mb, settings.decode_timeout)
    pool.on_replace = metrics.DECODERS_REPLACED.inc
    app = FastAPIOffline(title="digitrec", version=predictor.meta.digitrec_version or "0",
                         description="Handwritten digit recognition: predict single digits, read lines of digits.")
    app.state.decode_pool = pool
    state = ServerState(settings, predictor, Runner(pool), sha256_file(predictor.source),
                        sha256_file(Path(predictor.path)))
    state.reader = load_reader(threads=settings.model_threads)  # onnxruntime, as the model: no PyTorch here
    app.state.server = state
    app.router.on_shutdown.append(state.runner.close)
    # Middleware added last wraps the others: the guard sees every answer, CORS ones included.
    if settings.cors_origin:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origin, allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", "X-Request-ID"], expose_headers=["X-Request-ID"])
    app.add_middleware(GuardMiddleware, max_concurrency=settings.max_concurrency)
    install_error_handlers(app)
    for router in (page.router, status.router, predict.router, read.router):
        app.include_router(router)
    if predictor.source.suffix != ".onnx":  # explanations need the PyTorch model (gradients); an ONNX model
        # served on onnxruntime never imports torch
        from digitrec.serve.routers import explain

        state.network = explain.load_network(predictor.source)
        app.include_router(explain.router)
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
