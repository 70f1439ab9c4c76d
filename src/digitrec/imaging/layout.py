"""The ink of a sheet -> its lines, top to bottom -> the numbers on each line, left to right -> per number, runs
of digit ink (read by segment.py) between separators found by their shape (`-` `/` `.` `:` `,`).

Lines: a sheet written by hand is a little skewed and its lines start at different indents, so the lines are
found on the ink's rows after undoing the skew (the angle, within MAX_SKEW degrees, whose row profile is the
sharpest), as bands of rows with ink between rows without; each mark (connected ink) goes to the band of its
centre.  Numbers: a gap wider than NUMBER_GAP x the line's digit height parts two numbers.  Separators are
told by their size, shape and height in the line before the digits are cut: segment.py would otherwise join a
decimal point to the digit beside it.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import cv2
import numpy as np

from digitrec.errors import DigitrecError
from digitrec.imaging.ink import Ink

MAX_SKEW = 6.0  # degrees either way: more is a page photographed at an angle, not a skewed hand
SKEW_STEP = 1.0
# A gap between marks wider than this x the line's digit height parts two numbers on one line: people leave
# up to about a digit height between digits of one number (spaced hands) and several digit widths between two
# numbers.
NUMBER_GAP = 2.0
# A row band is a line when its ink rows hold at least this share of the busiest row's ink (a stray mark
# between two lines does not join them), and at least MIN_LINE_HEIGHT x the sheet's digit height tall.
GAP_ROW_SHARE = 0.02
MIN_LINE_HEIGHT = 0.35
MAX_LINES = 64  # a sheet with more lines is refused as too costly (reading is per line)
MAX_MARKS = 4096  # ... and one with more pieces of ink (a texture, a page of specks)

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in the analysed image's pixels


@dataclass(frozen=True)
class Mark:
    """A connected piece of ink."""

    label: int
    box: Box

    @property
    def height(self) -> int:
        return self.box[3] - self.box[1]

    @property
    def width(self) -> int:
        return self.box[2] - self.box[0]


@dataclass(frozen=True)
class Separator:
    char: str  # one of SEPARATORS
    box: Box
    # A slash may be a 1 leaning hard: its ink (cropped to box), for the reader to read it as a digit when the
    # number around it is no date (inference/predict.py).
    ink: Ink | None = None


@dataclass(frozen=True)
class Run:
    """Digit ink between separators, cropped to `box`: segment.py cuts it into digits."""

    ink: Ink
    box: Box


@dataclass(frozen=True)
class NumberLayout:
    parts: tuple[Run | Separator, ...]
    box: Box


@dataclass(frozen=True)
class LineLayout:
    numbers: tuple[NumberLayout, ...]
    box: Box
    digit_height: float


SEPARATORS = ("-", "/", ".", ":", ",")


def layout(ink: Ink) -> list[LineLayout]:
    """The lines of the ink, top to bottom, each with its numbers left to right."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(ink.mask.view(np.uint8), None, None, None, 8, cv2.CV_32S)
    if n - 1 > MAX_MARKS:
        raise DigitrecError(f"image too costly to read (over {MAX_MARKS} marks)", code="too_costly")
    marks = [Mark(i, (int(s[0]), int(s[1]), int(s[0] + s[2]), int(s[1] + s[3]))) for i, s in enumerate(stats)
             if i > 0]
    if not marks:
        return []
    bands = _line_bands(ink.mask, marks)
    return [_line(ink, labels, band_marks) for band_marks in bands]


def _skew(mask: np.ndarray) -> float:
    """The slope (dy per dx) whose sheared row profile of the ink is the sharpest (sum of squared row counts)."""
    ys, xs = np.nonzero(mask)
    xs = xs - xs.mean()
    best, best_score = 0.0, -1.0
    angles = sorted(np.arange(-MAX_SKEW, MAX_SKEW + SKEW_STEP / 2, SKEW_STEP), key=abs)  # ties keep the smaller
    for degrees in angles:
        slope = math.tan(math.radians(degrees))
        rows = np.round(ys - slope * xs).astype(np.int64)
        score = float((np.bincount(rows - rows.min()).astype(np.float64) ** 2).sum())
        if score > best_score:
            best, best_score = slope, score
    return best


