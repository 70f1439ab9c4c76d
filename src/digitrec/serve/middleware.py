"""The guard around every request (pure ASGI middleware): a request ID, a bound on prediction requests in
flight, metrics with fixed labels, one log line, and the last line of defence (an unexpected error is a JSON
500, logged, never a dropped connection).

Every answer carries `X-Request-ID`: the client's when it is a plausible ID, else a new one.  Past
`max_concurrency` POSTs to /v1/... in flight, a request is answered 503 with Retry-After before it is read.
"""

from __future__ import annotations

import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from digitrec.memory import FreedMemoryReturner
from digitrec.serve import metrics
from digitrec.serve.http import error_response
from digitrec.serve.logs import log

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class _Reply:
    """`send`, with the request ID added to the answer's headers and the status noted as it starts."""

    def __init__(self, send: Send, request_id: str) -> None:
        self.send, self.request_id = send, request_id
        self.status, self.started = 500, False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status, self.started = message["status"], True
            message = {**message, "headers": [*message.get("headers", []),
                                              (b"x-request-id", self.request_id.encode())]}
        await self.send(message)


class GuardMiddleware:
    def __init__(self, app: ASGIApp, max_concurrency: int) -> None:
        self.app, self.max_concurrency = app, max_concurrency
        self.in_flight = 0  # POSTs to /v1/... being served by this process
        self.freed_memory = FreedMemoryReturner()  # after a burst of requests, their memory goes back to the OS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        reply = _Reply(send, given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex)
        metrics.IN_FLIGHT.inc()
        try:
            await self._limited(scope, receive, reply)
        except Exception:  # noqa: BLE001
            log.exception("unhandled error", extra={"fields": {"request_id": reply.request_id}})
            if not reply.started:
                await error_response("internal", "internal server error", 500)(scope, receive, reply)
        finally:
            metrics.IN_FLIGHT.dec()
            _observe(scope, reply, time.perf_counter() - start)

    async def _limited(self, scope: Scope, receive: Receive, reply: _Reply) -> None:
        """The request, unless it is a prediction request past the bound on those in flight (then 503)."""
        limited = scope["path"].startswith("/v1/") and scope["method"] == "POST"
        if limited and self.in_flight >= self.max_concurrency:
            metrics.REJECTED.inc()
            await error_response("unavailable", f"over {self.max_concurrency} requests in flight; "
                                 "try again")(scope, receive, reply)
            return
        self.in_flight += limited
        try:
            await self.app(scope, receive, reply)
        finally:
            self.in_flight -= limited
            if limited:
                self.freed_memory.poke()


def _observe(scope: Scope, reply: _Reply, seconds: float) -> None:
    """The request's duration metric (labels from fixed sets: metrics.py) and its log line."""
    method, path = metrics.method_label(scope["method"]), scope["path"][:200]
    route = getattr(scope.get("route"), "path", "unmatched")
    metrics.REQUEST_SECONDS.labels(method, route, str(reply.status)).observe(seconds)
    log.info("%s %s %d %.1fms", method, path, reply.status, seconds * 1000,
             extra={"fields": {"request_id": reply.request_id, "method": method, "path": path,
                               "status": reply.status, "ms": round(seconds * 1000, 2)}})
