"""The server's preparing processes (serve/sandbox.py): what comes back equals preparing in-process, and an image
past its deadline, its memory budget, or whose client went away, is stopped and its worker replaced, after
which the pool still works."""

import io
import threading
import time

import numpy as np
import pytest
from PIL import Image, ImageDraw

from benchmarks.abuse import palette_bomb
from digitrec.errors import DigitrecError
from digitrec.preprocess import prepare
from digitrec.serve.sandbox import Cancelled, DecodePool


def _line(text_boxes: int = 3) -> bytes:
    """A 1, a 7 and a 0 drawn side by side on off-white paper, as PNG."""
    image = Image.new("L", (60 * text_boxes + 20, 90), 235)
    draw = ImageDraw.Draw(image)
    draw.line([(40, 15), (40, 75)], fill=20, width=6)
    draw.line([(85, 15), (120, 15), (98, 75)], fill=20, width=6)
    draw.ellipse([140, 15, 180, 75], outline=20, width=6)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def pool():
    pool = DecodePool(workers=2)
    yield pool
    pool.close()


def test_workers_prepare_exactly_what_the_process_would(pool):
    data = _line()
    for line in (False, True):
        here, there = prepare(data, line=line), pool.prepare(data, line=line)
        assert there.digits.dtype == np.float32 and there.digits.shape == here.digits.shape
        assert np.array_equal(there.digits, here.digits)
        assert there.boxes == here.boxes
    assert len(pool.prepare(data, line=True).digits) == 3  # three digits, three boxes
    blank = io.BytesIO()
    Image.new("L", (40, 40), 255).save(blank, "PNG")
    assert len(pool.prepare(blank.getvalue()).digits) == 0  # no ink: no digits, no error


def test_a_refusal_comes_back_with_its_code(pool):
    with pytest.raises(DigitrecError) as e:
        pool.prepare(b"%!PS-Adobe-3.0 EPSF-3.0\n")
    assert e.value.code == "unsupported_format"


def test_past_the_deadline_the_worker_is_killed_and_replaced():
    pool = DecodePool(workers=1, deadline_s=0.05)
    try:
        start = time.monotonic()
        with pytest.raises(DigitrecError) as e:
            pool.prepare(palette_bomb())  # about a second of decoding
        assert e.value.code == "too_costly" and pool.replaced == 1
        assert time.monotonic() - start < 0.5
        pool.deadline_s = 5.0
        assert len(pool.prepare(_line(), line=True).digits) == 3  # the fresh worker takes the next image
    finally:
        pool.close()


def test_over_its_memory_budget_an_image_is_refused_and_the_pool_goes_on():
    pool = DecodePool(workers=1, memory_mb=32)
    try:
        with pytest.raises(DigitrecError) as e:
            pool.prepare(palette_bomb(4000, 4000))  # 16 Mpx: past 32 MB once expanded
        assert e.value.code in ("too_costly", "too_large")
        assert len(pool.prepare(_line(), line=True).digits) == 3
    finally:
        pool.close()


def test_when_the_client_goes_the_work_stops():
    pool = DecodePool(workers=1)
    cancel = threading.Event()
    cancel.set()
    try:
        start = time.monotonic()
        with pytest.raises(Cancelled):
            pool.prepare(palette_bomb(), cancel=cancel)
        assert time.monotonic() - start < 1.0 and pool.replaced == 1
        assert len(pool.prepare(_line(), line=True).digits) == 3
    finally:
        pool.close()
