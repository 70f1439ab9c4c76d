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
