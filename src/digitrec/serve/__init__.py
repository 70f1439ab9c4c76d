"""HTTP serving (`digitrec serve`).  Needs the `serve` extra: `pip install 'digitrec[serve]'`.

The modules, each importing only those listed below it (nothing imports app.py but this file, lazily):
    app.py          the app factory (`create_app`) and `serve` (uvicorn)
    routers/        one APIRouter per domain: page, status (health, model, metrics), predict, read, explain
    middleware.py   the guard around every request: request ID, bound in flight, metrics, log line, last 500
    state.py        what the routers share (`Depends(server_state)`): settings, model, request threads
    runner.py       request threads, preparation in the sandbox, the model as the server calls it
    records.py      a prediction or read record's verdict and error (by its code)
    http.py         ApiError and error answers (status from the code), request bodies, OpenAPI image bodies
    logs.py, config.py (Settings: flags > DIGITREC_* > defaults), metrics.py, model.py, sandbox.py,
    protocol.py, warm_decoder.py
"""

from __future__ import annotations

from digitrec.errors import missing_dependency


def _app():
    try:
        from digitrec.serve import app
    except ModuleNotFoundError as e:
        raise missing_dependency(e.name or "fastapi", "serve") from None
    return app


def settings(flags: dict | None = None):
    """The server's settings: flags (None = not given) > DIGITREC_* environment > defaults."""
    return _app().Settings.resolve(flags)


def serve(settings) -> None:
    """Start the server (see `app.serve`); a missing extra is one clear line, not a traceback."""
    _app().serve(settings)
