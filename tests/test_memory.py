import ctypes
import platform

import pytest
import torch

from digitrec.memory import keep_freed_memory


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_after_keep_freed_memory_batch_sized_tensors_come_from_the_heap_not_fresh_mappings():
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    keep_freed_memory()
    mapped = libc.mallinfo2().hblks
    tensors = [torch.empty(n, dtype=torch.uint8) for n in (200 << 10, 4 << 20, 20 << 20)]
    assert libc.mallinfo2().hblks == mapped  # none of them got its own mmap
    del tensors


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_a_burst_of_threads_hands_its_freed_memory_back():
    """Eight threads allocating at once get eight glibc arenas; what they free between the blocks they keep
    stays resident until malloc_trim, which FreedMemoryReturner runs once the burst is over."""
    import threading
    import time

    from digitrec.memory import FreedMemoryReturner

    returner = FreedMemoryReturner(delay=0.2)
    start, kept = threading.Barrier(8), []

    def burst():
        start.wait()  # all at once: each thread its own arena
        blocks = [bytearray(4000) for _ in range(6000)]  # 24 MB in small blocks (below the mmap threshold)
        kept.append(blocks[::60])  # one in sixty stays: the arena cannot shrink from its top

    time.sleep(0.5)
    baseline = _rss_mb()
    threads = [threading.Thread(target=burst) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    held = _rss_mb() - baseline
    assert held > 100, f"glibc gave the memory back by itself (+{held:.0f} MB): nothing to test"
    returner.poke()
    time.sleep(1.0)
    assert _rss_mb() - baseline < held - 80, f"still +{_rss_mb() - baseline:.0f} MB of +{held:.0f} MB"


def test_the_trim_waits_for_the_end_of_each_burst(monkeypatch):
    """One trim per burst, once `delay` passes without a poke; a later burst gets its own; the thread is woken
    once a burst, not once a request."""
    import threading
    import time

    from digitrec import memory

    trims, wakes = [], []

    class FakeLibc:
        def malloc_trim(self, pad):
            trims.append(time.monotonic())

    class CountedEvent(threading.Event):
        def set(self):
            wakes.append(1)
            super().set()

    monkeypatch.setattr(memory, "libc", lambda: FakeLibc())
    monkeypatch.setattr(memory.threading, "Event", CountedEvent)
    returner = memory.FreedMemoryReturner(delay=0.5)
    wakes.clear()  # (starting its thread set a threading.Event of the thread's own)
    for _ in range(12):  # a burst of 0.6 s: no trim while it lasts
        returner.poke()
        last = time.monotonic()
        time.sleep(0.05)
    assert trims == [] and len(wakes) == 1
    time.sleep(1.5)
    assert len(trims) == 1 and trims[0] >= last + 0.45, (trims, last)
    returner.poke()
    time.sleep(1.5)
    assert len(trims) == 2 and len(wakes) == 2, (trims, wakes)
