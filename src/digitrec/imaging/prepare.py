"""People's images -> what the model was trained on.  One road for `predict`, `read` and the server:

    decode (decode.py)  ->  ink (ink.py)  ->  one digit, or the digits of a line (segment.py)  ->  28x28 each
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from digitrec.errors import DigitrecError
from digitrec.imaging.decode import decode
from digitrec.imaging.ink import find_ink, mnist_form, to_mnist


@dataclass(frozen=True)
class Prepared:
    """What the model needs from one image: its 28x28 inputs (one for a single digit, one per candidate digit of
    a line; none: no ink) and, for a line, each one's box in the original image's pixels.  Made by `prepare`
    here, or elsewhere (the server prepares images in sandboxed worker processes) and passed on as is; `error`
    is then the DigitrecError that preparing it gave.

    A line's pieces of ink may be read more than one way (segment.py): `readings` holds, per piece, its
    readings, each the indices into `digits` of one way to read it, left to right (a piece read one way as one
    digit: ((i,),)); the reader keeps one reading per piece (predict.best_readings)."""

    digits: np.ndarray  # float32 [N, 28, 28]
    boxes: tuple[tuple[int, int, int, int], ...] = ()  # (x0, y0, x1, y1) per candidate digit, lines only
    readings: tuple[tuple[tuple[int, ...], ...], ...] = ()  # lines only: per piece, its readings (indices)
    error: DigitrecError | None = None
    grey: np.ndarray | None = None  # the analysed grey image and its scale, kept only when asked (annotations)
    scale: float = 1.0


def prepare(data: bytes | Prepared, line: bool = False, keep_grey: bool = False) -> Prepared:
    """Image bytes -> Prepared: decode, find the ink, then one digit (`line` False) or the digits of a line
    (segment.py), each as MNIST.  A Prepared given is returned as it is (or its error raised)."""
    if isinstance(data, Prepared):
        if data.error is not None:
            raise data.error
        return data
    grey, scale = decode(data)
    kept = {"grey": grey, "scale": scale} if keep_grey else {}
    if not line and (as_is := mnist_form(grey)) is not None:
        return Prepared(as_is[None], **kept)
    ink = find_ink(grey)
    if ink.empty:
        return Prepared(np.zeros((0, 28, 28), np.float32), **kept)
    if not line:
        return Prepared(to_mnist(ink)[None], **kept)
    from digitrec.imaging.segment import (
        segment,  # (segment.py builds on this module's Ink; it imports SciPy, which a process
    )
    # that prepares single digits never needs: 0.25 s of each `predict` worker's start)
    candidates, readings = [], []
    for digits, ways in segment(ink):
        readings.append(tuple(tuple(len(candidates) + i for i in way) for way in ways))
        candidates.extend(digits)
    digits = np.stack([to_mnist(part) for part, _ in candidates]) if candidates else np.zeros((0, 28, 28), np.float32)
    boxes = tuple(tuple(round(v * scale) for v in box) for _, box in candidates)
    return Prepared(digits, boxes, tuple(readings), **kept)


def preprocess(data: bytes) -> np.ndarray | None:
    """Image bytes -> float32 [28, 28] in [0, 1] ready for the model, or None when the image has no ink."""
    digits = prepare(data).digits
    return digits[0] if len(digits) else None


def to_png(digit: np.ndarray) -> bytes:
    """A 28x28 float image as PNG bytes (what the model saw)."""
    buffer = io.BytesIO()
    Image.fromarray((np.clip(digit, 0, 1) * 255).round().astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()
