"""segment(): which connected pieces of a line are merged into one digit, on drawn shapes with known answers."""

import numpy as np

from digitrec.preprocess import Ink
from digitrec.segment import segment


def ink(mask: np.ndarray) -> Ink:
    return Ink(mask.astype(np.float32), mask)


def boxes(mask: np.ndarray) -> list[tuple[int, int]]:
    return [(box[0], box[2]) for _, box in segment(ink(mask))]


def test_a_digit_leaning_over_its_neighbour_stays_two_digits():
    line = np.zeros((60, 80), bool)
    line[10:15, 10:31] = True  # a "7": its top bar reaches over the next digit's first columns ...
    line[10:50, 16:20] = True
    line[20:50, 28:48] = True  # ... which starts lower down: 2 columns shared, no pixel touching
    assert boxes(line) == [(10, 31), (28, 48)]


def test_a_thin_one_beside_a_digit_is_not_merged_into_it():
    line = np.zeros((60, 80), bool)
    line[10:50, 10:12] = True  # a "1" two pixels wide
    line[10:50, 17:37] = True  # 5 px of paper, then a wide digit
    assert boxes(line) == [(10, 12), (17, 37)]


def test_pieces_above_each_other_are_one_digit():
    line = np.zeros((60, 80), bool)
    line[10:30, 20:40] = True  # a digit drawn in two strokes, one above the other, shifted by 4 columns
    line[32:52, 24:42] = True  # (too tall to count as a fragment: this is the overlap rule at work)
    line[10:52, 50:54] = True  # and a 1 beside it
    assert boxes(line) == [(20, 42), (50, 54)]
