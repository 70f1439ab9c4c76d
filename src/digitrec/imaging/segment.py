"""A line of handwritten digits -> one ink image per digit, left to right.

Connected components of the ink are the first guess; pieces that sit above each other (a broken 5, a 4 drawn
in two strokes) are merged.  A piece far wider than the line is tall holds touching digits, or is one wide
digit (a 5 with a long flag, an italic 8): width alone cannot tell, nor where to cut.  So such a piece is read
by recognition (the classic over-segmentation and search): cuts are proposed at the columns where the ink is
thinnest, every way of reading the piece as a row of digits of plausible widths between those cuts (the whole
piece among them) is a *reading*, and the reader keeps the reading its model is most sure of
(predict.best_readings).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from digitrec.errors import DigitrecError
from digitrec.imaging.decode import MAX_DIGITS
from digitrec.imaging.ink import Ink

# A piece wider than this x the line's digit height may hold several touching digits.  Chosen on lines of
# validation digits (benchmarks/validation_lines.py) with predict.SPLIT_COST: 1.1 with that price read 44.5% of
# the touching lines exactly, against 40% for 1.25 without it, and the other kinds as well.  Lower reads more
# touching lines (0.8: 49%) but cuts marks that are not digits into two "digits" (lines with one: 37% right
# against 81%).
TOO_WIDE = 1.1
DIGIT_ASPECT = 0.7  # a typical digit's width / height, for guessing how many digits a wide piece holds
FRAGMENT = 0.45  # a piece shorter than this x the tallest piece is part of a neighbouring digit
# A digit cut out of a wide piece is between these x the line's height wide (a 1 drawn with a serif ... a wide 0).
NARROWEST, WIDEST = 0.2, 1.6
CUT_SPACING = 0.1  # proposed cuts are at least this x the line's height apart
MAX_CUTS = 10  # at most this many cuts proposed in one piece (the thinnest), and
MAX_READINGS = 64  # this many readings of it: bounds on the work and the model calls one piece may cost


@dataclass
class Piece:
    x0: int
    x1: int
    labels: set[int]

    @property
    def width(self) -> int:
        return self.x1 - self.x0


def _overlap(a: Piece, b: Piece) -> float:
    """Horizontal overlap as a fraction of the narrower piece."""
    return max(0, min(a.x1, b.x1) - max(a.x0, b.x0)) / max(1, min(a.width, b.width))


Digit = tuple[Ink, tuple[int, int, int, int]]  # a digit's ink and its box (x0, y0, x1, y1)


def segment(ink: Ink) -> list[tuple[list[Digit], list[tuple[int, ...]]]]:
    """Split the ink of a line into digits, left to right: per piece of ink, (candidate digits, readings), a
    reading being the indices of the candidates that make one way to read the piece, left to right.  Most
    pieces have one candidate and one reading, (0,)."""
    labels, n = ndimage.label(ink.mask, structure=np.ones((3, 3)))
    if n == 0:
        return []
    slices = ndimage.find_objects(labels)
    pieces = sorted((Piece(s[1].start, s[1].stop, {i + 1}) for i, s in enumerate(slices)), key=lambda p: p.x0)
    merged: list[Piece] = []
    for piece in pieces:
        if merged and _overlap(merged[-1], piece) >= 0.5:
            last = merged[-1]
            merged[-1] = Piece(min(last.x0, piece.x0), max(last.x1, piece.x1), last.labels | piece.labels)
        else:
            merged.append(piece)
    merged = _join_fragments(merged, labels)
    line_height = float(np.median([_height(p, labels) for p in merged]))
    line, count = [], 0
    for piece in merged:
        mask = np.isin(labels, list(piece.labels))
        candidates: dict[tuple[int, int], Digit | None] = {}
        readings = []
        for columns in _readings(mask, piece, line_height):
            for span in columns:
                if span not in candidates:
                    candidates[span] = _digit(ink, mask, *span)
            if all(candidates[span] is not None for span in columns):  # a cut through paper holds no digit
                readings.append(columns)
        index = {span: i for i, span in enumerate(dict.fromkeys(span for columns in readings for span in columns))}
        count += len(index)
        if count > MAX_DIGITS:
            raise DigitrecError(f"image too costly to read (over {MAX_DIGITS} candidate digits)", code="too_costly")
        if readings:
            line.append(([candidates[span] for span in index], [tuple(index[span] for span in columns)
                                                               for columns in readings]))
    return line


def _digit(ink: Ink, mask: np.ndarray, x0: int, x1: int) -> Digit | None:
    """The piece's ink in columns x0..x1, cropped to its rows there (to_mnist crops anyway; a full-size copy per
    candidate cost a wide line hundreds of MB), with its box in the line; None where those columns hold no ink."""
    part = mask[:, x0:x1]
    rows = np.nonzero(part.any(1))[0]
    if not len(rows):
        return None
    y0, y1 = int(rows[0]), int(rows[-1]) + 1
    part = np.ascontiguousarray(part[y0:y1])
    return Ink(np.where(part, ink.values[y0:y1, x0:x1], 0).astype(np.float32), part), (x0, y0, x1, y1)


def _height(piece: Piece, labels: np.ndarray) -> int:
    rows = np.nonzero(np.isin(labels[:, piece.x0:piece.x1], list(piece.labels)).any(1))[0]
    return int(rows[-1] - rows[0] + 1)


def _join_fragments(pieces: list[Piece], labels: np.ndarray) -> list[Piece]:
    """A piece much shorter than the line's digits (a detached bar of a 5, a broken-off stroke) joins the
    nearest piece beside it."""
    pieces = list(pieces)
    while len(pieces) > 1:
        heights = [_height(p, labels) for p in pieces]
        tall = max(heights)
        short = [i for i, h in enumerate(heights) if h < FRAGMENT * tall]
        if not short:
            break
        i = min(short, key=lambda k: heights[k])
        gap = lambda j: max(pieces[j].x0 - pieces[i].x1, pieces[i].x0 - pieces[j].x1)
        j = min((j for j in (i - 1, i + 1) if 0 <= j < len(pieces)), key=gap)
        if gap(j) > FRAGMENT * tall:  # far from everything: a stray mark, not part of a digit
            pieces.pop(i)
            continue
        a, b = pieces[min(i, j)], pieces[max(i, j)]
        pieces[min(i, j)] = Piece(min(a.x0, b.x0), max(a.x1, b.x1), a.labels | b.labels)
        pieces.pop(max(i, j))
    return pieces


def _readings(mask: np.ndarray, piece: Piece, line_height: float) -> list[list[tuple[int, int]]]:
    """Ways to read one piece as digits, each the column ranges of its digits, left to right: the piece itself,
    and when it is too wide for one digit, the rows of digits of plausible widths between proposed cuts, fewest
    digits first (at most MAX_READINGS; MAX_CUTS bounds the work to 2^MAX_CUTS rows), and the equal-spacing
    cut into as many digits as its width suggests (so a piece of more touching digits than the cuts allow is
    still cut)."""
    whole = [(piece.x0, piece.x1)]
    if piece.width <= TOO_WIDE * line_height:
        return [whole]
    column_ink = mask[:, piece.x0:piece.x1].sum(0).astype(np.float64)
    count = max(2, round(piece.width / (DIGIT_ASPECT * line_height)))
    guess = [(piece.x0 + a, piece.x0 + b) for a, b in _cut(column_ink, piece.width, count)]
    points = [piece.x0, *_cut_candidates(column_ink, piece, line_height, count), piece.x1]
    narrowest, widest = NARROWEST * line_height, WIDEST * line_height
    fits = [[j for j in range(i + 1, len(points)) if narrowest <= points[j] - points[i] <= widest]
            for i in range(len(points))]

    def rows(i: int, digits: int):  # rows of `digits` digits from points[i] to the piece's end
        if digits == 1:
            if len(points) - 1 in fits[i]:
                yield [(points[i], points[-1])]
            return
        for j in fits[i]:
            for rest in rows(j, digits - 1):
                yield [(points[i], points[j]), *rest]

    readings = [whole]
    for digits in range(2, len(points)):
        readings += itertools.islice(rows(0, digits), MAX_READINGS - len(readings))
    return readings + ([guess] if guess not in readings else [])


def _cut_candidates(column_ink: np.ndarray, piece: Piece, line_height: float, count: int) -> list[int]:
    """Columns where a wide piece may be cut: where its ink is thinner than in most of its columns and thinnest
    within CUT_SPACING x the line's height either side, and where the equal-spacing guesses for `count` digits,
    one fewer or one more fall; the thinnest MAX_CUTS of them, at least CUT_SPACING x the line's height apart."""
    near = max(1, int(CUT_SPACING * line_height))
    typical = np.median(column_ink)
    proposed = {c for c in range(near, piece.width - near)
                if column_ink[c] < typical and column_ink[c] <= column_ink[c - near:c + near + 1].min()}
    guesses = {x for k in (count - 1, count, count + 1) if k >= 2 for _, x in _cut(column_ink, piece.width, k)[:-1]}
    proposed |= guesses
    chosen: list[int] = []
    # Thinnest first; among equally thin ones (a comb, a plateau), those nearest the guesses, not the leftmost.
    for c in sorted(proposed, key=lambda c: (column_ink[c], min(abs(c - g) for g in guesses), c)):
        if 0 < c < piece.width and all(abs(c - d) >= near for d in chosen):
            chosen.append(c)
            if len(chosen) == MAX_CUTS:
                break
    return sorted(piece.x0 + c for c in chosen)


def _cut(column_ink: np.ndarray, width: int, count: int) -> list[tuple[int, int]]:
    """A piece `width` columns wide cut into `count` digits at the columns with the least ink near equally spaced
    positions, as column ranges relative to the piece."""
    step = width / count
    bounds = [0]
    for k in range(1, count):
        lo, hi = int(k * step - step / 3), int(k * step + step / 3)
        cut = lo + int(np.argmin(column_ink[lo:max(hi, lo + 1)]))
        if bounds[-1] < cut < width:  # (a piece a few columns wide: fewer digits, never an empty one)
            bounds.append(cut)
    bounds.append(width)
    return list(zip(bounds[:-1], bounds[1:]))

