"""uvicorn's HTTP/1.1 protocol (on httptools, its C parser: a request costs the server about 0.3 ms less CPU
than on h11, the pure-Python one) with the two limits it lacks: a deadline for a request's headers and a bound on
open connections.

uvicorn closes keep-alive connections that idle between requests (timeout_keep_alive), but a connection that
never completes its first request line and headers is kept forever, and every accepted socket holds a file
descriptor: 1,030 idle sockets stalled the server at the default limit of 1,024.  Here a connection must
deliver a request's headers within HEADER_TIMEOUT_S of opening (or of its previous response), connections
past MAX_CONNECTIONS are closed as soon as they are accepted, and a request whose target and headers pass
MAX_HEAD_BYTES is refused (400) and its connection closed.  Bodies get their own deadline in the app
(`http.read_body`).  Other servers (hypercorn, granian) have such settings, but uvicorn is what FastAPI users
run and deploy; this subclass is small and keeps it.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEADER_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 512
MAX_HEAD_BYTES = 16 * 1024  # a request's target and headers together (h11's default limit; httptools has none)


class HeadTooLarge(Exception):
    """Raised inside the parser's callbacks: uvicorn answers 400 and closes the connection."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    header_timeout_s = HEADER_TIMEOUT_S
    max_connections = MAX_CONNECTIONS
    max_head_bytes = MAX_HEAD_BYTES
    _head_bytes = 0

    def connection_made(self, transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.max_connections:
            transport.abort()  # over the bound: no file descriptor kept, no work done
            return
        super().connection_made(transport)
        self._arm_header_deadline()

    def _arm_header_deadline(self) -> None:
        self._header_deadline = self.loop.call_later(self.header_timeout_s, self._header_deadline_passed)

    def _header_deadline_passed(self) -> None:
        # Closed only when no request is in progress: one whose headers arrived (pipelined ones too) has its own
        # body and app deadlines.  (A new request's cycle starts only when its headers are complete.)
        if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
            self.transport.close()

    # The parser hands over a request's target and headers piece by piece: their bytes are counted as they
    # come, so that neither a 20 MB URL nor 20,000 headers are taken in (uvicorn appends URL pieces one to
    # another: quadratic work as well as memory).
    def on_message_begin(self) -> None:
        self._head_bytes = 0
        super().on_message_begin()

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.max_head_bytes:
            raise HeadTooLarge(f"request target and headers over {self.max_head_bytes} bytes")

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)  # (": " and the line end: 20,000 empty headers count too)
        super().on_header(name, value)

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

