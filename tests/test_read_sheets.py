"""Reading sheets: several lines, several numbers on a line, separators; the layout on drawn ink, and the whole
reader on sheets of real MNIST digits (the validation carve of the training split; data/sheets.py)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from synth import _png

from digitrec.errors import DigitrecError
from digitrec.imaging.ink import Ink
from digitrec.imaging.layout import Run, Separator, layout
from digitrec.imaging.prepare import prepare


def _ink(h: int, w: int, boxes: list[tuple[int, int, int, int]]) -> Ink:
    mask = np.zeros((h, w), bool)
    for x0, y0, x1, y1 in boxes:
        mask[y0:y1, x0:x1] = True
    return Ink(mask.astype(np.float32), mask)


def _shape(lines) -> list[list[str]]:
    return [["".join(p.char if isinstance(p, Separator) else "R" for p in n.parts) for n in line.numbers]
            for line in lines]


def test_layout_finds_lines_numbers_and_separators():
    digit = lambda x, y: (x, y, x + 12, y + 20)  # noqa: E731  (a bar 12 wide, 20 tall: a digit's box)
    boxes = [digit(10, 10), digit(26, 10),          # line 1: "RR"
             (44, 26, 48, 30),                       # a dot on the baseline
             digit(52, 10),                          # "RR.R"
             digit(150, 12), digit(166, 12),         # far right on line 1: a second number
             digit(30, 60), (46, 68, 60, 71), digit(64, 60)]  # line 2, indented: "R-R"
    lines = layout(_ink(100, 200, boxes))
    assert _shape(lines) == [["R.R", "R"], ["R-R"]]
    assert all(isinstance(p, Run) for p in lines[0].numbers[1].parts)


def test_layout_follows_a_skewed_line():
    # Six digits on one line falling 3 px per digit (about 10 degrees would be too many; this is 8.5 degrees
    # over the digits' pitch of 20 px ... within the search when measured from the centres).
    boxes = [(10 + 16 * i, 10 + 2 * i, 22 + 16 * i, 30 + 2 * i) for i in range(6)]
    assert _shape(layout(_ink(60, 120, boxes))) == [["R"]]


def test_a_colon_is_one_separator():
    boxes = [(10, 10, 22, 30), (26, 14, 30, 18), (26, 24, 30, 28), (34, 10, 46, 30)]
    assert _shape(layout(_ink(40, 60, boxes))) == [["R:R"]]


def test_a_small_mark_under_a_digit_is_part_of_it_not_a_separator():
    # A dot in the gap between two digits is a decimal point; the same dot under the first digit (a broken-off
    # stroke, the tail of a 9) is part of that digit.
    digits = [(10, 10, 22, 30), (30, 10, 42, 30)]
    assert _shape(layout(_ink(40, 60, digits + [(24, 27, 28, 31)]))) == [["R.R"]]
    assert _shape(layout(_ink(40, 60, digits + [(14, 27, 18, 31)]))) == [["R"]]
    assert _shape(layout(_ink(40, 70, [(d[0] + 8, d[1], d[2] + 8, d[3]) for d in digits] + [(4, 27, 8, 31)]))) == \
        [["R"]]  # nor is one before the first digit: no number begins with a point


def test_a_dash_drawn_in_two_strokes_is_one_dash():
    digits = [(10, 10, 22, 30), (43, 10, 55, 30)]
    assert _shape(layout(_ink(40, 70, digits + [(26, 19, 32, 22), (33, 19, 39, 22)]))) == [["R-R"]]


def test_a_sheet_keeps_the_dots_of_a_colon_beside_small_digits_and_drops_dust():
    from digitrec.imaging.ink import find_ink

    grey = np.ones((400, 800), np.float32)  # a page of 320,000 px
    for x in (100, 130, 190, 220):
        grey[100:130, x:x + 6] = 0  # digits 30 px tall, strokes of 180 px
    grey[108:112, 162:166] = grey[120:124, 162:166] = 0  # a colon's dots, 16 px each
    for y in range(210, 390, 10):
        for x in range(20, 780, 45):
            grey[y:y + 2, x:x + 2] = 0  # dust, 306 specks of 2x2: far more of them than of strokes
    assert find_ink(grey, sheet=True).mask[100:130, 160:168].any()
    assert not find_ink(grey).mask[100:130, 160:168].any()  # (a single digit's image drops them)
    assert not find_ink(grey, sheet=True).mask[200:].any()


def test_the_sequence_readers_reading_is_kept_only_where_it_is_the_better_one():
    from digitrec.inference.predict import _runs_read_whole

    parts = (("*", 0, (5, 6), (0, 0, 40, 20)),)
    as_pieces = (5, 6)

    def keeps(read, cut):
        kept = _runs_read_whole(parts, [read], lambda pieces: cut, not_a_digit_below=0.5)
        assert kept in (parts, as_pieces)
        return kept == parts

    touching = [(3, 0.99, (0, 4)), (8, 0.98, (4, 8))]
    assert keeps(touching, [(None, 0.2)])  # a pair the classifier calls no digit, read surely
    assert not keeps([(5, 0.66, (0, 4)), (8, 0.98, (4, 8))], [(None, 0.1)])  # a star the reader is unsure of
    assert not keeps(touching, [(3, 0.999), (8, 0.95)])  # both read alike: the classifier's calibrated digits
    assert keeps(touching, [(3, 0.95), (3, 0.93)])  # they differ, the reader more probable
    assert not keeps(touching, [(3, 0.999), (6, 0.999)])  # they differ, the cut more probable
    assert not keeps([], [(None, 0.2)])  # the reader read nothing
    assert _runs_read_whole(parts, None, lambda pieces: [], 0.5) == as_pieces  # no reader


def test_a_date_is_one_or_two_digits_twice_then_a_year_or_a_day_and_month():
    from digitrec.inference.predict import _is_date

    assert _is_date([[1, 0], [0, 7], [1, 8, 5, 7]]) and _is_date([[7], [1, 2], [2, 6]])
    assert _is_date([[2, 5], [1, 2]]) and _is_date([[1, 2], [2, 5]])  # d/m or m/d
    assert not _is_date([[6, 9], [9]])  # no day 69 in a month 9: a 1 leaning hard in 6919
    assert not _is_date([[1, 0], [0, 7], [1, 8, 5]]) and not _is_date([[1], [2], [3], [4]])
    assert not _is_date([[1, 0, 0], [0, 7], [1, 8, 5, 7]]) and not _is_date([[], [0, 7], [1, 8, 5, 7]])


@pytest.mark.mnist
def test_a_one_leaning_like_a_slash_is_read_as_a_one_in_a_date_and_elsewhere(validation_digits, predictor):
    from digitrec.data.sheets import by_class, draw_sheet
    from digitrec.imaging.layout import _is_slash
    from digitrec.inference.predict import read_images

    bank = by_class(*validation_digits)
    bank[1] = np.stack([g for g in bank[1] if _is_slash(g > 76)])  # real 1s that lean as far as a slash
    assert len(bank[1]) >= 5
    rng = np.random.default_rng(21)
    texts = ["10/07/1857", "21/11/1961", "01/12/2011", "6919", "31-12-11"]
    items = [(text, draw_sheet([[text]], bank, rng)) for text in texts for _ in range(3)]
    read = [r.text for r in read_images(items, predictor)]
    assert sum(r == text for r, (text, _) in zip(read, items)) >= len(items) - 2, read
    assert all("/" not in r for r in read[9:]), read


def test_a_sheet_of_too_many_lines_is_refused():
    boxes = [(10 + 20 * k, 10 + 30 * i, 22 + 20 * k, 30 + 30 * i) for i in range(80) for k in range(3)]
    with pytest.raises(DigitrecError) as e:
        layout(_ink(2440, 100, boxes))
    assert e.value.code == "too_costly"


def test_a_page_of_thousands_of_marks_is_answered_in_bounded_time():
    rng = np.random.default_rng(0)
    page = np.full((1200, 1200), 255, np.uint8)
    for y in range(8, 1200, 14):
        for x in rng.integers(0, 1180, 20):
            page[y:y + 8, x:x + 3] = 0
    start = time.perf_counter()
    try:
        prepared = prepare(_png(page), line=True)
        assert len(prepared.digits) <= 1024
    except DigitrecError as e:
        assert e.code == "too_costly"
    assert time.perf_counter() - start < 5


@pytest.fixture(scope="module")
def validation_digits(mnist_dir):
    from digitrec.data.datasets import load_split, split_validation

    _, validation = split_validation(load_split("mnist", mnist_dir, train=True), 5000)
    return validation.images.numpy(), validation.labels.numpy()


@pytest.fixture(scope="module")
def predictor():
    from digitrec.inference.predict import Predictor

    return Predictor()


@pytest.mark.mnist
@pytest.mark.slow
def test_sheets_of_several_lines_are_read(validation_digits, predictor):
    from digitrec.data.sheets import make_sheets
    from digitrec.inference.predict import read_images

    sheets = make_sheets(*validation_digits, 30, seed=11)
    records = read_images(sheets, predictor)
    exact = np.mean([r.text == text for r, (text, _) in zip(records, sheets)])
    lines = np.mean([r.text.count("\n") == text.count("\n") for r, (text, _) in zip(records, sheets)])
    assert lines >= 0.9 and exact >= 0.5, (lines, exact)
    first = records[0].to_dict()
    assert first["lines"] and first["lines"][0]["numbers"][0]["digits"]
    assert first["digits"] == [d for line in first["lines"] for n in line["numbers"] for d in n["digits"]]


@pytest.mark.mnist
@pytest.mark.slow
def test_numbers_with_separators_are_read(validation_digits, predictor):
    from digitrec.data.sheets import make_numbers
    from digitrec.inference.predict import read_images

    numbers = make_numbers(*validation_digits, 40, seed=12)
    records = read_images(numbers, predictor)
    exact = np.mean([r.text == text for r, (text, _) in zip(records, numbers)])
    assert exact >= 0.8, exact
    bare = read_images(numbers[:5], predictor, digits_only=True)
    assert all(r.text.isdigit() for r in bare if "?" not in r.text)


@pytest.mark.mnist
@pytest.mark.slow
def test_a_numbers_confidence_says_how_often_it_is_right(validation_digits, predictor):
    """Numbers drawn from the validation digits with other seeds than benchmarks/read_calibration.py fitted on."""
    from digitrec.data.sheets import make_numbers
    from digitrec.inference.predict import load_reader, read_images

    items = make_numbers(*validation_digits, 120, seed=51) + \
        make_numbers(*validation_digits, 60, seed=52, kinds=("plain",), overlap=3)
    records = read_images(items, predictor, reader=load_reader())  # as `read` reads them
    confidence = np.array([r.lines[0].numbers[0].confidence if r.lines else 0.0 for r in records])
    right = np.array([r.text == text for r, (text, _) in zip(records, items)])
    assert abs(confidence.mean() - right.mean()) < 0.08, (confidence.mean(), right.mean())
    assert right[confidence >= 0.9].mean() >= 0.9


def test_best_path_merges_repeats_and_drops_blanks():
    from digitrec.inference.backends import _best_path

    columns = np.full((7, 11), 0.01)
    for t, c in enumerate([0, 4, 4, 0, 4, 8, 0]):  # blank, 3, 3, blank, 3, 7, blank
        columns[t, c] = 0.9
    columns[2, 4] = 0.95
    read = _best_path(columns)
    assert [d for d, _, _ in read] == [3, 3, 7]
    assert read[0] == (3, 0.95, (4, 12)) and read[2][2] == (20, 24)


def test_a_strip_is_the_ink_24_px_tall_in_32():
    from digitrec.imaging.ink import to_strip

    mask = np.zeros((100, 300), bool)
    mask[20:80, 30:270] = True
    strip = to_strip(Ink(mask.astype(np.float32), mask))
    rows, cols = np.flatnonzero(strip.max(1) > 0.5), np.flatnonzero(strip.max(0) > 0.5)
    assert strip.shape[0] == 32 and strip.shape[1] % 4 == 0
    assert 23 <= len(rows) <= 25 and abs(len(cols) - 240 * 24 / 60) <= 2


@pytest.mark.mnist
@pytest.mark.slow
def test_the_sequence_reader_reads_touching_digits_the_cutter_misses(validation_digits, predictor):
    from digitrec.data.sheets import make_numbers
    from digitrec.inference.predict import load_reader, read_images

    reader = load_reader()
    assert reader is not None, "the package ships weights/reader.safetensors"
    touching = make_numbers(*validation_digits, 60, seed=13, kinds=("plain",), overlap=3)
    exact = {name: np.mean([r.text == text for r, (text, _) in zip(read_images(touching, predictor, reader=r_),
                                                                    touching)])
             for name, r_ in (("cut", None), ("reader", reader))}
    assert exact["reader"] >= exact["cut"] + 0.15 and exact["reader"] >= 0.65, exact
    spaced = make_numbers(*validation_digits, 40, seed=14)
    with_reader = read_images(spaced, predictor, reader=reader)
    assert np.mean([r.text == text for r, (text, _) in zip(with_reader, spaced)]) >= 0.85
    digits = [d for r in with_reader for d in r.digits]
    assert all(d.box[0] <= d.box[2] and d.box[1] < d.box[3] for d in digits)


@pytest.mark.mnist
@pytest.mark.slow
def test_a_touching_pair_too_narrow_to_cut_is_read_by_the_sequence_reader(validation_digits, predictor):
    from digitrec.data.sheets import by_class, draw_sheet
    from digitrec.inference.predict import load_reader, read_images

    rng = np.random.default_rng(15)
    bank = by_class(*validation_digits)
    pairs = [f"{a}{b}" for a, b in rng.integers(0, 10, (40, 2))]
    items = [(text, draw_sheet([[text]], bank, rng, overlap=3)) for text in pairs]
    exact = {name: np.mean([r.text == text for r, (text, _) in zip(read_images(items, predictor, reader=r_), items)])
             for name, r_ in (("cut", None), ("reader", load_reader()))}
    assert exact["reader"] >= 0.85 and exact["reader"] >= exact["cut"] + 0.1, exact


def test_a_sheet_of_thousands_of_marks_is_refused_quickly():
    boxes = [(4 * k, 6 * i, 4 * k + 2, 6 * i + 2) for i in range(70) for k in range(70)]  # 4,900 dots
    start = time.perf_counter()
    with pytest.raises(DigitrecError) as e:
        layout(_ink(430, 290, boxes))
    assert e.value.code == "too_costly" and time.perf_counter() - start < 1


def test_small_marks_close_above_a_mark_are_no_line_of_their_own():
    eyes_and_mouth = [(20, 10, 26, 30), (50, 10, 56, 30), (12, 40, 64, 66)]  # eyes 20 tall, 10 above a 26-tall mark
    assert _shape(layout(_ink(80, 80, eyes_and_mouth))) == [["R"]]
    two_lines = [(20, 10, 32, 40), (40, 10, 52, 40), (24, 52, 36, 82)]  # digits as tall on both lines, 12 apart
    assert _shape(layout(_ink(100, 80, two_lines))) == [["R"], ["R"]]
