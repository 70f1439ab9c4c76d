"""HTTP serving (`digitrec serve`).  Needs the `serve` extra: `pip install 'digitrec[serve]'`."""

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
