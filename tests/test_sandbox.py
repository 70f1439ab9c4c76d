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
from digitrec.imaging.prepare import prepare
from digitrec.serve.sandbox import Cancelled, DecodePool


def _line(text_boxes: int = 3, touching: bool = False) -> bytes:
    """A 1, a 7 and a 0 drawn side by side on off-white paper (touching: the 7's bar runs into the 0), as PNG."""
    image = Image.new("L", (60 * text_boxes + 20, 90), 235)
    draw = ImageDraw.Draw(image)
    draw.line([(40, 15), (40, 75)], fill=20, width=6)
    draw.line([(85, 15), (160 if touching else 120, 15), (98, 75)], fill=20, width=6)
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
        assert there.boxes == here.boxes and there.readings == here.readings
    assert len(pool.prepare(data, line=True).digits) == 3  # three digits, three boxes
    touching = _line(touching=True)  # the 7 and the 0 joined: one wide piece, read more than one way
    here, there = prepare(touching, line=True), pool.prepare(touching, line=True)
    assert any(len(ways) > 1 for ways in here.readings) and there.readings == here.readings
    assert np.array_equal(there.digits, here.digits) and there.boxes == here.boxes
    blank = io.BytesIO()
    Image.new("L", (40, 40), 255).save(blank, "PNG")
    assert len(pool.prepare(blank.getvalue()).digits) == 0  # no ink: no digits, no error


def test_a_refusal_comes_back_with_its_code(pool):
    with pytest.raises(DigitrecError) as e:
        pool.prepare(b"%!PS-Adobe-3.0 EPSF-3.0\n")
    assert e.value.code == "unsupported_format"


def test_past_the_deadline_the_worker_is_killed_and_replaced():
    pool = DecodePool(workers=1, deadline_s=0.05)
    bomb = palette_bomb()  # about a second of decoding
    try:
        start = time.monotonic()
        with pytest.raises(DigitrecError) as e:
            pool.prepare(bomb)
        assert e.value.code == "too_costly" and pool.replaced == 1
        assert time.monotonic() - start < 2.0  # not the second of decoding: stopped at the deadline, plus a restart
        pool.deadline_s = 5.0
        assert len(pool.prepare(_line(), line=True).digits) == 3  # the fresh worker takes the next image
    finally:
        pool.close()


def test_over_its_memory_budget_an_image_is_refused_and_the_pool_goes_on():
    pool = DecodePool(workers=1, memory_mb=32)
    try:
        with pytest.raises(DigitrecError) as e:
            pool.prepare(palette_bomb(4000, 4000))  # 16 Mpx: under the pixel limits, past 32 MB once expanded
        assert e.value.code == "too_costly"
        assert len(pool.prepare(_line(), line=True).digits) == 3
    finally:
        pool.close()


def test_when_the_client_goes_the_work_stops():
    pool = DecodePool(workers=1)
    cancel, bomb = threading.Event(), palette_bomb()
    try:
        threading.Timer(0.1, cancel.set).start()  # the client goes while its image is being decoded
        start = time.monotonic()
        with pytest.raises(Cancelled):
            pool.prepare(bomb, cancel=cancel)
        assert time.monotonic() - start < 2.0 and pool.replaced == 1
        with pytest.raises(Cancelled):  # an image after the client went: no worker is touched
            pool.prepare(bomb, cancel=cancel)
        assert pool.replaced == 1
        assert len(pool.prepare(_line(), line=True).digits) == 3
    finally:
        pool.close()


@pytest.mark.parametrize("header, digits", [
    ({"error": "x"}, b""),  # no code
    ({"error": "x", "code": "internal"}, b""),  # a code a worker does not give
    ({"count": 1, "boxes": []}, b"\0" * 100),  # bytes that do not match the count
    ({"count": -1, "boxes": []}, b""),
    ({"count": 1.0, "boxes": []}, b"\0" * 3136),
    ({"count": 2, "boxes": []}, b"\0" * 6272),  # two digits for a single-digit image
    ({"count": 1, "boxes": []}, np.full(784, np.nan, np.float32).tobytes()),
    ({"count": 1, "boxes": []}, np.full(784, 7, np.float32).tobytes()),
])
def test_a_malformed_answer_is_an_invalid_image_never_another_error(header, digits):
    from digitrec.serve.sandbox import _answer

    with pytest.raises(DigitrecError) as e:
        _answer(header, digits, line=False)
    assert e.value.code == "invalid_image"


