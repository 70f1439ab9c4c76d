"""The server's log ("digitrec.serve"): one line a request (middleware.py), as text or JSON (--log-format)."""

from __future__ import annotations

import json
import logging

from digitrec.serve.config import Settings

log = logging.getLogger("digitrec.serve")


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
