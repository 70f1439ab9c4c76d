"""HTTP serving (`digitrec serve`).  Needs the `serve` extra: `pip install 'digitrec[serve]'`."""

from __future__ import annotations

from ..errors import missing_dependency


def serve(*args, **kwargs) -> None:
    """Start the server (see `app.serve`); a missing extra is one clear line, not a traceback."""
    try:
        from .app import serve as run
    except ModuleNotFoundError as e:
        raise missing_dependency(e.name or "fastapi", "serve") from None
    run(*args, **kwargs)
