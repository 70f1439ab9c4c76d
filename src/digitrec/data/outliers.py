"""Things that are not digits, for teaching a network to say so (outlier exposure, Hendrycks et al. 2019).

Every outlier is drawn as a person would present it (dark marks on light paper, at some size and angle) and
then goes through the same `preprocess.find_ink` + `to_mnist` as a real request, so the network learns on what
it will actually be shown.  Six kinds, all synthesised from allowed sources:

- letters and signs from the machine's printed fonts, DejaVu, Liberation and FreeFont (never handwriting
  fonts: those are how the project checks that it generalises), distorted, leaving out shapes that *are*
  digits in handwriting (O, l, I, S, Z, B, g, q, Λ, ...);
- procedural scribbles and shapes (zigzags, stars, crosses, grids, hatching, spirals, blobs), but no lone
  straight line (a 1) and no plain ellipse (a 0);
- icons: drawings put together from parts (an outline with separate marks inside, a loop with a dent, a
  shaft with a pointed head, a roof or canopy on a centred post, a few small shapes apart), the kinds of
  doodle that the first outlier kinds left a network reading as a 0, 1 or 4;
- clothing photos: Fashion-MNIST's training split, as dark objects on light paper;
- two MNIST training digits drawn over each other;
- signs and letters written with a pen, stroke by stroke (PEN_SIGNS: + x ÷ = % # ? $ & @, a check mark,
  arrows, u y Y h H n m w k e r; no a, whose short-stemmed form is a 9), the handwritten forms printed fonts lack.

The banks are made once per data folder (about a minute) and cached in DATA_DIR/outliers/.  So is a bank of
digits printed in the same fonts (make_printed_digits), labelled, which recipes may mix into their
batches beside MNIST's (recipe field `printed`): the icons teach that a loop or a bar can be something else,
and printed digits keep round 0s and flagged 1s digits.
"""

from __future__ import annotations

import glob
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from digitrec.data.datasets import load_split, say, validation_indices
from digitrec.errors import DigitrecError
from digitrec.imaging.ink import find_ink, to_mnist

BANK_VERSION = 5  # 3: icons added (2 was an experiment that never shipped); 4: Liberation and FreeFont, no Λ;
# 5: signs and letters written with a pen (PEN_SIGNS)
TRAIN_BANK, VAL_BANK = 24_000, 2_000  # outliers made for training, and held out for choosing the threshold
KINDS = ("letters", "scribbles", "icons", "clothing", "pairs", "signs")
# Letters and signs whose handwritten forms are not digits.  Left out: O o Q D (0), I l i j J | ! / \ ( ) [ ] (1),
# Z z ? (2), S s $ (5), b G (6), T t (7), B (8), g q P (9), y Y (4), and Λ, a European 1 with a long flag.
NOT_DIGIT_CHARS = ("ACEFHKLMNRUVWXacefhkmnruvwx" "#%&*+=@<>{}~" "αβγδλμπσφψωΓΔΞΠΣΦΨΩ" "жшщыюяфдЖШЩЫЮЯФДЛ" "€£¥§¶©®")
# The printed fonts that letters and printed digits are drawn in, by Debian package: DejaVu's 1 has a foot,
# the sans faces of Liberation and FreeFont do not (a flag alone, as many hands write it).  Never handwriting fonts.
# DejaVu's faces come in two packages that share a folder (the maths face is left out: it has no Cyrillic, and
# would draw those letters as boxes).
_DEJAVU = "/usr/share/fonts/truetype/dejavu/DejaVu"
TRAINING_FONTS: dict[str, tuple[str, ...]] = {
    "fonts-dejavu-core": tuple(f"{_DEJAVU}{face}.ttf" for face in
                               ("Sans", "Sans-Bold", "SansMono", "SansMono-Bold", "Serif", "Serif-Bold")),
    "fonts-dejavu-extra": tuple(f"{_DEJAVU}{face}.ttf" for face in
                                ("Sans-*Oblique", "Sans-ExtraLight", "SansCondensed*", "SansMono-*Oblique",
                                 "Serif-*Italic", "SerifCondensed*")),
    "fonts-liberation2": ("/usr/share/fonts/truetype/liberation2/Liberation*.ttf",),
    "fonts-freefont-ttf": ("/usr/share/fonts/truetype/freefont/Free*.ttf",)}


