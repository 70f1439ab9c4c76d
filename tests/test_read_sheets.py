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
    from digitrec.inference.predict import read_images

    items = make_numbers(*validation_digits, 120, seed=51) + \
        make_numbers(*validation_digits, 60, seed=52, kinds=("plain",), overlap=3)
    records = read_images(items, predictor)
    confidence = np.array([r.lines[0].numbers[0].confidence if r.lines else 0.0 for r in records])
    right = np.array([r.text == text for r, (text, _) in zip(records, items)])
    assert abs(confidence.mean() - right.mean()) < 0.08, (confidence.mean(), right.mean())
    assert right[confidence >= 0.9].mean() >= 0.9
