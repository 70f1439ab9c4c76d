"""A grey image -> the ink on it -> a digit as MNIST draws it.

MNIST digits are white ink on black, cropped to the ink, scaled so the longer side is 20 px (aspect kept,
anti-aliased) and placed in 28x28 with their centre of mass at the centre.  Photos, scans and canvas drawings
are none of that, so: ink map (polarity, background flattened, Otsu, specks removed) -> crop, stroke width
evened, resize to 20 px, centre of mass at (14, 14).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

# An image is only specks (nothing) when its biggest mark is under this share of its longest side (and short);
# on a sheet of numbers, digits are small against the sheet.
SPECK, SHEET_SPECK = 0.04, 0.01
# Marks under this share of the image's area are specks (unless as big as 2% of the biggest mark).
SPECK_AREA = 1e-4
# On a sheet a mark of at least this share of its typical mark (the median of those over SPECK_AREA: no dust
# among them) is kept however small on the page: the dots of a colon beside small digits (24 px against a
# typical 193, where SPECK_AREA of the sheet was 26 px), not a broken-off piece of 25 px beside digits of 400.
SHEET_DOT = 0.08
MIN_CONTRAST = 0.12  # ink must differ from the background by this much (of the 0-1 grey range)
TARGET_STROKE = 2.4  # MNIST strokes are about this wide (px) in the 20 px box
CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))  # the 4-neighbour structuring element


@dataclass
class Ink:
    """An image as white-on-black ink intensities in [0, 1] (background 0), plus the mask of kept ink."""

    values: np.ndarray  # float32 [H, W]
    mask: np.ndarray  # bool [H, W]

    @property
    def empty(self) -> bool:
        return not self.mask.any()


def otsu(hist: np.ndarray) -> float:
    """The threshold that best splits values in [0, 1], given as their histogram of equal bins, in two classes."""
    hist = hist.astype(np.float64)
    bins = len(hist)
    edges = np.linspace(0.0, 1.0, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    s0 = np.cumsum(hist * centres)
    m0 = s0 / np.maximum(w0, 1)
    m1 = (s0[-1] - s0) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(edges[np.argmax(between) + 1])


def percentile(values: np.ndarray, q: float) -> float:
    """np.percentile(values, q) (linear), by partition: the same number at a third of the cost on small arrays."""
    v = values.ravel()
    k = (len(v) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    part = np.partition(v, (lo, hi))
    return float(part[lo] + (part[hi] - part[lo]) * (k - lo))


def ink_is_dark(grey: np.ndarray) -> bool:
    """Ink is the minority: if the border (background) is lighter than the image on average, ink is dark."""
    return percentile(np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]]), 50) > grey.mean()


def centre_of_mass(values: np.ndarray) -> tuple[float, float]:
    """(row, column) of the values' centre of mass (their sum must be positive)."""
    total = float(values.sum())
    return (float(values.sum(1) @ np.arange(values.shape[0])) / total,
            float(values.sum(0) @ np.arange(values.shape[1])) / total)