def training_fonts() -> list[str]:
    """Every face of the printed font packages; all are required, so that a bank is the same on every machine
    that makes it.  Ordered folder by folder (DejaVu, Liberation, FreeFont), by name within a folder: the
    order the shipped model's banks were drawn in."""
    found = {package: sorted({f for pattern in patterns for f in glob.glob(pattern)})
             for package, patterns in TRAINING_FONTS.items()}
    missing = [package for package, fonts in found.items() if not fonts]
    if missing:
        raise DigitrecError(f"printed fonts missing (Debian: apt-get install {' '.join(missing)})", code="not_found")
    folders = list(dict.fromkeys(os.path.dirname(p) for patterns in TRAINING_FONTS.values() for p in patterns))
    return sorted((f for fonts in found.values() for f in fonts), key=lambda f: (folders.index(os.path.dirname(f)), f))


def to_digit_space(paper: Image.Image) -> np.ndarray | None:
    """A drawing (L mode, dark on light) -> the 28x28 uint8 the network would see, or None if it has no ink."""
    ink = find_ink(np.asarray(paper, dtype=np.float32) / 255.0)
    return None if ink.empty else (to_mnist(ink) * 255).round().astype(np.uint8)


def _paper(rng: np.random.Generator, side: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    paper = Image.new("L", (side, side), int(rng.integers(215, 256)))
    return paper, ImageDraw.Draw(paper)


def _ink(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 70))


