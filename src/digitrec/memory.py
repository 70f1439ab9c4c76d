"""How freed tensor memory is kept, for every process that runs a network on a CPU (training, evaluation,
prediction, the server)."""

from __future__ import annotations

import ctypes
import threading
import time
from functools import cache


@cache
def libc() -> ctypes.CDLL | None:
    """glibc, for its allocator's knobs; None where the C library is another."""
    try:
        library = ctypes.CDLL("libc.so.6")
        library.mallopt, library.malloc_trim  # noqa: B018  (both must exist)
        return library
    except (OSError, AttributeError):
        return None


def keep_freed_memory() -> None:
    """Ask glibc to keep freed blocks of up to 32 MB for reuse instead of handing them back to the OS.

    By default glibc maps each block over 128 kB fresh from the OS and unmaps it when freed: a batch of 64
    float images (200 kB), and every activation of a larger batch, then page-faults its memory in again on
    each use.  Measured on the 2-core machine: a seed-recipe epoch took anywhere from 5 to 9 s depending on
    what the process happened to free earlier (glibc moves its threshold up after large frees), and the
    shipped model ran 2,500 rather than 3,950 images/s at batch 256.  Costs up to 256 MB of freed memory held
    by the process.  Process-wide and idempotent; a no-op where the C library is not glibc."""
    if libc() is not None:
        libc().mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: serve blocks up to 32 MB from the heap
        libc().mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD: give memory back only past 256 MB free at the top


class FreedMemoryReturner:
    """For a long-lived server: hands freed memory back to the OS shortly after each burst of requests.

    glibc gives each thread that allocates at the same time its own arena, and freed small blocks stay in
    those arenas: measured, eight concurrent `/v1/read` calls of 114 marks each left 8 arenas of 25 MB
    resident in the server (+208 MB) for good, whatever the mmap and trim thresholds (that was while the server
    analysed images in its own threads; they are now prepared in sandbox.py's workers, but the model calls,
    JSON and request bodies of concurrent requests still allocate in its threads).  malloc_trim(0) returns
    the free pages of every arena.  It runs in this thread once `delay` seconds pass without a `poke()` (the
    end of a burst), so no request waits for it and steady traffic keeps the memory it reuses.  A no-op where
    the C library is not glibc."""

    def __init__(self, delay: float = 0.5) -> None:
        self.delay, self.event = delay, threading.Event()
        self.last, self.armed = 0.0, False
        if libc() is not None:
            threading.Thread(target=self._run, name="digitrec-memory", daemon=True).start()

    def poke(self) -> None:
        """A request finished: trim once the burst is over.  Only the first poke of a burst wakes the thread;
        the others just note the time (waking it on every request cost the server a thread switch each)."""
        self.last = time.monotonic()
        if not self.armed:
            self.armed = True
            self.event.set()

    def _run(self) -> None:
        while True:
            self.event.wait()
            self.event.clear()
            while (quiet_in := self.last + self.delay - time.monotonic()) > 0:  # over when `delay` passes
                time.sleep(quiet_in)                                           # without a poke
            self.armed = False  # (a poke from here on starts the next burst)
            libc().malloc_trim(0)
