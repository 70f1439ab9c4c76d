"""Photos-, scans- and canvas-like images made from MNIST *test* digits (never the training split), for the
prediction and line-reading tests.  Each variant is what a user's own image tends to look like."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter


def _big(digit: np.ndarray, side: int) -> np.ndarray:
    """A 28x28 uint8 white-on-black digit upscaled smoothly to side x side, float in [0, 1]."""
    return np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC), np.float32) / 255


def _png(array: np.ndarray, mode: str = "L", fmt: str = "PNG", **save) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.clip(array * 255, 0, 255).astype(np.uint8), mode=mode).save(buffer, fmt, **save)
    return buffer.getvalue()


def _paper(h: int, w: int, rng: np.random.Generator, noise: float = 0.0, uneven: bool = False) -> np.ndarray:
    paper = np.full((h, w), rng.uniform(0.85, 0.97), np.float32)
    if uneven:  # a shadow across the sheet, as in a phone photo
        gy, gx = np.mgrid[0:h, 0:w] / max(h, w)
        paper -= 0.25 * (gx * rng.uniform(0.5, 1) + gy * rng.uniform(0, 0.5))
    if noise:
        paper += rng.normal(0, noise, (h, w)).astype(np.float32)
    return paper


def _ink_on_paper(ink: np.ndarray, paper: np.ndarray, darkness: float = 0.85) -> np.ndarray:
    return np.clip(paper * (1 - darkness * ink), 0, 1)


def _place(ink: np.ndarray, h: int, w: int, top: int, left: int) -> np.ndarray:
    canvas = np.zeros((h, w), np.float32)
    canvas[top:top + ink.shape[0], left:left + ink.shape[1]] = ink
    return canvas


def variants(digit: np.ndarray, rng: np.random.Generator) -> dict[str, bytes]:
    """One MNIST test digit (28x28 uint8) as image files of many kinds."""
    ink112 = _big(digit, 112)
    out = {
        "mnist": _png(digit.astype(np.float32) / 255),
        "inverted": _png(1 - digit.astype(np.float32) / 255),
        "scaled-up": _png(_ink_on_paper(_big(digit, 400), _paper(400, 400, rng))),
        "small": _png(_ink_on_paper(_place(_big(digit, 24), 160, 160, rng.integers(5, 130), rng.integers(5, 130)),
                                    _paper(160, 160, rng))),
        "off-centre": _png(_ink_on_paper(_place(ink112, 300, 240, rng.integers(0, 188), rng.integers(0, 128)),
                                         _paper(300, 240, rng))),
        "noisy-uneven": _png(_ink_on_paper(_place(ink112, 200, 200, 40, 50), _paper(200, 200, rng, 0.04, True))),
        "jpeg": _png(_ink_on_paper(_place(ink112, 160, 160, 24, 24), _paper(160, 160, rng)), fmt="JPEG",
                     quality=30),
    }
    # A canvas export: black strokes, transparency everywhere else.
    rgba = np.zeros((140, 140, 4), np.float32)
    rgba[14:126, 14:126, 3] = ink112
    out["rgba-transparent"] = _png(rgba, mode="RGBA")
    # Pen-thin and marker-thick strokes.
    mask = Image.fromarray((ink112 > 0.5).astype(np.uint8) * 255)
    thin = np.asarray(mask.filter(ImageFilter.MinFilter(5)), np.float32) / 255
    if thin.sum() > 0.25 * (ink112 > 0.5).sum():  # skip when erosion would erase the digit
        out["thin"] = _png(_ink_on_paper(_place(thin, 160, 160, 24, 24), _paper(160, 160, rng)))
    thick = np.asarray(mask.filter(ImageFilter.MaxFilter(9)), np.float32) / 255
    out["thick"] = _png(_ink_on_paper(_place(thick, 160, 160, 24, 24), _paper(160, 160, rng)))
    out["chalkboard"] = _png(np.clip(0.15 + 0.75 * _place(ink112, 160, 160, 24, 24)
                                     + rng.normal(0, 0.03, (160, 160)), 0, 1))
    return out


def line(digits: list[np.ndarray], rng: np.random.Generator, scale: int = 3, stretch: list[float] | None = None,
         gaps: list[int] | None = None) -> bytes:
    """Several MNIST test digits side by side on paper, with varied gaps and a little vertical jitter.
    stretch: per digit, a factor on its width (a wide 5, an italic 8); gaps: the gaps in pixels of the
    28x28 digits (negative: the digits overlap and touch), instead of random ones of 2-12."""
    side = 28 * scale
    crops = []
    for i, d in enumerate(digits):  # crop each digit to its ink columns so the gaps are the ones drawn here
        cols = np.nonzero(d.max(0) > 40)[0]
        crop = _big(d, side)[:, cols[0] * scale:(cols[-1] + 1) * scale]
        if stretch and stretch[i] != 1:
            crop = np.asarray(Image.fromarray(crop).resize((round(crop.shape[1] * stretch[i]), side),
                                                           Image.Resampling.BICUBIC), np.float32).clip(0, 1)
        crops.append(crop)
    gaps = np.array(gaps) * scale if gaps is not None else rng.integers(2 * scale, 12 * scale, len(crops) - 1)
    width = sum(c.shape[1] for c in crops) + int(gaps.sum()) + 2 * side
    height = side + 2 * side // 2
    canvas = np.zeros((height, width), np.float32)
    x = side
    for i, crop in enumerate(crops):
        y = side // 2 + int(rng.integers(-scale * 3, scale * 3))
        canvas[y:y + side, x:x + crop.shape[1]] = np.maximum(canvas[y:y + side, x:x + crop.shape[1]], crop)
        x += crop.shape[1] + (int(gaps[i]) if i < len(gaps) else 0)
    return _png(_ink_on_paper(canvas, _paper(height, width, rng, noise=0.02)))
