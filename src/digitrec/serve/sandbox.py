"""Preparing images (decoding, finding the ink, cutting a line into digits, scaling each to 28x28) in worker
processes, each image with a memory limit and a deadline.  The server's own process only runs the model.

Why processes: decoding is where hostile bytes meet C parsers (a progressive JPEG of thousands of scans, a
palette PNG that expands to gigabytes).  A thread that is stuck in such a decoder cannot be stopped, and its
memory stays in the server.  A process can be: each worker runs under RLIMIT_AS (allocations past the budget
fail as MemoryError -> `too_costly`), the server waits for it only until the deadline, and then, or when the
client hangs up, kills it and starts a fresh one (forked from a preloaded forkserver: milliseconds).  A worker
whose memory stays high after an image retires, so the server's memory returns to its baseline.

Why all of the preparation and not only decoding: the analysis of a large image is the other half of a request's
cost (1.1 of 1.9 ms for a 446x336 page), so in the workers it runs on both cores instead of under the server's one
interpreter lock, it is bounded by the same deadline and memory limit, and what comes back is a few 28x28
inputs instead of the whole decoded image.

One message each way, raw bytes: the image after a byte that says what to make of it (a line, or one digit);
the answer's length-prefixed JSON header, then its 28x28 inputs as float32.  The server never unpickles anything
that came from a process which has parsed attacker data.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import threading
import time

import numpy as np

from digitrec.errors import DigitrecError
from digitrec.imaging.decode import MAX_DIGITS, MAX_STRIPS
from digitrec.imaging.ink import STRIP_HEIGHT, STRIP_MAX_WIDTH
from digitrec.imaging.layout import SEPARATORS
from digitrec.imaging.prepare import Prepared

DEFAULT_WORKERS = min(2, os.cpu_count() or 1)
DEFAULT_MEMORY_MB = 224  # per worker, above its baseline: 2 workers keep the server within +500 MB
DEFAULT_DEADLINE_S = 1.5  # per image: every answer within a few seconds
QUEUE_WAIT_S = 2.0  # waiting for a free worker (or, in the server, a request thread) longer than this is 503
STARTUP_S = 60.0  # a worker not ready after this is a broken installation
TRIM_ABOVE = 16 << 20  # a worker holding this much more than at its start gives the freed part back
MAX_HEADER = 1 << 18  # bytes of a worker's JSON header (a line's boxes and readings)
# A worker's whole answer: header, digits and strips at their limits.
MAX_MESSAGE = 4 + MAX_HEADER + 4 * (MAX_DIGITS * 28 * 28 + MAX_STRIPS * STRIP_HEIGHT * (STRIP_MAX_WIDTH + 12))
LINE, DIGIT = b"L", b"D"  # what the server asks of an image (the first byte of its message): a line, or one digit
WORKER_CODES = {"invalid_image", "unsupported_format", "too_large", "too_costly", "no_ink"}  # what a worker may say


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
    import resource

    from digitrec.imaging.prepare import prepare
    from digitrec.memory import keep_freed_memory, libc

    trim = libc().malloc_trim if libc() is not None else (lambda _: None)
    # A page's working arrays (256 kB each) would otherwise be mapped fresh from the OS and faulted in on every
    # image: measured, 3.4 ms to prepare a 446x336 page in a worker against 2.3 ms in a warm process.  What an
    # image frees stays for the next one; the trim below still hands back what a large image left.
    keep_freed_memory()
    address_space = _vm_bytes()
    resource.setrlimit(resource.RLIMIT_AS, (address_space + memory_bytes, resource.RLIM_INFINITY))
    baseline = trimmed = _rss_bytes()
    try:
        conn.send_bytes(b"ready")
    except (OSError, ValueError):
        return
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            return
        line, data = message[:1] == LINE, message[1:]
        del message
        digits = b""
        try:
            prepared = prepare(data, line=line, strips=line)
            digits = prepared.digits.astype(np.float32).tobytes() + \
                b"".join(strip.astype(np.float32).tobytes() for strip in prepared.strips)
            header = {"count": len(prepared.digits), "boxes": prepared.boxes, "readings": prepared.readings,
                      "plan": prepared.plan, "strips": [strip.shape[1] for strip in prepared.strips]}
            del prepared
        except DigitrecError as e:
            header = {"error": str(e), "code": e.code}
        except MemoryError:
            header = {"error": "image too costly to decode (over its memory budget)", "code": "too_costly"}
        except Exception as e:  # noqa: BLE001  (prepare promises DigitrecError; this worker must answer anyway)
            header = {"error": f"cannot decode image: {type(e).__name__}", "code": "invalid_image"}
        del data
        # Freed memory goes back to the OS when the worker has grown by TRIM_ABOVE since it last did so, not after
        # every image: a trim costs an image about 1 ms (its pages are faulted in again), a third of a page's
        # preparation, and the first images grow a worker for good (caches, arenas) by more than any trim gives.
        if _rss_bytes() > trimmed + TRIM_ABOVE:
            trim(0)
            trimmed = _rss_bytes()
        # Retire when memory stays high, or when half of the address space allowed is taken by what the heap
        # keeps (a fresh worker then has the whole budget for the next large image).
        header["retire"] = trimmed > baseline + memory_bytes // 4 or _vm_bytes() > address_space + memory_bytes // 2
        try:
            conn.send_bytes(_framed(json.dumps(header).encode(), digits))
        except (OSError, ValueError):
            return
        if header["retire"]:
            return


def _framed(header: bytes, digits: bytes) -> bytes:
    """An answer as one message (one write and one wake-up for the server): header length, JSON header, digits."""
    return len(header).to_bytes(4, "big") + header + digits


def _unframed(message: bytes) -> tuple[dict, bytes]:
    """A worker's message -> (its JSON header, the digits' bytes).  ValueError when it is not one."""
    size = int.from_bytes(message[:4], "big")
    if len(message) < 4 + size or size > MAX_HEADER:
        raise ValueError("not an answer")
    header = json.loads(message[4:4 + size])
    if not isinstance(header, dict):
        raise ValueError("not an answer")
    return header, message[4 + size:]


def busy() -> DigitrecError:
    return DigitrecError("the server is busy preparing other images; try again", code="unavailable")


def _answer(header: dict, digits: bytes, line: bool) -> Prepared:
    """A worker's answer, checked, not trusted (the worker has parsed attacker data): a Prepared, or the
    worker's refusal as a DigitrecError; anything malformed is an invalid image."""
    malformed = DigitrecError("cannot decode image: its preparation failed", code="invalid_image")
    if "error" in header:
        if header.get("code") in WORKER_CODES and isinstance(header["error"], str):
            raise DigitrecError(header["error"][:500], code=header["code"])
        raise malformed
    count, boxes = header.get("count"), header.get("boxes")
    widths = header.get("strips", [])  # the sequence reader's strips, after the digits in the same bytes
    if not isinstance(widths, list) or len(widths) > MAX_STRIPS or not all(
            type(w) is int and 8 <= w <= STRIP_MAX_WIDTH + 12 and w % 4 == 0 for w in widths) or (widths and not line):
        raise malformed
    if type(count) is not int or not 0 <= count <= MAX_DIGITS or \
            len(digits) != 4 * (count * 28 * 28 + STRIP_HEIGHT * sum(widths)):
        raise malformed
    digits, strips = digits[:count * 28 * 28 * 4], _strips(digits[count * 28 * 28 * 4:], widths, malformed)
    if not isinstance(boxes, list) or len(boxes) != (count if line else 0) or not all(
            isinstance(box, list) and len(box) == 4 and all(type(v) is int for v in box) for box in boxes):
        raise malformed
    readings = header.get("readings", [])  # per piece, its readings: lists of indices of the digits
    if not isinstance(readings, list) or (readings and not line) or not all(
            isinstance(piece, list) and piece and all(
                isinstance(way, list) and way and all(type(i) is int and 0 <= i < count for i in way) for way in piece)
            for piece in readings):
        raise malformed
    # Each digit belongs to one piece and a reading names it once, so a line's reading never holds more digits
    # than the worker sent.
    seen: set[int] = set()
    for piece in readings:
        used = {i for way in piece for i in way}
        if used & seen or any(len(set(way)) != len(way) for way in piece):
            raise malformed
        seen |= used
    plan = _plan(header.get("plan", []), len(readings), len(strips), line)
    if plan is None:
        raise malformed
    array = np.frombuffer(digits, np.float32).reshape(count, 28, 28).copy()
    if not (np.isfinite(array).all() and (array >= 0).all() and (array <= 1).all()) or (not line and count > 1):
        raise malformed
    return Prepared(array, tuple(tuple(box) for box in boxes),
                    tuple(tuple(tuple(way) for way in piece) for piece in readings), plan=plan, strips=strips)