def draw_text(rng: np.random.Generator, text: str, font_path: str, side: int = 96) -> Image.Image:
    """`text` in the font, random size, stroke weight, rotation and shear, dark on light paper."""
    paper, draw = _paper(rng, side)
    font = ImageFont.truetype(font_path, int(side * rng.uniform(0.45, 0.75)))
    draw.text((side / 2, side / 2), text, fill=_ink(rng), font=font, anchor="mm",
              stroke_width=int(rng.integers(0, max(1, side // 40) + 1)), stroke_fill=_ink(rng))
    shear = rng.uniform(-0.3, 0.3)
    paper = paper.transform(paper.size, Image.Transform.AFFINE, (1, shear, -shear * side / 2, 0, 1, 0),
                            resample=Image.Resampling.BILINEAR, fillcolor=255)
    return paper.rotate(rng.uniform(-25, 25), resample=Image.Resampling.BILINEAR, fillcolor=255)


def _points(rng: np.random.Generator, n: int, side: int, margin: float = 0.15) -> list[tuple[float, float]]:
    lo, hi = margin * side, (1 - margin) * side
    return [(float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))) for _ in range(n)]


def draw_scribble(rng: np.random.Generator, side: int = 96) -> Image.Image:
    """A procedural mark that is no digit: one of several shape families, with a random pen."""
    paper, draw = _paper(rng, side)
    ink, width = _ink(rng), int(rng.integers(max(2, side // 40), side // 10))
    c, r = side / 2, side * rng.uniform(0.28, 0.42)
    family = rng.integers(0, 9)
    if family == 0:  # a long random scribble (6-14 strokes)
        draw.line(_points(rng, int(rng.integers(6, 15)), side), fill=ink, width=width, joint="curve")
    elif family == 1:  # a star with 5-8 points
        k = int(rng.integers(5, 9))
        turn = 2 if k % 2 else 3
        pts = [(c + r * math.sin(2 * math.pi * i * turn / k), c - r * math.cos(2 * math.pi * i * turn / k))
               for i in range(k + 1)]
        draw.line(pts, fill=ink, width=width, joint="curve")
    elif family == 2:  # a cross or an asterisk
        for a in np.linspace(0, math.pi, int(rng.integers(2, 5)), endpoint=False) + rng.uniform(0, math.pi):
            draw.line([(c - r * math.cos(a), c - r * math.sin(a)), (c + r * math.cos(a), c + r * math.sin(a))],
                      fill=ink, width=width)
    elif family == 3:  # a grid: # or more lines
        n = int(rng.integers(2, 5))
        for i in range(n):
            x = c - r + 2 * r * (i + 1) / (n + 1)
            draw.line([(x, c - r), (x + rng.uniform(-5, 5), c + r)], fill=ink, width=width)
            draw.line([(c - r, x), (c + r, x + rng.uniform(-5, 5))], fill=ink, width=width)
    elif family == 4:  # hatching inside a box
        _draw_hatched_box(rng, draw, c, r, ink, width)
    elif family == 5:  # a spiral of 2-4 turns
        turns = rng.uniform(2, 4)
        t = np.linspace(0, 2 * math.pi * turns, 120)
        rad = r * t / t[-1]
        draw.line(list(zip(c + rad * np.cos(t), c + rad * np.sin(t))), fill=ink, width=max(2, width // 2))
    elif family == 6:  # a filled blob
        k = int(rng.integers(6, 12))
        angles = np.sort(rng.uniform(0, 2 * math.pi, k))
        rad = r * rng.uniform(0.5, 1.0, k)
        draw.polygon(list(zip(c + rad * np.cos(angles), c + rad * np.sin(angles))), fill=ink)
    elif family == 7:  # a zigzag or a wave across the box
        _draw_zigzag_or_wave(rng, draw, c, r, ink, width)
    else:  # a triangle, a square or a polygon, outlined (sometimes with a mark inside)
        _draw_polygon_outline(rng, draw, side, c, r, ink, width)
    if rng.random() < 0.3:
        paper = paper.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    return paper


def _draw_hatched_box(rng: np.random.Generator, draw: ImageDraw.ImageDraw, c: float, r: float, ink: int,
                      width: int) -> None:
    """The square of half-side r around (c, c), outlined, with 4-8 diagonal hatching lines across a corner each."""
    n = int(rng.integers(4, 9))
    for i in range(n):
        t = -r + 2 * r * i / (n - 1)
        draw.line([(c - r, c + t), (c + t, c - r)] if rng.random() < 0.5 else [(c + t, c + r), (c + r, c + t)],
                  fill=ink, width=max(2, width // 2))
    draw.rectangle([c - r, c - r, c + r, c + r], outline=ink, width=max(2, width // 2))


def _draw_zigzag_or_wave(rng: np.random.Generator, draw: ImageDraw.ImageDraw, c: float, r: float, ink: int,
                         width: int) -> None:
    """A zigzag or a sine wave of 4-8 half-periods, from c - r to c + r across, r / 2 high around c."""
    k = int(rng.integers(4, 9))
    xs = np.linspace(c - r, c + r, 4 * k if rng.random() < 0.5 else k + 1)
    ys = c + r * 0.5 * (np.sin(np.linspace(0, k * math.pi, len(xs))) if len(xs) > k + 1
                        else np.array([(-1) ** i for i in range(len(xs))]))
    draw.line(list(zip(xs, ys)), fill=ink, width=width, joint="curve")


def _draw_polygon_outline(rng: np.random.Generator, draw: ImageDraw.ImageDraw, side: int, c: float, r: float,
                          ink: int, width: int) -> None:
    """A triangle or a square inscribed in the circle of radius r around (c, c), turned at random, outlined; half
    the time a two-stroke mark inside."""
    k = int(rng.choice([3, 4]))  # more corners round off towards a 0
    a0 = rng.uniform(0, 2 * math.pi)
    pts = [(c + r * math.cos(a0 + 2 * math.pi * i / k), c + r * math.sin(a0 + 2 * math.pi * i / k))
           for i in range(k + 1)]
    draw.line(pts, fill=ink, width=width, joint="curve")
    if rng.random() < 0.5:
        draw.line(_points(rng, 3, side, 0.35), fill=ink, width=width)


def _mark(rng: np.random.Generator, draw: ImageDraw.ImageDraw, x: float, y: float, size: float, ink: int,
          width: int) -> None:
    """A small separate mark centred on (x, y): a dot, a dash or a little arc."""
    kind = rng.integers(0, 3)
    if kind == 0:
        draw.ellipse([x - size / 2, y - size / 2, x + size / 2, y + size / 2], fill=ink)
    elif kind == 1:
        a = rng.uniform(0, math.pi)
        dx, dy = size * math.cos(a), size * math.sin(a)
        draw.line([(x - dx, y - dy), (x + dx, y + dy)], fill=ink, width=width)
    else:
        start = rng.uniform(0, 360)
        draw.arc([x - size, y - size, x + size, y + size], start, start + rng.uniform(90, 200), fill=ink, width=width)


def draw_icon(rng: np.random.Generator, side: int = 96, family: int | None = None) -> Image.Image:
    """A drawing put together from parts, each kind chosen so that no digit is drawn that way (a digit is one
    or two strokes; these have separate marks inside an outline, a dent, a symmetric head, a centred post)."""
    paper, draw = _paper(rng, side)
    ink, width = _ink(rng), int(rng.integers(max(2, side // 40), side // 12 + 1))
    c, r = side / 2, side * rng.uniform(0.3, 0.42)
    family = rng.integers(0, 5) if family is None else family
    if family == 0:  # an outline (round or boxy) with 2-4 separate marks inside it: faces, signs, icons
        _draw_outline_with_marks(rng, draw, c, r, ink, width)
    elif family == 1:  # a closed loop with one or two dents (a 0 bulges everywhere): hearts, beans, leaves
        _draw_dented_loop(rng, draw, c, r, ink, width)
    elif family == 2:  # a shaft with a symmetric pointed head (at one end or both), sometimes feathers
        _draw_arrow(rng, draw, c, r, ink, width)
    elif family == 3:  # a roof, a triangle or a canopy on a post from its middle: trees, umbrellas, signs
        _draw_canopy_on_post(rng, draw, c, r, ink, width)
    else:  # 2-4 small shapes apart: circles, boxes, triangles, ticks
        _draw_small_shapes(rng, draw, side, ink, width)
    if rng.random() < 0.3:
        paper = paper.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    return paper.rotate(rng.uniform(-20, 20), resample=Image.Resampling.BILINEAR, fillcolor=255)


def _draw_outline_with_marks(rng: np.random.Generator, draw: ImageDraw.ImageDraw, c: float, r: float, ink: int,
                             width: int) -> None:
    """An ellipse or a rounded box of radius about r around (c, c), with 2-4 separate marks inside it."""
    squash = rng.uniform(0.75, 1.0)
    box = [c - r, c - r * squash, c + r, c + r * squash]
    if rng.random() < 0.6:
        draw.ellipse(box, outline=ink, width=width)
    else:
        draw.rounded_rectangle(box, radius=r * rng.uniform(0, 0.4), outline=ink, width=width)
    # Marks big and bold enough to survive shrinking to 20 pixels: a ring alone would be a 0.
    for _ in range(int(rng.integers(2, 5))):
        a, d = rng.uniform(0, 2 * math.pi), rng.uniform(0.15, 0.5) * r
        _mark(rng, draw, c + d * math.cos(a), c + d * math.sin(a) * squash, r * rng.uniform(0.2, 0.3), ink,
              width)


def _draw_dented_loop(rng: np.random.Generator, draw: ImageDraw.ImageDraw, c: float, r: float, ink: int,
                      width: int) -> None:
    """A closed loop of radius about r around (c, c), dented once or twice, sometimes pointed opposite a dent."""
    t = np.linspace(0, 2 * math.pi, 160)
    rad = np.ones_like(t)
    for _ in range(int(rng.integers(1, 3))):
        at, depth = rng.uniform(0, 2 * math.pi), rng.uniform(0.45, 0.7)  # deep: a 0 may be a little dented
        gap = np.abs(np.angle(np.exp(1j * (t - at))))
        rad -= depth * np.clip(1 - gap / rng.uniform(0.4, 0.9), 0, 1)
    if rng.random() < 0.5:  # and a point opposite the first dent, as a heart has
        rad += 0.25 * np.clip(1 - np.abs(np.angle(np.exp(1j * (t - t[rad.argmin()] - math.pi)))) / 0.5, 0, 1)
    aspect = rng.uniform(0.8, 1.2)
    draw.line(list(zip(c + r * rad * np.cos(t) * aspect, c + r * rad * np.sin(t))), fill=ink, width=width,
              joint="curve")


def _draw_arrow(rng: np.random.Generator, draw: ImageDraw.ImageDraw, c: float, r: float, ink: int,
                width: int) -> None:
    """A shaft of length 2r through (c, c) at a random angle, a pointed head at its tip (sometimes at both
    ends), and with one head sometimes feathers at the tail."""
    a = rng.uniform(0, 2 * math.pi)
    tail, tip = (c - r * math.cos(a), c - r * math.sin(a)), (c + r * math.cos(a), c + r * math.sin(a))
    draw.line([tail, tip], fill=ink, width=width)
    spread, length = rng.uniform(2.4, 2.8), r * rng.uniform(0.3, 0.55)
    ends = [(tip, a), (tail, a + math.pi)] if rng.random() < 0.3 else [(tip, a)]
    for (x, y), b in ends:
        head = [(x + length * math.cos(b + spread), y + length * math.sin(b + spread)), (x, y),
                (x + length * math.cos(b - spread), y + length * math.sin(b - spread))]
        draw.line(head, fill=ink, width=width) if rng.random() < 0.7 else draw.polygon(head, fill=ink)
    if len(ends) == 1 and rng.random() < 0.4:  # feathers at the tail
        for k in (0.0, 0.15):
            x, y = tail[0] + k * 2 * r * math.cos(a), tail[1] + k * 2 * r * math.sin(a)
            for b in (a + 2.4, a - 2.4):
                draw.line([(x, y), (x - length * 0.6 * math.cos(b), y - length * 0.6 * math.sin(b))],
                          fill=ink, width=max(2, width - 1))


def _draw_canopy_on_post(rng: np.random.Generator, draw: ImageDraw.ImageDraw, c: float, r: float, ink: int,
                         width: int) -> None:
    """A triangle or a half-disc's outline above (c, c), on a centred post down to c + r, sometimes with a foot."""
    top, base = c - r, c + r * rng.uniform(-0.1, 0.25)
    half = r * rng.uniform(0.55, 0.9)
    if rng.random() < 0.5:
        draw.polygon([(c - half, base), (c, top), (c + half, base)], outline=ink, width=width)
    else:
        draw.chord([c - half, top, c + half, top + 2 * (base - top)], 180, 360, outline=ink, width=width)
    draw.line([(c, base), (c, c + r)], fill=ink, width=width)
    if rng.random() < 0.4:  # a foot or a handle
        draw.line([(c - half * 0.4, c + r), (c + half * 0.4, c + r)], fill=ink, width=width)


def _draw_small_shapes(rng: np.random.Generator, draw: ImageDraw.ImageDraw, side: int, ink: int,
                       width: int) -> None:
    """2-4 outlined circles, boxes or triangles at random places on a side x side paper."""
    for _ in range(int(rng.integers(2, 5))):
        x, y, s = *_points(rng, 1, side, 0.25)[0], side * rng.uniform(0.08, 0.16)
        shape = rng.integers(0, 3)
        if shape == 0:
            draw.ellipse([x - s, y - s, x + s, y + s], outline=ink, width=max(2, width - 1))
        elif shape == 1:
            draw.rectangle([x - s, y - s, x + s, y + s], outline=ink, width=max(2, width - 1))
        else:
            draw.polygon([(x - s, y + s), (x, y - s), (x + s, y + s)], outline=ink, width=max(2, width - 1))


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float) -> list[tuple[float, float]]:
    """Points of an elliptic arc in the unit square, from angle a0 to a1 in degrees (0: right, 90: down)."""
    t = np.radians(np.linspace(a0, a1, max(4, int(abs(a1 - a0) / 20))))
    return list(zip(cx + rx * np.cos(t), cy + ry * np.sin(t)))


# Signs and letters as a pen writes them: strokes of points in the unit square (y down).  The trust issue's
# confident errors were these, in other hands: arrows read as 7, u, y, Y and H as 4, h as 6, ? as 7 or 3, $ as 5,
# & as 8.  Each keeps what tells it from the digit it resembles: the ? its dot, the $ its bar through the S, the
# & its crossing tail, the y its stroke below the line, the h its open top.  (Font letters come from printed
# faces above; these are the handwritten forms the fonts do not have.)
PEN_SIGNS: dict[str, tuple[list[tuple[float, float]], ...]] = {
    "+": ([(0.5, 0.15), (0.5, 0.85)], [(0.15, 0.5), (0.85, 0.5)]),
    "x": ([(0.2, 0.2), (0.8, 0.8)], [(0.8, 0.2), (0.2, 0.8)]),
    "÷": ([(0.15, 0.5), (0.85, 0.5)], _arc(0.5, 0.25, 0.05, 0.05, 0, 360), _arc(0.5, 0.75, 0.05, 0.05, 0, 360)),
    "=": ([(0.15, 0.38), (0.85, 0.38)], [(0.15, 0.62), (0.85, 0.62)]),
    "%": ([(0.8, 0.15), (0.2, 0.85)], _arc(0.27, 0.25, 0.1, 0.1, 0, 360), _arc(0.73, 0.75, 0.1, 0.1, 0, 360)),
    "#": ([(0.38, 0.1), (0.32, 0.9)], [(0.68, 0.1), (0.62, 0.9)], [(0.15, 0.35), (0.85, 0.35)],
          [(0.12, 0.65), (0.82, 0.65)]),
    "?": (_arc(0.5, 0.3, 0.25, 0.2, 180, 420) + [(0.5, 0.65)], _arc(0.5, 0.88, 0.04, 0.04, 0, 360)),
    "$": (_arc(0.5, 0.33, 0.22, 0.17, -30, 270) + _arc(0.5, 0.67, 0.22, 0.17, -90, 150), [(0.5, 0.05), (0.5, 0.95)]),
    "&": ([(0.85, 0.9), (0.3, 0.35)] + _arc(0.42, 0.25, 0.13, 0.13, 150, 400) + [(0.2, 0.7)]
          + _arc(0.4, 0.72, 0.2, 0.18, 180, 360) + [(0.8, 0.5)],),
    "@": (_arc(0.5, 0.5, 0.14, 0.16, 0, 360), _arc(0.5, 0.5, 0.38, 0.38, 20, 380) + [(0.64, 0.62)]),
    "check": ([(0.15, 0.55), (0.4, 0.85), (0.9, 0.1)],),
    "arrow": ([(0.1, 0.5), (0.9, 0.5)], [(0.65, 0.3), (0.9, 0.5), (0.65, 0.7)]),
    "u": ([(0.2, 0.3)] + _arc(0.5, 0.55, 0.3, 0.3, 180, 0)[::-1] + [(0.8, 0.3), (0.82, 0.85)],),
    "y": ([(0.2, 0.2), (0.5, 0.55)], [(0.8, 0.2), (0.45, 0.75), (0.35, 0.95)]),
    "Y": ([(0.2, 0.15), (0.5, 0.5)], [(0.8, 0.15), (0.5, 0.5), (0.5, 0.9)]),
    "h": ([(0.25, 0.05), (0.25, 0.9)], [(0.25, 0.6)] + _arc(0.5, 0.6, 0.25, 0.2, 180, 360) + [(0.75, 0.9)]),
    "H": ([(0.2, 0.1), (0.2, 0.9)], [(0.8, 0.1), (0.8, 0.9)], [(0.2, 0.5), (0.8, 0.5)]),
    "n": ([(0.2, 0.3), (0.2, 0.85)], [(0.2, 0.5)] + _arc(0.5, 0.5, 0.3, 0.2, 180, 360) + [(0.8, 0.85)]),
    "m": ([(0.1, 0.3), (0.1, 0.8)], _arc(0.3, 0.5, 0.2, 0.2, 180, 360) + [(0.5, 0.8)],
          _arc(0.7, 0.5, 0.2, 0.2, 180, 360) + [(0.9, 0.8)]),
    "w": ([(0.1, 0.2), (0.3, 0.8), (0.5, 0.35), (0.7, 0.8), (0.9, 0.2)],),
    "k": ([(0.25, 0.05), (0.25, 0.9)], [(0.75, 0.3), (0.25, 0.6), (0.8, 0.9)]),
    "e": ([(0.2, 0.5), (0.8, 0.5)] + _arc(0.5, 0.5, 0.3, 0.3, 0, -300),),
    "r": ([(0.3, 0.3), (0.3, 0.9)], [(0.3, 0.55)] + _arc(0.55, 0.5, 0.25, 0.2, 180, 300)),
}


def draw_pen_sign(rng: np.random.Generator, side: int = 96) -> Image.Image:
    """One of PEN_SIGNS, written: its points moved a little (a hand is never exact), scaled, slanted, turned
    (an arrow to any direction, the rest by up to 20 degrees), with a pen 2-10% of the side wide."""
    paper, draw = _paper(rng, side)
    name = str(rng.choice(list(PEN_SIGNS)))
    turn = rng.uniform(0, 2 * math.pi) if name == "arrow" else math.radians(rng.uniform(-20, 20))
    slant, size = rng.uniform(-0.3, 0.3), side * rng.uniform(0.5, 0.8)
    wide = size * rng.uniform(0.7, 1.1)
    ink, width = _ink(rng), int(rng.integers(max(2, side // 50), max(3, side // 10)))
    for stroke in PEN_SIGNS[name]:
        pts = np.asarray(stroke) - 0.5 + rng.normal(0, 0.025, (len(stroke), 2))
        x, y = (pts[:, 0] + slant * pts[:, 1]) * wide, pts[:, 1] * size
        x, y = x * math.cos(turn) - y * math.sin(turn), x * math.sin(turn) + y * math.cos(turn)
        draw.line(list(zip(side / 2 + x, side / 2 + y)), fill=ink, width=width, joint="curve")
    return paper


def draw_clothing(rng: np.random.Generator, image: np.ndarray) -> Image.Image:
    """A Fashion-MNIST item (white on black, 28x28) as a photo of a dark object on light paper."""
    side = int(rng.integers(56, 113))
    item = Image.fromarray(255 - image).resize((side, side), Image.Resampling.BILINEAR)
    return item.rotate(rng.uniform(-15, 15), resample=Image.Resampling.BILINEAR, fillcolor=255)


def draw_pair(rng: np.random.Generator, a: np.ndarray, b: np.ndarray) -> Image.Image:
    """Two MNIST digits side by side, overlapping by up to half a digit: one image, two digits.  (Drawn right
    over each other, one digit often hides the other and the pair looks like a single digit.)"""
    canvas = np.zeros((40, 64), np.uint8)
    dx, dy = int(rng.integers(12, 21)), int(rng.integers(-3, 4))
    canvas[6:34, 8:36] = a
    view = canvas[6 + dy:34 + dy, 8 + dx:36 + dx]
    np.maximum(view, b, out=view)
    return Image.fromarray(255 - canvas).resize((128, 80), Image.Resampling.BILINEAR)


def _looks_like_a_one(digit: np.ndarray) -> bool:
    """A mark that ends up a thin upright bar is a 1, whatever it was drawn as: not an outlier."""
    columns = np.nonzero((digit > 64).any(0))[0]
    return len(columns) > 0 and columns[-1] - columns[0] < 7


def make_outliers(n: int, data_dir: str | os.PathLike, part: str = "train", seed: int = 0,
                  log=say) -> np.ndarray:
    """n outliers (uint8 [n, 28, 28]), as many of each kind.  part="train" draws clothing and digit pairs from
    the training images that recipes train on; part="val" from those held out (clothing: the last 10,000 of
    Fashion-MNIST's training split; pairs: the validation carve of MNIST), with another seed."""
    if part not in ("train", "val"):
        raise DigitrecError(f"part must be train or val, not {part!r}")
    rng = np.random.default_rng([seed, BANK_VERSION, part == "val"])
    mnist = load_split("mnist", data_dir, train=True)
    held = np.zeros(len(mnist), bool)
    held[validation_indices(mnist.labels, min(5000, len(mnist) // 5)).numpy()] = True  # the recipes' carve
    pair_pool = np.nonzero(held if part == "val" else ~held)[0]
    fashion = load_split("fashion-mnist", data_dir, train=True).images.numpy()
    cut = len(fashion) * 5 // 6  # 50,000 of Fashion-MNIST's 60,000 for training outliers, the rest held out
    fashion = fashion[cut:] if part == "val" else fashion[:cut]
    mnist_images, fonts = mnist.images.numpy(), training_fonts()
    out, made, shown = np.zeros((n, 28, 28), np.uint8), 0, -1
    while made < n:
        kind = KINDS[made % len(KINDS)]
        if kind == "letters":
            paper = draw_text(rng, str(rng.choice(list(NOT_DIGIT_CHARS))), str(rng.choice(fonts)),
                              int(rng.integers(56, 129)))
        elif kind == "scribbles":
            paper = draw_scribble(rng, int(rng.integers(56, 129)))
        elif kind == "icons":
            paper = draw_icon(rng, int(rng.integers(56, 129)))
        elif kind == "signs":
            paper = draw_pen_sign(rng, int(rng.integers(56, 129)))
        elif kind == "clothing":
            paper = draw_clothing(rng, fashion[rng.integers(len(fashion))])
        else:
            a, b = rng.choice(pair_pool, 2, replace=False)
            paper = draw_pair(rng, mnist_images[a], mnist_images[b])
        digit = to_digit_space(paper)
        if digit is not None and not _looks_like_a_one(digit):
            out[made] = digit
            made += 1
            if made * 10 // n != shown:
                shown = made * 10 // n
                log(f"outliers ({part}): {made}/{n}")
    return out


def _cached(path: Path, shape: tuple[int, ...], make) -> np.ndarray:
    """The uint8 array saved at `path` if it has `shape`, else make() saved there (atomically) first."""
    if path.is_file():
        bank = np.load(path, allow_pickle=False)
        if bank.shape == shape and bank.dtype == np.uint8:
            return bank
    bank = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")  # (under torchrun every process may make the bank)
    np.save(tmp, bank, allow_pickle=False)
    os.replace(tmp, path)
    return bank


def outlier_bank(data_dir: str | os.PathLike, part: str, n: int, log=say) -> np.ndarray:
    """make_outliers(n, data_dir, part), cached as DATA_DIR/outliers/<part>-v<version>-<n>.npy."""
    return _cached(Path(data_dir) / "outliers" / f"{part}-v{BANK_VERSION}-{n}.npy", (n, 28, 28),
                   lambda: make_outliers(n, data_dir, part, log=log))


# --- printed digits: labelled digits of other shapes than MNIST's writers drew ----------------------------

PRINTED_VERSION = 2  # 2: Liberation and FreeFont faces beside DejaVu
PRINTED_BANK = 12_000  # printed digits made for training (1,200 of each); benchmarks hold out 2,000 ("val")


def make_printed_digits(n: int, part: str = "train", seed: int = 0, log=say) -> np.ndarray:
    """n printed-font digits as uint8 [n, 29, 28]: rows 0-27 the image, row 28 the label in every column
    (one array, so one cache file).  Each digit in a printed face, with the letters' random size, stroke,
    shear and rotation, through the same preprocessing as a request.  Printed fonts only (never handwriting
    fonts): round 0s, flagged and based 1s, open 4s, the shapes MNIST's writers rarely drew, which a network
    taught that loops and bars can be non-digits (the icons above) would otherwise reject."""
    if part not in ("train", "val"):
        raise DigitrecError(f"part must be train or val, not {part!r}")
    rng = np.random.default_rng([seed, PRINTED_VERSION, part == "val", 7])
    fonts = training_fonts()
    out, made, shown = np.zeros((n, 29, 28), np.uint8), 0, -1
    while made < n:
        label = made % 10
        digit = to_digit_space(draw_text(rng, str(label), str(rng.choice(fonts)), int(rng.integers(56, 129))))
        if digit is not None:
            out[made, :28], out[made, 28] = digit, label
            made += 1
            if made * 10 // n != shown:
                shown = made * 10 // n
                log(f"printed digits ({part}): {made}/{n}")
    return out


def printed_digit_bank(data_dir: str | os.PathLike, part: str, n: int = PRINTED_BANK,
                       log=say) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [n, 28, 28], labels int64 [n]) of make_printed_digits, cached in DATA_DIR/outliers/."""
    bank = _cached(Path(data_dir) / "outliers" / f"printed-{part}-v{PRINTED_VERSION}-{n}.npy", (n, 29, 28),
                   lambda: make_printed_digits(n, part, log=log))
    return bank[:, :28], bank[:, 28, 0].astype(np.int64)
