"""segment(): which connected pieces of a line are merged into one digit, on drawn shapes with known answers."""

import numpy as np

from digitrec.imaging.ink import Ink
from digitrec.imaging.segment import segment
from digitrec.inference.predict import best_reading


def best_readings(top, readings):
    """The candidates a line keeps: per piece, its best reading (no readings: every candidate is a digit)."""
    log_top = np.log(np.maximum(top, 1e-12))
    return [i for ways in readings for i in best_reading(log_top, ways)] if readings else list(range(len(top)))


def ink(mask: np.ndarray) -> Ink:
    return Ink(mask.astype(np.float32), mask)


def readings(mask: np.ndarray) -> list[list[list[tuple[int, int]]]]:
    """Per piece of ink, its readings, each as the column ranges of its digits."""
    return [[[(digits[i][1][0], digits[i][1][2]) for i in way] for way in ways] for digits, ways in segment(ink(mask))]


def boxes(mask: np.ndarray) -> list[tuple[int, int]]:
    """The digits' column ranges, for lines whose pieces have one reading each."""
    found = readings(mask)
    assert all(len(piece) == 1 for piece in found), found
    return [columns for piece in found for columns in piece[0]]


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


def test_a_piece_too_wide_for_one_digit_is_read_whole_and_cut_where_its_ink_is_thinnest():
    line = np.zeros((60, 120), bool)
    line[10:50, 10:14] = True  # a 1, 40 px tall: the line's digit height
    line[10:50, 30:55] = True  # one piece 55 px wide: one wide digit or two touching ones; its ink is thinnest
    line[28:32, 55:60] = True  # where they touch
    line[10:50, 60:85] = True
    one, wide = readings(line)
    assert one == [[(10, 14)]]
    assert wide[0] == [(30, 85)] and [(30, 55), (55, 85)] in wide  # whole first; the cut at the thin join
    for way in wide:  # every reading covers the piece, left to right, with digits 8-64 px wide
        assert way[0][0] == 30 and way[-1][1] == 85 and all(a[1] == b[0] for a, b in zip(way, way[1:]))
        assert all(8 <= x1 - x0 <= 64 for x0, x1 in way)
    assert [len(way) for way in wide] == sorted(len(way) for way in wide)  # fewest digits first


def test_the_reading_most_likely_all_right_is_kept():
    # a 1 (candidate 0), a wide piece read whole (1) or cut (2, 3), a 7 (4)
    readings = (((0,),), ((1,), (2, 3)), ((4,),))
    whole_wins = np.array([0.99, 0.97, 0.99, 0.10, 0.99])  # cut: a body and a "not a digit" flag
    cut_wins = np.array([0.99, 0.20, 0.99, 0.98, 0.99])  # whole: two digits side by side, "not a digit"
    assert best_readings(whole_wins, readings) == [0, 1, 4]
    assert best_readings(cut_wins, readings) == [0, 2, 3, 4]
    assert best_readings(whole_wins, ()) == [0, 1, 2, 3, 4]  # no readings: every candidate is a digit
    # A cut a little more likely right than the whole does not pay for its extra digit (SPLIT_COST): a wide 0
    # read 0.95 stays whole against its halves read as 1s at 0.99 each (0.98); read 0.85, the halves win.
    assert best_readings(np.array([0.99, 0.95, 0.99, 0.99, 0.99]), readings) == [0, 1, 4]
    assert best_readings(np.array([0.99, 0.85, 0.99, 0.99, 0.99]), readings) == [0, 2, 3, 4]


def test_a_long_run_of_touching_digits_is_still_cut_at_its_joins_and_its_readings_are_bounded():
    from digitrec.imaging.segment import MAX_READINGS

    line = np.zeros((60, 880), bool)
    for k in range(30):  # 30 "digits" 40 px tall and 24 wide (DIGIT_ASPECT x 40 with their joins), each joined
        line[10:50, 10 + 28 * k:34 + 28 * k] = True  # to the next by a thin bar: one piece of ink
        line[28:31, 34 + 28 * k:38 + 28 * k] = True
    (ways,) = readings(line[:, :850])
    assert len(ways) <= MAX_READINGS + 1 and ways[0] == [(10, 850)]
    (cut,) = [way for way in ways if len(way) == 30]  # more digits than proposed cuts: the equal-spacing cut
    assert all(34 + 28 * k <= x1 <= 38 + 28 * k for k, (_, x1) in enumerate(cut[:-1]))  # at the joins


def test_thin_marks_and_too_many_candidates_give_digits_or_a_clear_refusal():
    import pytest

    from digitrec.errors import DigitrecError

    for height, width in ((1, 10), (1, 100), (2, 10), (2, 40)):  # a dash: wide for its height, a few columns
        line = np.zeros((20, 120), bool)
        line[8:8 + height, 5:5 + width] = True
        assert readings(line) and all(x1 > x0 for piece in readings(line) for way in piece for x0, x1 in way)
    comb = np.zeros((20, 2048), bool)  # 51 combs 3.8 times as wide as tall, each with cuts proposed between
    for k in range(51):  # all its teeth: over MAX_DIGITS candidates in all
        comb[5:15, 40 * k:40 * k + 38:2] = True
        comb[5:7, 40 * k:40 * k + 38] = True
    with pytest.raises(DigitrecError) as e:
        segment(ink(comb))
    assert e.value.code == "too_costly"
