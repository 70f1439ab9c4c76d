"""Synthesised sheets of numbers for measuring the reader: MNIST digits (the validation carve of the training
split, never the test split) set side by side into numbers, with separators drawn as pen strokes, numbers
set on lines at uneven indents, and the sheet turned by a few degrees.

    numbers ("07/12/2026", "555-0142", "12.50", "14:05", "4096")  ->  lines of one or two numbers  ->  a sheet

What differs from people's sheets: the digits are MNIST's (one process of capture), the separators and the
layout are drawn by this code.  So these sets choose constants and catch regressions; they do not stand for
other hands (benchmarks/read.py says so beside its figures).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

DIGIT = 28  # MNIST's side; a digit's ink is about 20 px tall in it
FORMATS = ("date", "phone", "decimal", "time", "plain")


def number_text(rng: np.random.Generator, kind: str) -> str:
    """A number of the given kind, as people write them."""
    d = lambda n: "".join(str(v) for v in rng.integers(0, 10, n))  # noqa: E731
    if kind == "date":
        return f"{d(2)}/{d(2)}/{d(4)}" if rng.random() < 0.7 else f"{d(2)}-{d(2)}-{d(2)}"
    if kind == "phone":
        return f"{d(3)}-{d(4)}"
    if kind == "decimal":
        return f"{d(int(rng.integers(1, 4)))}{'.' if rng.random() < 0.7 else ','}{d(2)}"
    if kind == "time":
        return f"{d(2)}:{d(2)}"
    return d(int(rng.integers(2, 7)))


def _separator(char: str, rng: np.random.Generator) -> np.ndarray:
    """A separator drawn as a pen stroke, white on black, DIGIT px tall (the digits' box)."""
    width = {"-": 16, "/": 24, ".": 8, ",": 8, ":": 8}[char]
    image = Image.new("L", (width, DIGIT), 0)
    draw = ImageDraw.Draw(image)
    pen = int(rng.integers(2, 4))
    jitter = lambda: float(rng.uniform(-1, 1))  # noqa: E731
    if char == "-":
        y = 14 + jitter()
        draw.line([(2, y + jitter()), (width - 2, y + jitter())], fill=255, width=pen)
    elif char == "/":
        lean = float(rng.uniform(14, 22))  # a slash leans 35-48 degrees, past the slant of a 1
        draw.line([(2 + lean + jitter(), 4), (2 + jitter(), 24)], fill=255, width=pen)
    elif char == ".":
        draw.ellipse([2, 20 + jitter(), 2 + pen + 1, 20 + pen + 1], fill=255)
    elif char == ",":
        draw.line([(4, 20), (2, 26)], fill=255, width=pen)
    elif char == ":":
        for y in (9, 19):
            draw.ellipse([2, y + jitter(), 2 + pen + 1, y + pen + 1], fill=255)
    return np.asarray(image)


def draw_number(text: str, digits_by_class: dict[int, np.ndarray], rng: np.random.Generator,
                overlap: int = 0) -> np.ndarray:
    """White-on-black ink of a number: digits (drawn at random from digits_by_class[d], uint8 [K, 28, 28])
    cropped to their ink columns and set side by side with gaps of 1-6 px (`overlap` > 0: touching, each gap
    -overlap..0), separators between them."""
    pieces = []
    for char in text:
        if char.isdigit():
            bank = digits_by_class[int(char)]
            glyph = bank[int(rng.integers(len(bank)))]
            columns = np.flatnonzero(glyph.max(0) > 30)
            glyph = glyph[:, columns[0]:columns[-1] + 1] if len(columns) else glyph
        else:
            glyph = _separator(char, rng)
        pieces.append(glyph)
    gaps = rng.integers(-overlap, 1, len(pieces)) if overlap else rng.integers(1, 7, len(pieces))
    width = sum(p.shape[1] for p in pieces) + int(np.clip(gaps[1:], 0, None).sum()) + 2
    canvas = np.zeros((DIGIT, width), np.uint8)
    x = 0
    for piece, gap in zip(pieces, gaps):
        x = max(0, x + int(gap)) if x else 0
        w = min(piece.shape[1], width - x)
        canvas[:, x:x + w] = np.maximum(canvas[:, x:x + w], piece[:, :w])
        x += w
    return canvas[:, :max(x, 1)]


def draw_sheet(lines: list[list[str]], digits_by_class: dict[int, np.ndarray], rng: np.random.Generator,
               skew: float = 0.0, scale: int = 2, overlap: int = 0) -> bytes:
    """A PNG of dark ink on white paper: each line's numbers (two on a line are set 3-6 digit heights apart),
    lines 1.3-1.8 digit heights apart at indents of 0-3 digit heights, turned by `skew` degrees."""
    rows = []
    for numbers in lines:
        inks = [draw_number(t, digits_by_class, rng, overlap) for t in numbers]
        spaces = [np.zeros((DIGIT, int(rng.integers(3, 7) * DIGIT)), np.uint8) for _ in inks[1:]]
        row = [inks[0]] + [part for pair in zip(spaces, inks[1:]) for part in pair]
        indent = np.zeros((DIGIT, int(rng.integers(0, 3 * DIGIT + 1))), np.uint8)
        rows.append(np.concatenate([indent] + row, 1))
    width = max(r.shape[1] for r in rows) + 2 * DIGIT
    leading = [int(rng.integers(DIGIT * 13 // 10, DIGIT * 18 // 10)) for _ in rows]
    height = sum(leading) + 2 * DIGIT
    page = np.zeros((height, width), np.uint8)
    y = DIGIT
    for row, lead in zip(rows, leading):
        page[y:y + DIGIT, DIGIT:DIGIT + row.shape[1]] = row
        y += lead
    image = Image.fromarray(255 - page).resize((width * scale, height * scale), Image.Resampling.BILINEAR)
    if skew:
        image = image.rotate(skew, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=255)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def by_class(images: np.ndarray, labels: np.ndarray) -> dict[int, np.ndarray]:
    return {d: images[labels == d] for d in range(10)}


def make_sheets(images: np.ndarray, labels: np.ndarray, count: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """`count` sheets of 2-5 numbers of every kind, on 2-4 lines (a line sometimes holds two numbers), skewed
    by up to 3 degrees: [(text as `read` gives it: lines joined by newlines, numbers by two spaces, PNG)]."""
    rng = np.random.default_rng(seed)
    bank = by_class(images, labels)
    sheets = []
    for _ in range(count):
        total = int(rng.integers(2, 6))
        texts = [number_text(rng, FORMATS[int(rng.integers(len(FORMATS)))]) for _ in range(total)]
        lines: list[list[str]] = []
        while texts:
            take = 2 if len(texts) >= 2 and rng.random() < 0.3 and len(lines) < 4 else 1
            lines.append(texts[:take])
            texts = texts[take:]
        png = draw_sheet(lines, bank, rng, skew=float(rng.uniform(-3, 3)))
        sheets.append(("\n".join("  ".join(line) for line in lines), png))
    return sheets


def make_numbers(images: np.ndarray, labels: np.ndarray, count: int, seed: int = 0, kinds: tuple[str, ...] = FORMATS,
                 overlap: int = 0) -> list[tuple[str, bytes]]:
    """`count` single numbers on one line each (overlap > 0: digits touching by up to that many pixels)."""
    rng = np.random.default_rng(seed)
    bank = by_class(images, labels)
    out = []
    for i in range(count):
        text = number_text(rng, kinds[i % len(kinds)])
        out.append((text, draw_sheet([[text]], bank, rng, skew=float(rng.uniform(-2, 2)), overlap=overlap)))
    return out


def strip_examples(digits_by_class: dict[int, np.ndarray], rng: np.random.Generator, n: int,
                   max_digits: int = 8) -> tuple[list[np.ndarray], list[list[int]]]:
    """n numbers of 1-max_digits digits as the sequence reader sees them (imaging.ink.to_strip), and their
    digits: two in three with the digits touching or overlapping by up to 5 px (what the cutter reads worst),
    the rest spaced; each drawn 1-2.5x as large, so that stroke evening and resampling vary as on paper."""
    from digitrec.imaging.ink import Ink, to_strip

    strips, labels = [], []
    for _ in range(n):
        text = "".join(str(d) for d in rng.integers(0, 10, int(rng.integers(1, max_digits + 1))))
        ink = draw_number(text, digits_by_class, rng, overlap=int(rng.integers(1, 6)) if rng.random() < 2 / 3 else 0)
        factor = float(rng.uniform(1, 2.5))
        image = Image.fromarray(ink).resize((max(1, round(ink.shape[1] * factor)), round(DIGIT * factor)),
                                            Image.Resampling.BILINEAR)
        values = np.asarray(image, dtype=np.float32) / 255.0
        strips.append(to_strip(Ink(values, values > 0.3)))
        labels.append([int(c) for c in text])
    return strips, labels
