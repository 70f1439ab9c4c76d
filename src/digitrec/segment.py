"""A line of handwritten digits -> one ink image per digit, left to right.

Connected components of the ink are the first guess; pieces that sit above each other (a broken 5, a 4 drawn
in two strokes) are merged; a component far wider than the line is tall (digits that touch) is cut at the
columns with the least ink near equally spaced positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .preprocess import Ink

TOO_WIDE = 1.25  # a piece wider than this x the line's digit height holds several touching digits
DIGIT_ASPECT = 0.7  # a typical digit's width / height, for guessing how many digits a wide piece holds
FRAGMENT = 0.45  # a piece shorter than this x the tallest piece is part of a neighbouring digit


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


def segment(ink: Ink) -> list[tuple[Ink, tuple[int, int, int, int]]]:
    """Split the ink of a line into digits: [(digit ink, (x0, y0, x1, y1)), ...] left to right."""
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
    digits = []
    for piece in merged:
        mask = np.isin(labels, list(piece.labels))
        for x0, x1 in _cuts(mask, piece, line_height):
            part = np.zeros_like(mask)
            part[:, x0:x1] = mask[:, x0:x1]
            if not part.any():
                continue
            rows = np.nonzero(part.any(1))[0]
            digits.append((Ink(np.where(part, ink.values, 0).astype(np.float32), part),
                           (x0, int(rows[0]), x1, int(rows[-1]) + 1)))
    return digits


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


def _cuts(mask: np.ndarray, piece: Piece, line_height: float) -> list[tuple[int, int]]:
    """Column ranges of the digits in one piece: itself, or several if it is clearly too wide."""
    if piece.width <= TOO_WIDE * line_height:
        return [(piece.x0, piece.x1)]
    count = max(2, round(piece.width / (DIGIT_ASPECT * line_height)))
    column_ink = mask[:, piece.x0:piece.x1].sum(0).astype(np.float64)
    step = piece.width / count
    bounds = [piece.x0]
    for k in range(1, count):
        lo, hi = int(k * step - step / 3), int(k * step + step / 3)
        bounds.append(piece.x0 + lo + int(np.argmin(column_ink[lo:hi])))
    bounds.append(piece.x1)
    return list(zip(bounds[:-1], bounds[1:]))