def test_a_line_answer_needs_a_box_per_digit():
    from digitrec.serve.sandbox import _answer

    zeros = np.zeros((2, 28, 28), np.float32).tobytes()
    assert len(_answer({"count": 2, "boxes": [[0, 0, 5, 5], [6, 0, 9, 5]]}, zeros, line=True).digits) == 2
    with pytest.raises(DigitrecError):
        _answer({"count": 2, "boxes": []}, zeros, line=True)
    boxes = [[0, 0, 5, 5], [6, 0, 9, 5]]
    assert _answer({"count": 2, "boxes": boxes, "readings": [[[0], [0, 1]]]}, zeros, line=True).readings == (
        ((0,), (0, 1)),)
    for readings in ([[[2]]], [[[-1]]], [[[]]], [[]], [[0]], "2", [[[1.0]]], [[[True]]],  # not indices of digits
                     [[[0]], [[0]]], [[[0, 0, 0]]]):  # a digit in two pieces, or twice in one reading
        with pytest.raises(DigitrecError):
            _answer({"count": 2, "boxes": boxes, "readings": readings}, zeros, line=True)
    with pytest.raises(DigitrecError):  # readings belong to lines
        _answer({"count": 1, "boxes": [], "readings": [[[0]]]}, zeros[:3136], line=False)


def test_a_sheet_answer_carries_its_plan_and_strips_checked():
    from digitrec.serve.sandbox import _answer

    zeros = np.zeros((2, 28, 28), np.float32).tobytes()
    strip = np.zeros((32, 40), np.float32).tobytes()
    good = {"count": 2, "boxes": [[0, 0, 5, 5], [6, 0, 9, 5]], "readings": [[[0]], [[1]]],
            "plan": [[[["*", 0, [0, 1], [0, 0, 9, 5]]]]], "strips": [40]}  # lines -> numbers -> parts
    answer = _answer(good, zeros + strip, line=True)
    assert answer.plan == (((("*", 0, (0, 1), (0, 0, 9, 5)),),),) and answer.strips[0].shape == (32, 40)
    bad_plans = ([[[["*", 1, [0, 1], [0, 0, 9, 5]]]]],  # no such strip
                 [[[["*", 0, [0, 0], [0, 0, 9, 5]]]]],  # a piece twice
                 [[[["*", 0, [], [0, 0, 9, 5]]]]], [[[["*", 0, [0, 1], [0, 0, 9]]]]],
                 [[[["x", [0, 0, 1, 1], -1]]]], [[[0, 1, 2]]], [[0]], [[["*", 0, [0, 1], [0, 0, 9, 5]]]])
    for plan in bad_plans:
        with pytest.raises(DigitrecError):
            _answer({**good, "plan": plan}, zeros + strip, line=True)
    for widths, data in (([44], strip), ([40, 40], strip), ([41], strip), ([2000], strip)):
        with pytest.raises(DigitrecError):
            _answer({**good, "strips": widths}, zeros + data, line=True)
    with pytest.raises(DigitrecError):  # ink values out of [0, 1]
        _answer(good, zeros + np.full((32, 40), 2, np.float32).tobytes(), line=True)


@pytest.mark.parametrize("message", [
    b"", b"\0\0", b"\0\0\0\x09{}",  # shorter than its header says
    (1 << 20).to_bytes(4, "big") + b"{}" * 10,  # a header over MAX_HEADER
    b"\0\0\0\x03{]}", b"\0\0\0\x02[]",  # not JSON; JSON but not an object
])
def test_a_malformed_frame_is_refused_as_not_an_answer(message):
    from digitrec.serve.sandbox import _framed, _unframed

    with pytest.raises(ValueError):
        _unframed(message)
    assert _unframed(_framed(b'{"count": 0}', b"xyz")) == ({"count": 0}, b"xyz")