def _line_bands(mask: np.ndarray, marks: list[Mark]) -> list[list[Mark]]:
    """Marks grouped into lines, top to bottom."""
    slope = _skew(mask)
    ys, xs = np.nonzero(mask)
    x_mid = float(xs.mean())
    rows = np.round(ys - slope * (xs - x_mid)).astype(np.int64)
    low = int(rows.min())
    profile = np.bincount(rows - low)
    inked = profile > GAP_ROW_SHARE * profile.max()
    starts = np.flatnonzero(inked & ~np.concatenate([[False], inked[:-1]]))
    ends = np.flatnonzero(inked & ~np.concatenate([inked[1:], [False]])) + 1
    heights = sorted(m.height for m in marks)
    digit_height = heights[len(heights) * 3 // 4]  # most marks are digits; dots and dashes are the short ones
    bands = [(s, e) for s, e in zip(starts, ends) if e - s >= MIN_LINE_HEIGHT * digit_height] or \
        [(int(starts[0]), int(ends[-1]))]
    if len(bands) > MAX_LINES:
        raise DigitrecError(f"image too costly to read (over {MAX_LINES} lines)", code="too_costly")
    centre = {m.label: (m.box[1] + m.box[3]) / 2 - slope * ((m.box[0] + m.box[2]) / 2 - x_mid) - low for m in marks}
    bands = _lines_among(bands, marks, centre, digit_height)
    grouped: list[list[Mark]] = [[] for _ in bands]
    for mark in marks:
        cy = centre[mark.label]
        distance = [0 if s <= cy < e else min(abs(cy - s), abs(cy - e)) for s, e in bands]
        grouped[int(np.argmin(distance))].append(mark)
    return [sorted(g, key=lambda m: m.box[0]) for g in grouped if g]


def _lines_among(bands: list, marks: list[Mark], centre: dict, digit_height: float) -> list:
    """The bands that are lines.  A band of small marks only (a detached flag, stray dots) is none, nor is one
    whose marks are all clearly smaller than those of the band just below or above it and close to it (a
    smiley's eyes over its mouth): their marks join the nearest line."""
    tallest = [max((m.height for m in marks if s <= centre[m.label] < e), default=0) for s, e in bands]
    keep = []
    for k, ((s, e), height) in enumerate(zip(bands, tallest)):
        beside = [j for j in (k - 1, k + 1) if 0 <= j < len(bands)]
        gap = lambda j: max(bands[j][0] - e, s - bands[j][1])  # noqa: E731
        under = any(height < 0.8 * tallest[j] and gap(j) < 0.5 * tallest[j] for j in beside)
        keep.append(height >= 0.5 * digit_height and not under)
    return [band for band, is_line in zip(bands, keep) if is_line] or bands


def _line(ink: Ink, labels: np.ndarray, marks: list[Mark]) -> LineLayout:
    tall = max(m.height for m in marks)
    digit_height = float(np.median([m.height for m in marks if m.height >= 0.5 * tall]))
    separators = _separators(marks, labels, digit_height)
    numbers, current, right = [], [], None
    for mark in marks:
        if right is not None and mark.box[0] - right > NUMBER_GAP * digit_height:
            numbers.append(current)
            current = []
        current.append(mark)
        right = mark.box[2] if right is None else max(right, mark.box[2])
    numbers.append(current)
    built = tuple(_number(ink, labels, group, separators) for group in numbers)
    return LineLayout(tuple(n for n in built if n.parts), _union([m.box for m in marks]), digit_height)


def _number(ink: Ink, labels: np.ndarray, marks: list[Mark], separators: dict[int, str]) -> NumberLayout:
    """A number's marks -> runs of digit ink split at its separators (a colon's two dots are one separator)."""
    parts: list[Run | Separator] = []
    run: list[Mark] = []
    seen_colon: set[int] = set()
    # A number does not begin with a point, a comma or a colon (a decimal under one is written 0.5): such marks
    # are strokes of the first digit that came loose.
    lead = next((i for i, m in enumerate(marks) if separators.get(m.label) not in (".", ",", ":")), len(marks))
    loose = {m.label for m in marks[:lead]} if lead < len(marks) else set()  # (marks alone stay what they are)
    for mark in marks:
        char = separators.get(mark.label) if mark.label not in loose else None
        if char is None:
            run.append(mark)
            continue
        if char == ":" and mark.label in seen_colon:
            continue
        if run:
            parts.append(_run(ink, labels, run))
            run = []
        elif parts and isinstance(parts[-1], Separator) and parts[-1].char == char == "-":
            parts[-1] = Separator("-", _union([parts[-1].box, mark.box]))  # a dash drawn in two strokes
            continue
        if char == ":":
            pair = [m for m in marks if separators.get(m.label) == ":" and _x_overlap(m.box, mark.box) > 0]
            seen_colon.update(m.label for m in pair)
            parts.append(Separator(":", _union([m.box for m in pair])))
        elif char == "/":
            parts.append(Separator(char, mark.box, _run(ink, labels, [mark]).ink))
        else:
            parts.append(Separator(char, mark.box))
    if run:
        parts.append(_run(ink, labels, run))
    return NumberLayout(tuple(parts), _union([m.box for m in marks]))


def _run(ink: Ink, labels: np.ndarray, marks: list[Mark]) -> Run:
    box = _union([m.box for m in marks])
    x0, y0, x1, y1 = box
    mask = np.isin(labels[y0:y1, x0:x1], [m.label for m in marks])
    return Run(Ink(np.where(mask, ink.values[y0:y1, x0:x1], 0).astype(np.float32), mask), box)


def _separators(marks: list[Mark], labels: np.ndarray, h: float) -> dict[int, str]:
    """label -> separator character, for the marks whose shape says so (h: the line's digit height)."""
    found: dict[int, str] = {}
    tall = sorted((m for m in marks if m.height >= 0.5 * h), key=lambda m: m.box[0])
    starts = [t.box[0] for t in tall]

    def beside(m: Mark) -> list[Mark]:  # the tall marks nearest m, a few either side (bounded work)
        i = bisect.bisect_left(starts, m.box[0])
        return [t for t in tall[max(0, i - 3):i + 3] if t is not m]

    # A small mark mostly under or over a digit is a piece of it (a 5's detached flag, a broken stroke), not a
    # separator: people leave a separator room of its own.
    marks = [m for m in marks if m.height >= 0.6 * h or
             not any(_x_overlap(m.box, t.box) >= 0.5 * m.width for t in beside(m))]
    small = sorted((m for m in marks if m.height <= 0.35 * h and m.width <= 0.4 * h), key=lambda m: m.box[0])
    for i, m in enumerate(small):  # a colon: two small marks one above the other (neighbours in x: bounded work)
        for other in small[i + 1:i + 4]:
            if _x_overlap(m.box, other.box) > 0 and abs(m.box[1] - other.box[1]) >= 0.25 * h:
                found[m.label] = found[other.label] = ":"
    for m in marks:
        if m.label in found:
            continue
        top = _digits_top(m, beside(m))
        cy = (m.box[1] + m.box[3]) / 2 - top  # the mark's centre, from the top of the digits beside it
        if m.height <= 0.45 * h and m.width <= 0.4 * h and cy > 0.65 * h:
            # A comma is taller than wide, reaches below the digits and is taller than a dot: two of the three
            # (each alone also fits a dot drawn carelessly).
            cues = (m.height >= 1.35 * m.width) + (m.box[3] >= top + 1.03 * h) + (m.height >= 0.34 * h)
            found[m.label] = "," if cues >= 2 else "."
        elif m.height <= 0.3 * h and m.width >= 1.6 * m.height and m.width >= 0.3 * h and 0.3 * h < cy < 0.75 * h:
            # (near the middle of the digits: a short bar near their top is a 5's flag or a 7's bar)
            found[m.label] = "-"
        elif m.height >= 0.6 * h and _is_slash(labels[m.box[1]:m.box[3], m.box[0]:m.box[2]] == m.label):
            found[m.label] = "/"
    return found


def _digits_top(mark: Mark, tall: list[Mark]) -> float:
    """Where the digits either side of a mark begin (the mean top of the nearest of `tall` on each side): on a
    long line that is a little skewed, the line's own top is a digit height off at its ends."""
    left = [t for t in tall if t.box[2] <= mark.box[2]]
    right = [t for t in tall if t.box[0] >= mark.box[0]]
    beside = [max(left, key=lambda t: t.box[2])] if left else []
    beside += [min(right, key=lambda t: t.box[0])] if right else []
    return float(np.mean([t.box[1] for t in beside])) if beside else float(mark.box[1])


def _is_slash(mask: np.ndarray) -> bool:
    """A thin stroke leaning right well past a slanted 1 (x against y fitted to the ink; top to the right)."""
    ys, xs = np.nonzero(mask)
    if len(ys) < 5:
        return False
    height = int(ys.max() - ys.min() + 1)
    slope = np.polyfit(ys.astype(np.float64), xs.astype(np.float64), 1)[0]  # dx per dy: negative leans right
    return bool(slope < -0.6 and len(ys) / height < 0.3 * height)


def _x_overlap(a: Box, b: Box) -> int:
    return min(a[2], b[2]) - max(a[0], b[0])


def _union(boxes: list[Box]) -> Box:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))
