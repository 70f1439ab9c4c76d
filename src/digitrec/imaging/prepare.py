"""People's images -> what the model was trained on.  One road for `predict`, `read` and the server:

    decode (decode.py)  ->  ink (ink.py)  ->  one digit, or the digits of a line (segment.py)  ->  28x28 each
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from digitrec.errors import DigitrecError
from digitrec.imaging.decode import MAX_DIGITS, MAX_STRIPS, SHEET_PIXELS, WORK_PIXELS, decode
from digitrec.imaging.ink import find_ink, mnist_form, to_mnist, to_strip


@dataclass(frozen=True)
class Prepared:
    """What the model needs from one image: its 28x28 inputs (one for a single digit, one per candidate digit of
    a sheet; none: no ink) and, for a sheet, each one's box in the original image's pixels.  Made by `prepare`
    here, or elsewhere (the server prepares images in sandboxed worker processes) and passed on as is; `error`
    is then the DigitrecError that preparing it gave.

    A sheet's pieces of ink may be read more than one way (segment.py): `readings` holds, per piece, its
    readings, each the indices into `digits` of one way to read it, left to right (a piece read one way as one
    digit: ((i,),)); the reader keeps one reading per piece (predict.best_reading).  `plan` says where each
    piece sits: per line (top to bottom), per number (left to right), its parts: a piece's index into
    `readings`, or a separator (char, box, index of the piece that reads it as a digit instead, or -1).  An
    empty plan with pieces: one line of one number, every piece in order."""

    digits: np.ndarray  # float32 [N, 28, 28]
    boxes: tuple[tuple[int, int, int, int], ...] = ()  # (x0, y0, x1, y1) per candidate digit, sheets only
    readings: tuple[tuple[tuple[int, ...], ...], ...] = ()  # sheets only: per piece, its readings (indices)
    error: DigitrecError | None = None
    grey: np.ndarray | None = None  # the analysed grey image and its scale, kept only when asked (annotations)
    scale: float = 1.0
    plan: tuple = ()  # sheets only: lines -> numbers -> parts (see above)
    # Sheets, when asked for: per run of digits that may touch, its ink as the sequence reader reads it
    # (ink.to_strip); the plan names such a run ("*", strip index, its pieces, its box).
    strips: tuple = ()


def prepare(data: bytes | Prepared, line: bool = False, keep_grey: bool = False, strips: bool = False) -> Prepared:
    """Image bytes -> Prepared: decode, find the ink, then one digit (`line` False) or the lines, numbers and
    digits of a sheet (layout.py, segment.py), each digit as MNIST.  A Prepared given is returned as it is (or
    its error raised)."""
    if isinstance(data, Prepared):
        if data.error is not None:
            raise data.error
        return data
    grey, scale = decode(data, SHEET_PIXELS if line else WORK_PIXELS)
    kept = {"grey": grey, "scale": scale} if keep_grey else {}
    if not line and (as_is := mnist_form(grey)) is not None:
        return Prepared(as_is[None], **kept)
    ink = find_ink(grey, sheet=line)
    if ink.empty:
        return Prepared(np.zeros((0, 28, 28), np.float32), **kept)
    if not line:
        return Prepared(to_mnist(ink)[None], **kept)
    return _prepare_sheet(ink, scale, kept, strips)


def _prepare_sheet(ink, scale: float, kept: dict, strips: bool) -> Prepared:
    # (segment.py imports SciPy, which a process that prepares single digits never needs: 0.25 s of each
    # `predict` worker's start)
    from digitrec.imaging.layout import layout
    from digitrec.imaging.segment import segment

    sheet = _Sheet(scale, strips, segment)
    plan = tuple(tuple(sheet.number(number.parts) for number in line.numbers) for line in layout(ink))
    digits = np.stack([to_mnist(part) for part, _ in sheet.candidates]) if sheet.candidates else \
        np.zeros((0, 28, 28), np.float32)
    boxes = tuple(tuple(round(v * scale) for v in box) for _, box in sheet.candidates)
    return Prepared(digits, boxes, tuple(sheet.readings), plan=plan, strips=tuple(sheet.strips), **kept)


# A piece of ink wider than this x its own height may be two digits touching (one digit is 0.2-0.7 as wide as it
# is tall; a round 0 up to about 0.9): the run holding it also goes to the sequence reader.  Chosen with
# predict._runs_read_whole on the validation numbers of benchmarks/read.py.
PAIR_ASPECT = 0.7


class _Sheet:
    """The candidates, readings and strips of a sheet as its numbers are laid out (Prepared's fields)."""

    def __init__(self, scale: float, strips: bool, segment) -> None:
        self.scale, self.want_strips, self.segment = scale, strips, segment
        self.candidates, self.readings, self.strips = [], [], []

    def number(self, parts) -> tuple:
        from digitrec.imaging.layout import Separator

        out = []
        for part in parts:
            out.extend([self.separator(part)] if isinstance(part, Separator) else self.run(part))
        return tuple(out)

    def add(self, digits, ways, x0: int, y0: int) -> int:
        self.readings.append(tuple(tuple(len(self.candidates) + i for i in way) for way in ways))
        self.candidates.extend((part, (b[0] + x0, b[1] + y0, b[2] + x0, b[3] + y0)) for part, b in digits)
        if len(self.candidates) > MAX_DIGITS:
            raise DigitrecError(f"image too costly to read (over {MAX_DIGITS} candidate digits)", code="too_costly")
        return len(self.readings) - 1

    def separator(self, part) -> tuple:
        x0, y0, x1, y1 = part.box
        alt = self.add([(part.ink, (0, 0, x1 - x0, y1 - y0))], [(0,)], x0, y0) if part.ink is not None else -1
        return part.char, tuple(round(v * self.scale) for v in part.box), alt

    def may_touch(self, piece: int) -> bool:
        """A piece that may be touching digits: one read several ways (wider than segment.TOO_WIDE x the line's
        height), or one wider than PAIR_ASPECT x its own height, a pair too narrow for segment.py to cut."""
        ways = self.readings[piece]
        x0, y0, x1, y1 = self.candidates[ways[0][0]][1]
        return len(ways) > 1 or x1 - x0 > PAIR_ASPECT * (y1 - y0)

    def run(self, part) -> list:
        """A run's pieces; a run with a piece that may be touching digits also goes whole to the sequence reader
        when strips are asked for: ("*", its strip, its pieces, its box)."""
        pieces = [self.add(digits, ways, *part.box[:2]) for digits, ways in self.segment(part.ink)]
        if not (self.want_strips and any(self.may_touch(i) for i in pieces)):
            return pieces
        if len(self.strips) >= MAX_STRIPS:
            raise DigitrecError(f"image too costly to read (over {MAX_STRIPS} runs of touching digits)",
                                code="too_costly")
        self.strips.append(to_strip(part.ink))
        return [("*", len(self.strips) - 1, tuple(pieces), tuple(round(v * self.scale) for v in part.box))]


def preprocess(data: bytes) -> np.ndarray | None:
    """Image bytes -> float32 [28, 28] in [0, 1] ready for the model, or None when the image has no ink."""
    digits = prepare(data).digits
    return digits[0] if len(digits) else None


def to_png(digit: np.ndarray) -> bytes:
    """A 28x28 float image as PNG bytes (what the model saw)."""
    buffer = io.BytesIO()
    Image.fromarray((np.clip(digit, 0, 1) * 255).round().astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()