def grey_opening(values: np.ndarray, size: int) -> np.ndarray:
    """scipy.ndimage.grey_opening(values, size) (a square window, reflected borders), on OpenCV.  For an even
    window the dilation's anchor is one pixel before the erosion's, so that the two undo each other's shift:
    OpenCV's own MORPH_OPEN uses one anchor for both, and its "opening" of an even window can exceed the image."""
    square = np.ones((size, size), np.uint8)
    eroded = cv2.erode(values, square, anchor=(size // 2, size // 2), borderType=cv2.BORDER_REFLECT)
    back = size - 1 - size // 2
    return cv2.dilate(eroded, square, anchor=(back, back), borderType=cv2.BORDER_REFLECT)


def find_ink(grey: np.ndarray, sheet: bool = False) -> Ink:
    """Grey image -> white-on-black ink, background flattened, specks removed.

    OpenCV does the filtering and the labelling: the same operations as scipy.ndimage (reflected borders, the
    opening's anchors, 8-connected components) at a fraction of the cost on these small images (a 446x336
    page: 2.4 -> 0.7 ms).  The image is only specks (nothing) when its biggest mark is under SPECK of its
    longest side (and short); a sheet of numbers (`sheet`) passes a smaller share, SHEET_SPECK, its digits being
    small on it, and keeps its smaller dots (SHEET_DOT)."""
    h, w = grey.shape
    flat = flatten_background(grey)
    # Pixel noise must not make ink.
    smooth = cv2.GaussianBlur(flat, (0, 0), max(0.5, min(h, w) / 400), borderType=cv2.BORDER_REFLECT)
    nothing = Ink(np.zeros_like(flat), np.zeros(flat.shape, bool))
    threshold = ink_threshold(smooth)
    if threshold is None:
        return nothing
    marks = kept_marks(smooth > threshold, sheet)
    if marks is None:
        return nothing
    mask, kept = marks
    return Ink(ink_values(flat, mask, kept, threshold), mask)


def flatten_background(grey: np.ndarray) -> np.ndarray:
    """Grey image -> its ink bright (polarity turned where ink is dark) on a background flattened to 0."""
    h, w = grey.shape
    ink = 1.0 - grey if ink_is_dark(grey) else grey.copy()
    # Uneven lighting: take away a smooth background.  A grey opening wider than any stroke removes the
    # (bright) ink and keeps the paper; it runs on a small copy, then is smoothed and scaled back up.
    f = max(1, max(h, w) // 96)
    small = np.ascontiguousarray(ink[::f, ::f])
    window = max(3, max(small.shape) // 3)
    background = cv2.blur(grey_opening(small, window), (window, window), borderType=cv2.BORDER_REFLECT)
    if background.shape != (h, w):
        background = cv2.resize(background, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(ink - background, 0, 1)


def ink_threshold(smooth: np.ndarray) -> float | None:
    """Otsu's threshold between ink and paper in the smoothed, flattened ink (at least MIN_CONTRAST / 2), or
    None when its strongest ink stands less than MIN_CONTRAST above its median: no ink."""
    # One histogram (256 bins: floor(256 v), 1.0 in the last) gives the median (to the bin) and Otsu's threshold.
    # Most pixels are flattened paper in bin 0; counting them apart is 3x faster than one bincount, whose
    # increments of one same counter wait on each other.
    levels = cv2.convertScaleAbs(smooth, alpha=256, beta=-0.5)
    hist = np.bincount(levels[levels > 0], minlength=256)
    hist[0] = levels.size - hist[1:].sum()
    median = (np.searchsorted(np.cumsum(hist), smooth.size / 2) + 0.5) / len(hist)
    if smooth.max() - median < MIN_CONTRAST:
        return None
    return max(otsu(hist), MIN_CONTRAST / 2)


def label_marks(mask: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """cv2.connectedComponentsWithStats of the mask, 8-connected: (count with the background, labels, stats)."""
    h, w = mask.shape
    # 16-bit labels when they fit (3x faster than 32-bit here): 8-connected components need gaps between them,
    # so an image has at most about a quarter of its pixels as components.
    label_type = cv2.CV_16U if h * w < 4 * (1 << 16) - 4 * (h + w) else cv2.CV_32S
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), None, None, None, 8, label_type)
    return n, labels, stats


def only_specks(biggest: np.ndarray, speck: float, h: int, w: int) -> bool:
    """Whether the image's biggest mark (its stats row) is a speck, and the image so only specks: noise, not a
    digit."""
    # Small against the image's longest side, unless it stands a third of the image's height and at least 12 px
    # tall: in a long strip (a line of 20-odd digits or more) the digits are small against its length, and only
    # there (wider than 8 times its height) does that clause change anything.
    return max(biggest[cv2.CC_STAT_WIDTH], biggest[cv2.CC_STAT_HEIGHT]) < speck * max(h, w) and \
        biggest[cv2.CC_STAT_HEIGHT] < max(h / 3, 12)


def kept_marks(mask: np.ndarray, sheet: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
    """The thresholded ink's marks -> (the mask of those kept, their stats rows), or None when there is no digit
    in it: no marks, only specks, or ink everywhere."""
    h, w = mask.shape
    n, labels, stats = label_marks(mask)
    if n <= 1:
        return None
    sizes = stats[1:, cv2.CC_STAT_AREA]
    if only_specks(stats[1 + int(np.argmax(sizes))], SHEET_SPECK if sheet else SPECK, h, w):
        return None
    floor = SPECK_AREA * h * w
    typical = sizes[sizes >= floor]
    if sheet and len(typical):
        floor = min(floor, SHEET_DOT * float(np.median(typical)))
    keep = sizes >= max(0.02 * sizes.max(), floor, 2)  # specks much smaller than the strokes go
    if not keep.any():  # (a lone pixel in a small image)
        return None
    if not keep.all():  # (a lookup over every pixel: only when there is something to drop)
        mask = np.concatenate([[False], keep])[labels]
    if sizes[keep].sum() > 0.6 * h * w:  # "ink" everywhere is no digit (a texture, a dark photo)
        return None
    return mask, stats[1:][keep]


def ink_values(flat: np.ndarray, mask: np.ndarray, kept: np.ndarray, threshold: float) -> np.ndarray:
    """float32 ink intensities in [0, 1] of the flattened image, at and next to the kept ink (kept: its marks'
    stats rows), 0 elsewhere."""
    h, w = flat.shape
    # Grey levels are kept (anti-aliased edges), scaled so the stroke core is 1; only near kept ink, so only
    # within the kept ink's box and one pixel around it (on a page, a tenth of the image).
    x0, y0 = max(int(kept[:, 0].min()) - 1, 0), max(int(kept[:, 1].min()) - 1, 0)
    x1 = min(int((kept[:, 0] + kept[:, 2]).max()) + 1, w)
    y1 = min(int((kept[:, 1] + kept[:, 3]).max()) + 1, h)
    box_mask, box_flat = mask[y0:y1, x0:x1], flat[y0:y1, x0:x1]
    strong = percentile(box_flat[box_mask], 90)
    near = cv2.dilate(np.ascontiguousarray(box_mask).view(np.uint8), CROSS,
                      borderType=cv2.BORDER_CONSTANT, borderValue=0).view(bool)
    values = np.zeros((h, w), np.float32)
    scaled = np.clip((box_flat - threshold / 2) / max(strong - threshold / 2, 1e-6), 0, 1)
    values[y0:y1, x0:x1] = np.where(near, scaled, 0)
    return values


def stroke_width(mask: np.ndarray) -> float:
    """Mean stroke width in pixels: twice the ink area over its outline length."""
    area = np.count_nonzero(mask)
    # (erosion by the 4-neighbour cross; outside the image counts as background, as in scipy's binary_erosion)
    inner = cv2.erode(mask.view(np.uint8), CROSS, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return float(2 * area / max(area - np.count_nonzero(inner), 1))


def even_strokes(values: np.ndarray, mask: np.ndarray, scale: float) -> np.ndarray:
    """Thin pen strokes in a big image vanish when shrunk by `scale`: thicken them to MNIST's width first."""
    wanted = TARGET_STROKE / scale
    width = stroke_width(mask)
    if width < 0.7 * wanted:
        grow = int(round((wanted - width) / 2))
        pad = grow + 1
        values = cv2.dilate(np.pad(values, pad), np.ones((2 * grow + 1, 2 * grow + 1), np.uint8),
                            borderType=cv2.BORDER_REFLECT)
    return values


STRIP_HEIGHT, STRIP_INK, STRIP_MAX_WIDTH = 32, 24, 256  # the sequence reader's input: ink 24 px tall in 32


def to_strip(ink: Ink) -> np.ndarray:
    """Ink of a number (digits that may touch) -> float32 [32, W] for the sequence reader: the ink's box
    scaled to 24 px tall (aspect kept, at most 256 px wide), strokes evened as for to_mnist, 4 px of margin,
    W a multiple of 4."""
    x0, y0, bw, bh = cv2.boundingRect(np.ascontiguousarray(ink.mask).view(np.uint8))
    values, mask = ink.values[y0:y0 + bh, x0:x0 + bw], np.ascontiguousarray(ink.mask[y0:y0 + bh, x0:x0 + bw])
    scale = min(STRIP_INK / max(bh, 1), (STRIP_MAX_WIDTH - 8) / max(bw, 1))
    box = Image.fromarray((even_strokes(values, mask, scale) * 255).astype(np.uint8))
    scale = min(STRIP_INK / box.height, (STRIP_MAX_WIDTH - 8) / box.width)  # (evening may have padded it)
    box = box.resize((max(1, round(box.width * scale)), max(1, round(box.height * scale))), Image.Resampling.LANCZOS)
    strip = np.asarray(box, dtype=np.float32) / 255.0
    if strip.max() > 0:
        strip /= strip.max()
    width = -(-(strip.shape[1] + 8) // 4) * 4
    out = np.zeros((STRIP_HEIGHT, width), np.float32)
    top = (STRIP_HEIGHT - strip.shape[0]) // 2
    out[top:top + strip.shape[0], 4:4 + strip.shape[1]] = strip
    return out


def to_mnist(ink: Ink) -> np.ndarray:
    """Ink of one digit -> float32 [28, 28] as MNIST: 20 px box, centre of mass at the centre."""
    x0, y0, bw, bh = cv2.boundingRect(np.ascontiguousarray(ink.mask).view(np.uint8))  # of the non-zero pixels
    y1, x1 = y0 + bh, x0 + bw
    values, mask = ink.values[y0:y1, x0:x1], np.ascontiguousarray(ink.mask[y0:y1, x0:x1])
    values = even_strokes(values, mask, 20.0 / max(y1 - y0, x1 - x0))
    box = Image.fromarray((values * 255).astype(np.uint8))
    s = 20 / max(box.size)  # longest side to 20 px, up or down, aspect kept
    box = box.resize((max(1, round(box.width * s)), max(1, round(box.height * s))), Image.Resampling.LANCZOS)
    digit = np.asarray(box, dtype=np.float32) / 255.0
    if digit.max() > 0:
        digit /= digit.max()
    out = np.zeros((28, 28), np.float32)
    cy, cx = centre_of_mass(digit) if digit.sum() > 0 else (digit.shape[0] / 2, digit.shape[1] / 2)
    top = int(np.clip(round(14 - cy), 0, 28 - digit.shape[0]))
    left = int(np.clip(round(14 - cx), 0, 28 - digit.shape[1]))
    out[top:top + digit.shape[0], left:left + digit.shape[1]] = digit
    return out


def mnist_form(grey: np.ndarray) -> np.ndarray | None:
    """The image itself (ink 1 at its strongest) when it already has MNIST's form, else None: 28x28, ink on a
    background of exactly 0 once the polarity is turned, the ink's box 20 px on its longer side (19: anti-aliased
    edges), its centre of mass within half a pixel of the middle.  The bounds are MNIST's own, read off the
    60,000 training digits: every box 19 or 20 px, every centre of mass within 0.5 px but 2 (0.52 px).
    Preparing such an image again would only resample it: the 10,000 MNIST test digits as PNGs scored 99.49%
    through find_ink and to_mnist, 99.59% as they are (`digitrec predict` with the `wide` model shipped then),
    and taking them as they are costs a sixth of the time."""
    if grey.shape != (28, 28):
        return None
    ink = 1.0 - grey if ink_is_dark(grey) else grey
    strongest = float(ink.max())
    if strongest < MIN_CONTRAST:
        return None
    _, _, w, h = cv2.boundingRect((ink > 0).view(np.uint8))
    if max(w, h) not in (19, 20):
        return None
    cy, cx = centre_of_mass(ink)
    if max(abs(cy - 14), abs(cx - 14)) > 0.5:
        return None
    return (ink / strongest).astype(np.float32)
