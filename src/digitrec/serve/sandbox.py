"""Preparing images (decoding, finding the ink, cutting a line into digits, scaling each to 28x28) in worker
processes, each image with a memory limit and a deadline.  The server's own process only runs the model.

Why processes: decoding is where hostile bytes meet C parsers (a progressive JPEG of thousands of scans, a
palette PNG that expands to gigabytes).  A thread that is stuck in such a decoder cannot be stopped, and its
memory stays in the server.  A process can be: each worker runs under RLIMIT_AS (allocations past the budget
fail as MemoryError -> `too_costly`), the server waits for it only until the deadline, and then, or when the
client hangs up, kills it and starts a fresh one (forked from a preloaded forkserver: milliseconds).  A worker
whose memory stays high after an image retires, so the server's memory returns to its baseline.

Why all of the preparation and not only decoding: the analysis of a large image is the other half of a request's
cost (3 of 5 ms for a 446x336 page), so in the workers it runs on both cores instead of under the server's one
interpreter lock, it is bounded by the same deadline and memory limit, and what comes back is a few 28x28
inputs instead of the whole decoded image.

Messages are raw bytes both ways (a JSON header, then the data): the server never unpickles anything that came
from a process which has parsed attacker data.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import threading
import time

import numpy as np

from ..errors import DigitrecError
from ..preprocess import Prepared

DEFAULT_WORKERS = min(2, os.cpu_count() or 1)
DEFAULT_MEMORY_MB = 224  # per worker, above its baseline: 2 workers keep the server within +500 MB
DEFAULT_DEADLINE_S = 1.5  # per image: every answer within a few seconds
QUEUE_WAIT_S = 2.0  # waiting for a free worker longer than this is 503
STARTUP_S = 60.0  # a worker not ready after this is a broken installation


class Cancelled(Exception):
    """The client went away: the work was stopped."""


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _vm_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _worker(conn, memory_bytes: int) -> None:
    """Prepare images until the connection closes; retire when memory stays high after an image."""
    import ctypes
    import resource

    from ..preprocess import prepare

    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        trim = lambda _: None  # noqa: E731
    resource.setrlimit(resource.RLIMIT_AS, (_vm_bytes() + memory_bytes, resource.RLIM_INFINITY))
    baseline = _rss_bytes()
    try:
        conn.send_bytes(b"ready")
    except (OSError, ValueError):
        return
    while True:
        try:
            line = json.loads(conn.recv_bytes(256))["line"]
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        digits = b""
        try:
            prepared = prepare(data, line=line)
            digits = prepared.digits.astype(np.float32).tobytes()
            header = {"count": len(prepared.digits), "boxes": prepared.boxes}
            del prepared
        except DigitrecError as e:
            header = {"error": str(e), "code": e.code}
        except MemoryError:
            header = {"error": "image too costly to decode (over its memory budget)", "code": "too_costly"}
        except Exception as e:  # noqa: BLE001  (prepare promises DigitrecError; this worker must answer anyway)
            header = {"error": f"cannot decode image: {type(e).__name__}", "code": "invalid_image"}
        del data
        trim(0)
        header["retire"] = _rss_bytes() > baseline + memory_bytes // 4
        try:
            conn.send_bytes(json.dumps(header).encode())
            conn.send_bytes(digits)
        except (OSError, ValueError):
            return
        if header["retire"]:
            return


class _Worker:
    def __init__(self, context, memory_bytes: int) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker, args=(child, memory_bytes), daemon=True)
        self.process.start()
        child.close()
        # Wait until it can take an image: the first workers wait for the forkserver to import and warm up
        # (about a second), so that a server is ready only when its first request can be prepared in time.
        try:
            ready = self.conn.poll(STARTUP_S) and self.conn.recv_bytes(16) == b"ready"
        except (EOFError, OSError):
            ready = False
        if not ready:
            self.kill()
            raise DigitrecError("a decoding worker did not start", code="unavailable")

    def kill(self) -> None:
        self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()


class DecodePool:
    """N preparing processes.  `prepare(data, line, deadline, cancel)` blocks (run it in a thread) and returns a
    `preprocess.Prepared`, or raises DigitrecError (too_costly past the deadline or the memory budget, unavailable when
    no worker frees up in time) or Cancelled."""

    def __init__(self, workers: int = DEFAULT_WORKERS, memory_mb: int = DEFAULT_MEMORY_MB,
                 deadline_s: float = DEFAULT_DEADLINE_S) -> None:
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(["digitrec.serve.warm_decoder"])
        self.size, self.memory_bytes, self.deadline_s = workers, memory_mb << 20, deadline_s
        self.idle: queue.Queue[_Worker] = queue.Queue()
        self.lock = threading.Lock()
        self.all: set[_Worker] = set()
        self.replaced = 0  # workers killed or retired and started again
        self.on_replace = lambda: None  # the server counts replacements in its metrics
        for _ in range(workers):
            self._add()

    def _add(self) -> None:
        worker = _Worker(self.context, self.memory_bytes)
        with self.lock:
            self.all.add(worker)
        self.idle.put(worker)

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        with self.lock:
            self.all.discard(worker)
            self.replaced += 1
        self.on_replace()
        self._add()

    def prepare(self, data: bytes, line: bool = False, deadline: float | None = None,
                cancel: threading.Event | None = None) -> Prepared:
        """`deadline` (time.monotonic()) bounds the whole request; each image also gets deadline_s."""
        now = time.monotonic()
        limit = now + self.deadline_s if deadline is None else min(deadline, now + self.deadline_s)
        try:
            worker = self.idle.get(timeout=max(0.0, min(QUEUE_WAIT_S, limit - now)))
        except queue.Empty:
            raise DigitrecError("the server is busy decoding other images; try again", code="unavailable") from None
        if not worker.process.is_alive():
            self._replace(worker)
            worker = self.idle.get()
        healthy = False
        try:
            worker.conn.send_bytes(json.dumps({"line": line}).encode())
            worker.conn.send_bytes(data)
            while not worker.conn.poll(0.02):
                if cancel is not None and cancel.is_set():
                    raise Cancelled()
                if time.monotonic() > limit:
                    raise DigitrecError(f"image too costly to decode (over {self.deadline_s:g} s)", code="too_costly")
            header = json.loads(worker.conn.recv_bytes(1 << 20))
            digits = worker.conn.recv_bytes()
            healthy = not header["retire"]
        except (EOFError, OSError):  # the worker died: its memory limit hit it somewhere Python could not catch
            raise DigitrecError("image too costly to decode (the decoder ran out of its budget)",
                                code="too_costly") from None
        except (ValueError, KeyError, TypeError):  # not the answer a worker gives: it goes, the image is refused
            raise DigitrecError("cannot decode image: its preparation failed", code="invalid_image") from None
        finally:
            if healthy:
                self.idle.put(worker)
            else:
                self._replace(worker)
        if "error" in header:
            raise DigitrecError(header["error"], code=header["code"])
        try:  # checked, not trusted: the worker has parsed attacker data
            boxes = tuple(tuple(int(v) for v in box) for box in header["boxes"])
            prepared = Prepared(np.frombuffer(digits, np.float32).reshape(int(header["count"]), 28, 28).copy(), boxes)
        except (KeyError, TypeError, ValueError):
            raise DigitrecError("cannot decode image: its preparation failed", code="invalid_image") from None
        if boxes and len(boxes) != len(prepared.digits) or any(len(box) != 4 for box in boxes):
            raise DigitrecError("cannot decode image: its preparation failed", code="invalid_image")
        return prepared

    def pids(self) -> list[int]:
        with self.lock:
            return [w.process.pid for w in self.all if w.process.pid]

    def close(self) -> None:
        with self.lock:
            workers, self.all = list(self.all), set()
        for worker in workers:
            worker.kill()