def _strips(data: bytes, widths: list[int], malformed: DigitrecError) -> tuple[np.ndarray, ...]:
    strips, at = [], 0
    for width in widths:
        strip = np.frombuffer(data[at:at + STRIP_HEIGHT * width * 4], np.float32).reshape(STRIP_HEIGHT, width)
        if not (np.isfinite(strip).all() and (strip >= 0).all() and (strip <= 1).all()):
            raise malformed
        strips.append(strip.copy())
        at += STRIP_HEIGHT * width * 4
    return tuple(strips)


def _plan(plan, pieces: int, strips: int, line: bool) -> tuple | None:
    """A worker's sheet plan (imaging.prepare.Prepared.plan: lines -> numbers -> parts) checked: each part a
    piece's index, each piece in one place at most, a separator [char, box, the index of the piece that
    reads it as a digit, or -1], or a run for the sequence reader ["*", its strip, its pieces, box]; None when
    malformed."""
    if not isinstance(plan, list) or (plan and not line) or len(plan) > MAX_DIGITS:
        return None
    seen: set[int] = set()

    def piece(i) -> bool:
        ok = type(i) is int and 0 <= i < pieces and i not in seen
        seen.add(i)
        return ok

    def box(b) -> bool:
        return isinstance(b, list) and len(b) == 4 and all(type(v) is int for v in b)

    def part(p) -> bool:
        if type(p) is int:
            return piece(p)
        if isinstance(p, list) and len(p) == 4 and p[0] == "*":
            return type(p[1]) is int and 0 <= p[1] < strips and isinstance(p[2], list) and p[2] and \
                all(piece(i) for i in p[2]) and box(p[3])
        return isinstance(p, list) and len(p) == 3 and p[0] in SEPARATORS and box(p[1]) and \
            (p[2] == -1 or piece(p[2]))

    if not all(isinstance(numbers, list) and all(isinstance(parts, list) and all(part(p) for p in parts)
                                                 for parts in numbers) for numbers in plan):
        return None
    def checked(p):
        if type(p) is int:
            return p
        return ("*", p[1], tuple(p[2]), tuple(p[3])) if p[0] == "*" else (p[0], tuple(p[1]), p[2])

    return tuple(tuple(tuple(checked(p) for p in parts) for parts in numbers) for numbers in plan)


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
    `preprocess.Prepared`, or raises DigitrecError (too_costly past the deadline or the memory budget,
    unavailable when no worker frees up in time) or Cancelled."""

    def __init__(self, workers: int = DEFAULT_WORKERS, memory_mb: int = DEFAULT_MEMORY_MB,
                 deadline_s: float = DEFAULT_DEADLINE_S) -> None:
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(["digitrec.serve.warm_decoder"])
        self.size, self.memory_bytes, self.deadline_s = workers, memory_mb << 20, deadline_s
        self.idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()  # (C: no Condition to notify per put)
        self.lock, self.refilling = threading.Lock(), threading.Lock()
        self.all: set[_Worker] = set()
        self.replaced = 0  # workers killed or retired and started again
        self.on_replace = lambda: None  # the server counts replacements in its metrics
        self.closed = False
        try:
            for _ in range(workers):
                self._add()
        except BaseException:
            self.close()
            raise

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
        self._refill()

    def _refill(self) -> None:
        """Start workers until there are `size` again.  One that fails to start is tried again with the next
        image (and that image is answered 503 meanwhile), so a passing failure never shrinks the pool for good."""
        if self.closed or len(self.all) >= self.size or not self.refilling.acquire(blocking=False):
            return
        try:
            while len(self.all) < self.size:
                self._add()
        except DigitrecError:
            pass
        finally:
            self.refilling.release()

    def prepare(self, data: bytes, line: bool = False, deadline: float | None = None,
                cancel: threading.Event | None = None) -> Prepared:
        """`deadline` (time.monotonic()) bounds the whole request; each image also gets deadline_s from when a
        worker takes it.  Time spent waiting for a worker is the server's fault, not the image's: running out
        of it is `unavailable` (503), not `too_costly`."""
        now = time.monotonic()
        self._refill()
        # a batch's leftover images after a cancel or once its budget is spent: no worker touched
        self._check(cancel, now + self.deadline_s if deadline is None else deadline)
        wait = QUEUE_WAIT_S if deadline is None else min(QUEUE_WAIT_S, deadline - now)
        worker = self._take(wait)
        if not worker.process.is_alive():  # died while idle (e.g. the kernel's OOM killer): a fresh one serves
            self._replace(worker)
            worker = self._take(wait - (time.monotonic() - now))
        try:
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            if deadline is not None and time.monotonic() > deadline:  # the budget went on waiting
                raise busy()
        except BaseException:
            self.idle.put(worker)
            raise
        now = time.monotonic()
        limit = now + self.deadline_s if deadline is None else min(deadline, now + self.deadline_s)
        healthy = False
        try:
            worker.conn.send_bytes((LINE if line else DIGIT) + data)
            while not worker.conn.poll(0.02):  # the answer, within the deadline
                self._check(cancel, limit)
            header, digits = _unframed(worker.conn.recv_bytes(MAX_MESSAGE))
            healthy = header.get("retire") is False
        except (EOFError, OSError):  # the worker died: its memory limit hit it somewhere Python could not catch
            raise DigitrecError("image too costly to decode (the decoder ran out of its budget)",
                                code="too_costly") from None
        except (ValueError, AttributeError, RecursionError):  # not an answer a worker gives: it goes
            raise DigitrecError("cannot decode image: its preparation failed", code="invalid_image") from None
        finally:
            if healthy:
                self.idle.put(worker)
            else:
                self._replace(worker)
        return _answer(header, digits, line)

    def _take(self, wait: float) -> _Worker:
        try:
            return self.idle.get(timeout=max(0.0, wait))
        except queue.Empty:
            raise busy() from None

    def _check(self, cancel: threading.Event | None, limit: float) -> None:
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        if time.monotonic() > limit:
            raise DigitrecError(f"image too costly to decode (over {self.deadline_s:g} s)", code="too_costly")

    def pids(self) -> list[int]:
        with self.lock:
            return [w.process.pid for w in self.all if w.process.pid]

    def close(self) -> None:
        self.closed = True  # (a request still running must not start workers again)
        with self.lock:
            workers, self.all = list(self.all), set()
        for worker in workers:
            worker.kill()
