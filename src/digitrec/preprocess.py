"""People's images -> what the model was trained on.  One path for `predict`, `read` and the server.

MNIST digits are white ink on black, cropped to the ink, scaled so the longer side is 20 px (aspect kept,
anti-aliased) and placed in 28x28 with their centre of mass at the centre.  Photos, scans and canvas drawings
are none of that, so:

    decode (alpha on white, EXIF orientation, grey)  ->  ink map (polarity, background flattened, Otsu,
    specks removed)  ->  crop, stroke width evened, resize to 20 px, centre of mass at (14, 14).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps
from scipy import ndimage

from .errors import DigitrecError

MAX_BYTES = 20 * 1024 * 1024  # an image file larger than this is refused before decoding
MAX_PIXELS = 40_000_000  # declared width x height above this is refused before decoding (decompression bombs)
WORK_SIDE = 1024  # images are shrunk to at most this side before any analysis: cost stays bounded
MIN_CONTRAST = 0.12  # ink must differ from the background by this much (of the 0-1 grey range)
TARGET_STROKE = 2.4  # MNIST strokes are about this wide (px) in the 20 px box
TOO_LARGE = "image too large"  # how every size refusal begins (the server answers those with 413)


@dataclass
class Ink:
    """An image as white-on-black ink intensities in [0, 1] (background 0), plus the mask of kept ink."""

    values: np.ndarray  # float32 [H, W]
    mask: np.ndarray  # bool [H, W]

    @property
    def empty(self) -> bool:
        return not self.mask.any()


def decode(data: bytes) -> tuple[np.ndarray, float]:
    """Image bytes (any format Pillow reads) -> (grey float32 [H, W] in [0, 1] with dark = 0, scale), where
    scale = original width / analysed width (> 1 when a big image was shrunk to WORK_SIDE)."""
    if len(data) > MAX_BYTES:
        raise DigitrecError(f"{TOO_LARGE} ({len(data)} bytes; the limit is {MAX_BYTES})", code="too_large")
    if not data:
        raise DigitrecError("empty file: not an image", code="invalid_image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > MAX_PIXELS:
                raise DigitrecError(f"{TOO_LARGE} ({image.width}x{image.height} pixels; "
                                    f"the limit is {MAX_PIXELS:,} pixels)", code="too_large")
            image.seek(0)  # first frame of an animation
            image = ImageOps.exif_transpose(image)
            image.load()
    except DigitrecError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DigitrecError(f"{TOO_LARGE} (over {MAX_PIXELS:,} pixels)", code="too_large") from None
    except Image.UnidentifiedImageError:
        raise DigitrecError("not an image Pillow can read (PNG, JPEG, BMP, GIF, TIFF, WebP ...)",
                            code="unsupported_format") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:  # truncated or corrupt data
        raise DigitrecError(f"cannot decode image: {e}", code="invalid_image") from None
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Canvas drawings are often strokes on a transparent background: composite on white paper.
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(paper, rgba)
    width = image.width
    if max(image.size) > WORK_SIDE:
        image.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BOX)
    grey = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    return grey, width / image.width


def otsu(values: np.ndarray, bins: int = 256) -> float:
    """The threshold that best splits `values` (in [0, 1]) into two classes."""
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(edges[np.argmax(between) + 1])


def find_ink(grey: np.ndarray) -> Ink:
    """Grey image -> white-on-black ink, background flattened, specks removed."""
    h, w = grey.shape
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    # Ink is the minority: if the border (background) is lighter than the image on average, ink is dark.
    ink = 1.0 - grey if np.median(border) > grey.mean() else grey.copy()
    # Uneven lighting: take away a smooth background.  A grey opening wider than any stroke removes the
    # (bright) ink and keeps the paper; it runs on a small copy, then is smoothed and scaled back up.
    f = max(1, max(h, w) // 96)
    small = ink[::f, ::f]
    window = max(3, max(small.shape) // 3)
    background = ndimage.uniform_filter(ndimage.grey_opening(small, size=window), size=window)
    background = ndimage.zoom(background, (h / small.shape[0], w / small.shape[1]), order=1)[:h, :w]
    flat = np.clip(ink - background, 0, 1)
    smooth = ndimage.gaussian_filter(flat, sigma=max(0.5, min(h, w) / 400))  # pixel noise must not make ink
    nothing = Ink(np.zeros_like(flat), np.zeros(flat.shape, bool))
    if smooth.max() - np.median(smooth) < MIN_CONTRAST:
        return nothing
    threshold = max(otsu(smooth), MIN_CONTRAST / 2)
    mask = smooth > threshold
    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    if not n:
        return nothing
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
    biggest = ndimage.find_objects(labels)[int(np.argmax(sizes))]
    if max(biggest[0].stop - biggest[0].start, biggest[1].stop - biggest[1].start) < 0.04 * max(h, w):
        return nothing  # only specks: noise, not a digit
    keep = sizes >= max(0.02 * sizes.max(), 1e-4 * h * w, 2)  # specks much smaller than the strokes go
    mask = keep[labels - 1] & (labels > 0)
    if mask.sum() > 0.6 * h * w:  # "ink" everywhere is no digit (a texture, a dark photo)
        return nothing
    strong = np.percentile(flat[mask], 90)
    # Grey levels are kept (anti-aliased edges), scaled so the stroke core is 1; only near kept ink.
    near = ndimage.binary_dilation(mask, iterations=1)
    values = np.where(near, np.clip((flat - threshold / 2) / max(strong - threshold / 2, 1e-6), 0, 1), 0)
    return Ink(values.astype(np.float32), mask)


def stroke_width(mask: np.ndarray) -> float:
    """Mean stroke width in pixels: twice the ink area over its outline length."""
    area = mask.sum()
    outline = area - ndimage.binary_erosion(mask).sum()
    return float(2 * area / max(outline, 1))


def to_mnist(ink: Ink) -> np.ndarray:
    """Ink of one digit -> float32 [28, 28] as MNIST: 20 px box, centre of mass at the centre."""
    ys, xs = np.nonzero(ink.mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    values, mask = ink.values[y0:y1, x0:x1], ink.mask[y0:y1, x0:x1]
    scale = 20.0 / max(y1 - y0, x1 - x0)
    # Thin pen strokes in a big image vanish when shrunk: thicken them to MNIST's width first.
    wanted = TARGET_STROKE / scale
    width = stroke_width(mask)
    if width < 0.7 * wanted:
        grow = int(round((wanted - width) / 2))
        pad = grow + 1
        values = ndimage.grey_dilation(np.pad(values, pad), size=(2 * grow + 1, 2 * grow + 1))
    box = Image.fromarray((values * 255).astype(np.uint8))
    s = 20 / max(box.size)  # longest side to 20 px, up or down, aspect kept
    box = box.resize((max(1, round(box.width * s)), max(1, round(box.height * s))), Image.Resampling.LANCZOS)
    digit = np.asarray(box, dtype=np.float32) / 255.0
    if digit.max() > 0:
        digit /= digit.max()
    out = np.zeros((28, 28), np.float32)
    cy, cx = ndimage.center_of_mass(digit) if digit.sum() > 0 else (digit.shape[0] / 2, digit.shape[1] / 2)
    top = int(np.clip(round(14 - cy), 0, 28 - digit.shape[0]))
    left = int(np.clip(round(14 - cx), 0, 28 - digit.shape[1]))
    out[top:top + digit.shape[0], left:left + digit.shape[1]] = digit
    return out


def preprocess(data: bytes) -> np.ndarray | None:
    """Image bytes -> float32 [28, 28] in [0, 1] ready for the model, or None when the image has no ink."""
    ink = find_ink(decode(data)[0])
    return None if ink.empty else to_mnist(ink)


def to_png(digit: np.ndarray) -> bytes:
    """A 28x28 float image as PNG bytes (what the model saw)."""
    buffer = io.BytesIO()
    Image.fromarray((np.clip(digit, 0, 1) * 255).round().astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()
