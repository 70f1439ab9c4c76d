"""The trust benchmark's shifted sets: images made by processes that training never imitated (issue trust-shift).

Every digit here is an MNIST *validation* digit (the 5,000 that `split_validation` holds out of training, never
a test digit), upscaled to a 70-110 px tall digit on a large canvas, changed there with OpenCV and NumPy (not
with the tensor ops of training/augment.py), and then photographed: cropped to its ink, a paper margin, black
or blue ink on light paper with light falloff and sensor noise, saved as PNG.  The PNG goes through `predict`
as a user's image would.  What differs from training, set by set, is the PROCESS that made the image:

- low_resolution: the digit is captured 8-16 px tall from the big canvas (area averaging, at a random sub-pixel
  phase), scaled back up bicubically, blurred and re-thresholded with a sigmoid to pen-like strokes, and then
  goes the whole way through decode/find_ink/to_mnist.  Training's small_capture (augment.lowres) only averages the 28x28 tensor down and back up bilinearly and stretches its maximum.
- felt_tip / ballpoint: the strokes are REDRAWN: the digit is thinned to its one-pixel skeleton (Zhang-Suen) and
  a round pen of one fixed radius is swept along it (12-18% of the digit's height for a felt tip, 3-5% for a
  ballpoint; thinner, 10% at a time, where the felt tip would fill a loop), so every stroke has the pen's width
  and round ends whatever the writer's pen was.  Training changes stroke weight by mixing in a 3x3 max-pool
  (dilation or erosion) of the MNIST strokes: their own widths, a little bolder or lighter.
- faint_ink: a pen running dry: ink drops out where a smooth random field (its grain 1.5-3 pen widths)
  falls under a threshold, and fades near those gaps: gaps of a pen width or a few, faint stretches.  Training's
  skipped_strokes (augment.breaks) cuts 1-3 round holes of 1-2 px at random inked points.
- european: 1s get a long flag from the top of the stem (25-60 degrees off the stem, 25-55% of the height,
  bowed) and 40% of them a foot; 7s get a crossbar (half-length 12-25% of the height, tilted up to 12 degrees,
  at 42-62% of the height, off-centre up to a quarter of its half-length, bowed); all drawn with cv2's
  anti-aliased polylines on the big canvas with the pen's width measured there, then photographed and prepared.
  Training draws straight tensor strokes on the 28x28 (a bare flag at most 50 degrees from straight down, the
  bar centred on the stem, tilted up to 0.1 rad).
- open_loops: 0s, 6s and 9s whose loop is left open: the loop's hole is found by flood-filling the background,
  and a wedge of ink 1-2 pen widths wide is erased from the loop's wall where the hole comes closest to the
  outside (or at a random angle); and 0s with one thin side (one half eroded).  No training process looks for
  a loop to open or thin (skipped_strokes may open one by chance with a 1-2 px hole).
- fast_slanted: written fast: slanted 20-35 degrees (cv2.warpAffine shear, mostly forwards), squashed to 60-85%
  of its width, thinner strokes, and a little motion blur along the line of writing.  The shipped recipe slants
  at most 0.15 (8.5 degrees) and narrows at most to 1/1.15, with no blur.

Non-digits:
- signs_and_letters_handwritten: signs and letters in the handwriting fonts of benchmarks/wild.py (never trained
  on; training's letters are printed fonts).  Glyphs a font lacks are skipped, never drawn as boxes; glyphs that
  a person could read as a digit are left out (LEFT_OUT says which and why).  (No installed handwriting font
  has the tick or the cross mark; minus signs and arrows are in only a few.)
- doodles_other_procedure: turtle walks with smoothly varying curvature, wobbly spirals, Lissajous knots,
  spirograph rosettes, rose curves, hatched clouds and spline scribbles, drawn with cv2.polylines and varied pen
  widths: shapes and a drawing procedure that neither training's outliers (PIL scribbles and icons) nor
  wild.py's doodles use.

Every set is drawn from its own seeded generator (SEEDS), so the sets are the same on every machine.  The digits
are the same 5,000 validation digits the shipped model's temperature, thresholds and prediction sets were fitted
on (as the shifted images they were not): the sets' ECE and set coverage may read a little better than on digits
of other writers.
"""

from __future__ import annotations

import functools
import io
import math
import os

import cv2
import numpy as np
from PIL import Image, ImageFont

from benchmarks.wild import _text_layer, handwriting_fonts

# The seeds of the sets: their own, so the older rows of the trust benchmark stay the same images.
SEEDS = {"low_resolution": 3101, "felt_tip": 3102, "ballpoint": 3103, "faint_ink": 3104, "european": 3105,
         "open_loops": 3106, "fast_slanted": 3107, "signs_and_letters_handwritten": 3108,
         "doodles_other_procedure": 3109}
DIGIT_HEIGHT = (70, 110)  # px: with the margins the images are about 80-220 px on a side, a phone crop's size
# Dark inks only (RGB in [0, 1]): black, blue ballpoint, dark blue; the trust issue asks for black or blue.
INKS = ((0.08, 0.08, 0.10), (0.10, 0.16, 0.52), (0.06, 0.10, 0.33))
SIGNS = "+\u2212\u00d7\u00f7=%#&?$@\u2713\u2717\u2192\u2190\u2191"  # + minus times divide = % # & ? $ @ check x arrows
LETTERS = "uyYhHaektmnrvwxABEFKMNRWX"
# Left out although the issue suggests some of them: glyphs a person could read as a digit when written alone.
LEFT_OUT = {"O o": "a 0", "l I | !": "a 1", "S s": "a 5 (lowercase s is the same shape, smaller)",
            "Z z": "a 2 (z: the same shape, smaller)", "g q": "a 9", "b": "a 6 with a straight ascender",
            "G": "a 6", "T": "a 7 (with a short bar)"}
DOODLE_KINDS = ("turtle", "spiral", "lissajous", "spirograph", "rose", "hatched_cloud", "spline")


# ---- the digits and the photo ----------------------------------------------------------------------------------

def validation_digits(data_dir: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """MNIST's validation digits (uint8 [5000, 28, 28], white ink on black) and their labels: held out of
    training by the same seeded split training uses, so the shipped model never saw them."""
    from digitrec.data.datasets import load_split, split_validation

    val = split_validation(load_split("mnist", data_dir, train=True), 5000)[1]
    return val.images.numpy(), val.labels.numpy()


def _pick(rng: np.random.Generator, labels: np.ndarray, n: int, allowed: tuple[int, ...] = tuple(range(10))):
    """Up to n indices of distinct validation digits whose labels are in `allowed`, taken in turn from each
    label (a set of 1s and 7s: half each) while a label has digits left, in random order."""
    per = [list(rng.permutation(np.flatnonzero(labels == d))) for d in allowed]
    chosen = [int(p[i]) for i in range(max(map(len, per))) for p in per if i < len(p)][:n]
    return [chosen[i] for i in rng.permutation(len(chosen))]


def _big(digit: np.ndarray, height: float) -> np.ndarray:
    """A 28x28 digit (its 20 px box) as a `height` px tall digit: float ink in [0, 1] on a canvas with room
    around it (a third of the height on every side) for strokes drawn out of the MNIST box.  Bicubic upscaling,
    then a soft threshold at half ink: crisp, anti-aliased pen edges instead of MNIST's blur blown up."""
    s = height / 20
    side = round(28 * s)
    v = cv2.resize(digit.astype(np.float32) / 255, (side, side), interpolation=cv2.INTER_CUBIC)
    v = cv2.GaussianBlur(v, (0, 0), 0.3 * s)  # smooths the 28x28 pixel staircase out of the outline
    ink = np.clip((v / max(v.max(), 1e-6) - 0.45) / 0.15 + 0.5, 0, 1)
    pad = round(height / 3)
    return np.pad(ink, pad).astype(np.float32)


def _photo(rng: np.random.Generator, ink: np.ndarray) -> bytes:
    """Ink (float [h, w], 1: full ink) as a photo or scan: cropped to its ink with a paper margin of 12-40% of
    its size on each side, black or blue ink on light paper (a random tone and tint), light falling off across
    the sheet, a slight blur and grey sensor noise.  PNG bytes."""
    ys, xs = np.nonzero(ink > 0.05)
    ink = ink[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    margins = (rng.uniform(0.12, 0.4, 4) * max(ink.shape)).astype(int)
    ink = np.pad(ink, ((margins[0], margins[1]), (margins[2], margins[3])))
    h, w = ink.shape
    paper = rng.uniform(0.80, 0.96) * rng.uniform(0.96, 1.02, 3)  # white, cream or greyish paper
    angle = rng.uniform(0, 2 * math.pi)
    gy, gx = np.mgrid[0:h, 0:w] / max(h, w)
    light = 1 - rng.uniform(0, 0.15) * ((gx * math.cos(angle) + gy * math.sin(angle)) / 1.42 + 0.5)
    pen = np.asarray(INKS[rng.integers(len(INKS))]) + rng.uniform(-0.03, 0.03, 3)
    alpha = (ink * rng.uniform(0.85, 1.0))[..., None]
    rgb = (light[..., None] * paper) * (1 - alpha) + pen * alpha
    if rng.random() < 0.5:  # the camera's focus or the scanner's optics
        rgb = cv2.GaussianBlur(rgb.astype(np.float32), (0, 0), rng.uniform(0.3, 0.8))
    rgb = rgb + rng.normal(0, rng.uniform(0.005, 0.025), (h, w, 1))
    buffer = io.BytesIO()
    Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8), "RGB").save(buffer, "PNG")
    return buffer.getvalue()


# ---- stroke geometry on the big canvas --------------------------------------------------------------------------

def _thin(mask: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning (1984) of a boolean mask to its 8-connected one-pixel skeleton, vectorised with NumPy
    (OpenCV's ximgproc.thinning and scikit-image are not installed here)."""
    img = np.pad(mask.astype(np.uint8), 1)
    while True:
        changed = False
        for step in (0, 1):
            p = img  # (its border row and column stay 0)
            n = [p[:-2, 1:-1], p[:-2, 2:], p[1:-1, 2:], p[2:, 2:], p[2:, 1:-1], p[2:, :-2], p[1:-1, :-2], p[:-2, :-2]]
            count = sum(q.astype(np.int32) for q in n)  # P2..P9, clockwise from the pixel above
            transitions = sum(((n[i] == 0) & (n[(i + 1) % 8] == 1)).astype(np.int32) for i in range(8))
            if step == 0:
                side = (n[0] * n[2] * n[4] == 0) & (n[2] * n[4] * n[6] == 0)
            else:
                side = (n[0] * n[2] * n[6] == 0) & (n[0] * n[4] * n[6] == 0)
            drop = (img[1:-1, 1:-1] == 1) & (count >= 2) & (count <= 6) & (transitions == 1) & side
            if drop.any():
                img[1:-1, 1:-1][drop] = 0
                changed = True
        if not changed:
            return img[1:-1, 1:-1].astype(bool)


def _round_pen(path: np.ndarray, radius: float) -> np.ndarray:
    """The ink a round pen of `radius` px leaves when swept along a one-pixel path: every pixel within the
    radius of the path, with a one-pixel anti-aliased edge."""
    distance = cv2.distanceTransform((~path).astype(np.uint8), cv2.DIST_L2, 5)
    return np.clip(radius + 0.5 - distance, 0, 1).astype(np.float32)


def _pen_width(mask: np.ndarray) -> float:
    """Mean stroke width in px: twice the ink's area over its outline's length (a stroke is long and thin)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    return 2 * float(mask.sum()) / max(sum(cv2.arcLength(c, True) for c in contours), 1.0)


def _holes(mask: np.ndarray, min_area: float = 0) -> list[np.ndarray]:
    """The loops' holes of an ink mask: the background's 4-connected regions that do not reach the border (what
    a flood fill of the background from the border leaves), at least min_area px each, largest first."""
    n, labels = cv2.connectedComponents((~mask).astype(np.uint8), connectivity=4)
    border = set(np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])).tolist())
    holes = [labels == k for k in range(1, n) if k not in border]
    return sorted((h for h in holes if h.sum() >= min_area), key=lambda h: -h.sum())


def _height(mask: np.ndarray) -> int:
    rows = np.flatnonzero(mask.any(1))
    return int(rows[-1] - rows[0] + 1)


# ---- the digit sets ---------------------------------------------------------------------------------------------

def low_resolution(rng: np.random.Generator, images: np.ndarray, labels: np.ndarray, n: int) -> list[tuple[int, bytes]]:
    """A phone photo of a small digit: captured 8-16 px tall, scaled back up, blurred, contrast stretched."""
    out = []
    for i in _pick(rng, labels, n):
        height = rng.uniform(*DIGIT_HEIGHT)
        ink = _big(images[i], height)
        f = rng.integers(8, 17) / height  # the capture's scale: the digit 8-16 px tall on the sensor
        # A random sub-pixel phase between the digit and the sensor's grid (a photo is never aligned to it).
        shift = np.float32([[1, 0, rng.uniform(0, 1 / f)], [0, 1, rng.uniform(0, 1 / f)]])
        ink = cv2.warpAffine(ink, shift, ink.shape[::-1], flags=cv2.INTER_LINEAR)
        small = cv2.resize(ink, (max(1, round(ink.shape[1] * f)), max(1, round(ink.shape[0] * f))),
                           interpolation=cv2.INTER_AREA)  # each sensor pixel averages the light it gets
        up = cv2.resize(small, ink.shape[::-1], interpolation=cv2.INTER_CUBIC)
        up = cv2.GaussianBlur(up, (0, 0), rng.uniform(0.3, 0.6) / f)  # optics: under a sensor pixel of blur
        # The phone's sharpening and contrast: a sigmoid at 35-50% of the strongest ink makes pen-like strokes.
        top = max(float(up.max()), 1e-6)
        s = 1 / (1 + np.exp(-(up / top - rng.uniform(0.35, 0.5)) / rng.uniform(0.05, 0.1)))
        out.append((int(labels[i]), _photo(rng, ((s - s.min()) / max(s.max() - s.min(), 1e-6)).astype(np.float32))))
    return out


def _redrawn(rng: np.random.Generator, images: np.ndarray, labels: np.ndarray, n: int,
             radius: tuple[float, float]) -> list[tuple[int, bytes]]:
    """Digits redrawn by a round pen swept along their skeletons, its radius a share of the digit's height drawn
    from `radius`.  A pen so wide that it would fill a loop or close an opening (the count of holes of at least
    (4% of the height)^2 changes) is made thinner, 10% at a time: a person would still read the digit."""
    out = []
    for i in _pick(rng, labels, n):
        mask = _big(images[i], rng.uniform(*DIGIT_HEIGHT)) > 0.5
        height = _height(mask)
        skeleton = _thin(mask)
        min_area = (0.04 * height) ** 2
        loops = len(_holes(mask, min_area))
        r = rng.uniform(*radius) * height
        ink = _round_pen(skeleton, r)
        while r > 1.5 and len(_holes(ink > 0.5, min_area)) != loops:
            r *= 0.9
            ink = _round_pen(skeleton, r)
        out.append((int(labels[i]), _photo(rng, ink)))
    return out


def felt_tip(rng: np.random.Generator, images: np.ndarray, labels: np.ndarray, n: int) -> list[tuple[int, bytes]]:
    """A thick round felt tip (radius 12-18% of the digit's height) along the digit's skeleton."""
    return _redrawn(rng, images, labels, n, (0.12, 0.18))


def ballpoint(rng: np.random.Generator, images: np.ndarray, labels: np.ndarray, n: int) -> list[tuple[int, bytes]]:
    """A thin ballpoint (radius 3-5% of the digit's height) along the digit's skeleton."""
    return _redrawn(rng, images, labels, n, (0.03, 0.05))


def faint_ink(rng: np.random.Generator, images: np.ndarray, labels: np.ndarray, n: int) -> list[tuple[int, bytes]]:
    """A pen running dry: ink drops out along the strokes where a smooth random field is low, and fades near the
    gaps.  The field's grain is 1.5-3 pen widths, so the gaps are a few pen widths long; 10-25% of the inked
    pixels are dropped (a threshold at that quantile of the field over the ink)."""
    out = []
    for i in _pick(rng, labels, n):
        ink = _big(images[i], rng.uniform(*DIGIT_HEIGHT))
        mask = ink > 0.5
        grain = rng.uniform(1.5, 3) * _pen_width(mask)
        h, w = ink.shape
        coarse = rng.normal(size=(int(h / grain) + 3, int(w / grain) + 3)).astype(np.float32)
        field = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)  # smooth at the scale of the grain
        field = (field - field[mask].mean()) / max(float(field[mask].std()), 1e-6)
        cut = float(np.quantile(field[mask], rng.uniform(0.1, 0.25)))
        keep = np.clip((field - cut) / 0.05, 0, 1)  # the ink stops within a pixel or two
        fade = np.clip(0.55 + 0.45 * (field - cut) / 1.5, 0.55, 1)  # lighter ink close to a gap
        out.append((int(labels[i]), _photo(rng, (ink * keep * fade).astype(np.float32))))
    return out


def _polyline(canvas: np.ndarray, points: list[tuple[float, float]], thickness: float) -> None:
    """An anti-aliased open polyline onto a uint8 canvas (cv2, 1/16 px precision)."""
    pts = np.round(np.asarray(points) * 16).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(canvas, [pts], False, 255, max(1, round(thickness)), cv2.LINE_AA, shift=4)


def _bowed(rng: np.random.Generator, a: np.ndarray, b: np.ndarray, bow: float) -> list[tuple[float, float]]:
    """12 points on a quadratic curve from a to b, its middle pushed sideways by up to `bow` of its length (a
    hand's stroke is never quite straight)."""
    normal = np.array([-(b - a)[1], (b - a)[0]])
    middle = (a + b) / 2 + normal * rng.uniform(-bow, bow)
    t = np.linspace(0, 1, 12)[:, None]
    return [tuple(p) for p in (1 - t) ** 2 * a + 2 * (1 - t) * t * middle + t ** 2 * b]


def _nearest(rows: np.ndarray, y: float) -> int:
    """The inked row nearest to y."""
    return int(rows[np.argmin(np.abs(rows - y))])


def _row_centre(mask: np.ndarray, rows: np.ndarray, y: float) -> float:
    """The middle of the ink's columns in the inked row nearest to y."""
    return float(np.flatnonzero(mask[_nearest(rows, y)]).mean())


def european(rng: np.random.Generator, images: np.ndarray, labels: np.ndarray, n: int) -> list[tuple[int, bytes]]:
    """1s with a long flag (and 40% of them a foot) and 7s with a crossbar, drawn with cv2 polylines."""
    out = []
    for i in _pick(rng, labels, n, (1, 7)):
        ink = _big(images[i], rng.uniform(*DIGIT_HEIGHT))
        mask = ink > 0.5
        rows = np.flatnonzero(mask.any(1))
        top, bottom, height = rows[0], rows[-1], rows[-1] - rows[0] + 1
        pen = _pen_width(mask) * rng.uniform(0.8, 1.1)  # the writer's own pen, give or take
        centre = functools.partial(_row_centre, mask, rows)
        strokes = np.zeros(ink.shape, np.uint8)
        if labels[i] == 1:
            head = np.array([centre(top + pen / 2), top + pen / 2])
            base = np.array([centre(bottom - pen / 2), bottom - pen / 2])
            lean = math.atan2(base[0] - head[0], base[1] - head[1])  # the stem's angle from straight down
            angle = lean - math.radians(rng.uniform(25, 60))  # the flag falls to the left of the stem
            length = height * rng.uniform(0.25, 0.55)
            tip = head + length * np.array([math.sin(angle), math.cos(angle)])
            _polyline(strokes, _bowed(rng, head, tip, 0.08), pen)
            if rng.random() < 0.4:  # a foot across the base
                half, tilt = height * rng.uniform(0.12, 0.25), math.radians(rng.uniform(-8, 8))
                step = half * np.array([math.cos(tilt), math.sin(tilt)])
                _polyline(strokes, _bowed(rng, base - step, base + step, 0.04), pen)
        else:
            y = _nearest(rows, top + height * rng.uniform(0.42, 0.62))  # an inked row: the bar crosses the stem
            half, tilt = height * rng.uniform(0.12, 0.25), math.radians(rng.uniform(-12, 12))
            middle = np.array([centre(y) + half * rng.uniform(-0.25, 0.25), y])
            step = half * np.array([math.cos(tilt), math.sin(tilt)])
            _polyline(strokes, _bowed(rng, middle - step, middle + step, 0.06), pen)
        out.append((int(labels[i]), _photo(rng, np.maximum(ink, strokes.astype(np.float32) / 255))))
    return out


def _open_loop(rng: np.random.Generator, ink: np.ndarray) -> np.ndarray | None:
    """The digit with a wedge cut out of its biggest loop: where the hole comes closest to the outside (60%) or
    at a random angle; the gap 1-2 pen widths wide, erased only near the hole (the rest of the digit stays).
    None when the digit has no loop or the cut does not open it."""
    mask = ink > 0.5
    holes = _holes(mask, (0.04 * _height(mask)) ** 2)
    if not holes:
        return None
    hole, pen = holes[0], _pen_width(mask)
    outside = ~mask & ~np.any(_holes(mask), axis=0)  # the background that reaches the border
    to_outside = cv2.distanceTransform((~outside).astype(np.uint8), cv2.DIST_L2, 5)
    ys, xs = np.nonzero(hole)
    c = np.array([xs.mean(), ys.mean()])
    k = int(np.argmin(to_outside[hole]))
    angle = math.atan2(ys[k] - c[1], xs[k] - c[0]) if rng.random() < 0.6 else rng.uniform(0, 2 * math.pi)
    ring = float(np.hypot(xs - c[0], ys - c[1]).max()) + pen
    # Only the loop's own wall is cut: ink within three pen widths of the hole (not the 6's stem, the 9's tail).
    reach = cv2.distanceTransform((~hole).astype(np.uint8), cv2.DIST_L2, 5) <= 3 * pen
    gy, gx = np.mgrid[0:ink.shape[0], 0:ink.shape[1]]
    off = np.angle(np.exp(1j * (np.arctan2(gy - c[1], gx - c[0]) - angle)))  # each pixel's angle from the cut
    for gap in rng.uniform(1, 2) * pen * np.array([1, 1.5, 2.2]):
        wedge = (np.abs(off) <= math.atan2(gap / 2, ring)) & reach
        cut = ink * ~wedge
        if not any((h & hole).any() for h in _holes(cut > 0.5)):  # the loop's hole now reaches the outside
            return cut.astype(np.float32)
    return None


def _thin_side(rng: np.random.Generator, ink: np.ndarray) -> np.ndarray | None:
    """A 0 with one side drawn thin: the half of it on a random side eroded (a third to two thirds of the pen's
    width), blending into the other half.  None when the thin side would break the loop."""
    mask = ink > 0.5
    pen, loops = _pen_width(mask), len(_holes(mask, (0.04 * _height(mask)) ** 2))
    ys, xs = np.nonzero(mask)
    angle = rng.uniform(0, 2 * math.pi)
    gy, gx = np.mgrid[0:ink.shape[0], 0:ink.shape[1]]
    along = (gx - xs.mean()) * math.cos(angle) + (gy - ys.mean()) * math.sin(angle)
    side = 1 / (1 + np.exp(-along / (0.05 * _height(mask))))  # 1 on the thin side, 0 on the other
    for share in (rng.uniform(0.35, 0.65), 0.3, 0.2):
        k = max(1, round(share * pen)) | 1
        eroded = cv2.erode(ink, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
        thin = (side * eroded + (1 - side) * ink).astype(np.float32)
        if loops and len(_holes(thin > 0.5, (0.04 * _height(mask)) ** 2)) == loops and (thin > 0.5).sum() > 0:
            return thin
    return None


def open_loops(rng: np.random.Generator, images: np.ndarray, labels: np.ndarray, n: int) -> list[tuple[int, bytes]]:
    """0s, 6s and 9s with their loop left open (two thirds of the set), and 0s with one thin side (a third).
    A digit the change cannot be made to (no loop, or a loop the cut does not open) is passed over."""
    out = []
    opened = _pick(rng, labels, 2 * n, (0, 6, 9))  # more than needed: some loops cannot be opened
    thin = _pick(rng, labels, n, (0,))
    want_thin = n // 3
    for index, change, want in ((thin, _thin_side, want_thin), (opened, _open_loop, n - want_thin)):
        made = 0
        for i in index:
            if made == want:
                break
            changed = change(rng, _big(images[i], rng.uniform(*DIGIT_HEIGHT)))
            if changed is not None:
                out.append((int(labels[i]), _photo(rng, changed)))
                made += 1
    return [out[i] for i in rng.permutation(len(out))]


def fast_slanted(rng: np.random.Generator, images: np.ndarray, labels: np.ndarray, n: int) -> list[tuple[int, bytes]]:
    """Written fast: slant 20-35 degrees (forwards 80% of the time), width squashed to 60-85%, strokes thinner
    (eroded, a one-pixel trace kept so they never break), motion blur 3-9 px along the line of writing."""
    out = []
    for i in _pick(rng, labels, n):
        ink = _big(images[i], rng.uniform(*DIGIT_HEIGHT))
        mask = ink > 0.5
        k = max(1, round(rng.uniform(0.25, 0.45) * _pen_width(mask))) | 1
        ink = np.maximum(cv2.erode(ink, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))),
                         _round_pen(_thin(mask), 0.8))
        h, w = ink.shape
        slant = math.tan(math.radians(rng.uniform(20, 35))) * (1 if rng.random() < 0.8 else -1)
        squash = rng.uniform(0.6, 0.85)
        width = int(w * squash + abs(slant) * h) + 2
        # x' = squash (x - w/2) + slant (h/2 - y) + width/2: the top leans forwards, the middle row stays put.
        matrix = np.float32([[squash, -slant, width / 2 - squash * w / 2 + slant * h / 2], [0, 1, 0]])
        ink = cv2.warpAffine(ink, matrix, (width, h), flags=cv2.INTER_LINEAR)
        length, tilt = int(rng.integers(3, 10)), math.radians(rng.uniform(-15, 15))
        kernel = np.zeros((length, length), np.float32)
        r = (length - 1) / 2
        cv2.line(kernel, (round(r - r * math.cos(tilt)), round(r - r * math.sin(tilt))),
                 (round(r + r * math.cos(tilt)), round(r + r * math.sin(tilt))), 1.0, 1)
        ink = cv2.filter2D(ink, -1, kernel / kernel.sum())
        ink = np.clip(ink / max(float(np.percentile(ink[ink > 0.05], 95)), 1e-6), 0, 1)  # the ink's tone again
        out.append((int(labels[i]), _photo(rng, ink.astype(np.float32))))
    return out


# ---- non-digits --------------------------------------------------------------------------------------------------

@functools.cache
def font_glyphs(path: str, wanted: str = SIGNS + LETTERS) -> str:
    """The characters of `wanted` that the font really draws: in its character map (fontTools), with ink when
    drawn, and not the font's missing-glyph box (the mask of a private-use character no font maps)."""
    from fontTools.ttLib import TTFont

    cmap = TTFont(path, lazy=True, fontNumber=0).getBestCmap() or {}
    font = ImageFont.truetype(path, 64)
    missing = np.asarray(font.getmask("\ue000")).tobytes()
    return "".join(ch for ch in wanted if ord(ch) in cmap and font.getmask(ch).getbbox() is not None
                   and np.asarray(font.getmask(ch)).tobytes() != missing)


def signs_and_letters_handwritten(rng: np.random.Generator, n: int) -> list[tuple[str, bytes]]:
    """Signs (+ - x / = % # & ? $ @, ticks, crosses, arrows) and letters in a random handwriting font each,
    40-160 px, the glyph drawn by wild.py's text layer (its pen weight and slant) and photographed here.
    Signs are a third of the set.  Kinds: "sign <ch>" or "letter <ch>"."""
    fonts = [(f, font_glyphs(f)) for f in handwriting_fonts()]
    fonts = [(f, g) for f, g in fonts if g]
    out = []
    for k in range(n):
        pool = SIGNS if k % 3 == 0 else LETTERS
        font, glyphs = fonts[rng.integers(len(fonts))]
        have = [ch for ch in glyphs if ch in pool] or list(glyphs)
        ch = have[rng.integers(len(have))]
        layer = _text_layer(rng, ch, font, int(rng.integers(40, 160)))
        kind = "sign" if ch in SIGNS else "letter"
        out.append((f"{kind} {ch}", _photo(rng, np.asarray(layer, np.float32) / 255)))
    return out


def _doodle_points(rng: np.random.Generator, kind: str) -> list[np.ndarray]:
    """The strokes (arrays of x, y in about [-1, 1]) of one doodle of `kind`."""
    t = np.linspace(0, 2 * math.pi, 400)
    if kind == "turtle":  # a walk whose turning rate itself wanders smoothly (an Ornstein-Uhlenbeck process)
        turn, heading, p, pts = 0.0, rng.uniform(0, 2 * math.pi), np.zeros(2), []
        for _ in range(int(rng.integers(400, 700))):  # long enough to curl and cross itself: no digit's stroke
            turn = 0.95 * turn + rng.normal(0, 0.05)
            heading += turn
            p = p + 0.02 * np.array([math.cos(heading), math.sin(heading)])
            pts.append(p)
        return [np.array(pts)]
    if kind == "spiral":  # inwards, an ellipse's aspect, its radius wobbling
        turns = rng.uniform(2, 4)
        a = np.linspace(0, 2 * math.pi * turns, 500)
        r = (1 - a / a[-1] * 0.9) * (1 + 0.08 * np.sin(a * rng.uniform(2, 5)))
        return [np.c_[r * np.cos(a), r * np.sin(a) * rng.uniform(0.6, 1)]]
    if kind == "lissajous":  # frequency pairs far from 1:1 (an ellipse, a 0) and 1:2 (a figure eight)
        fa, fb = [(2, 3), (3, 4), (3, 5), (4, 5), (2, 5), (5, 4)][rng.integers(6)]
        return [np.c_[np.sin(fa * t + rng.uniform(0, math.pi)), np.sin(fb * t)]]
    if kind == "spirograph":  # a hypotrochoid: a circle rolling inside another, a pen off its centre
        big, small, d = 1.0, rng.choice([0.3, 0.375, 0.4, 0.6]), rng.uniform(0.4, 0.9)
        a = np.linspace(0, 2 * math.pi * 8, 2000)
        return [np.c_[(big - small) * np.cos(a) + d * small * np.cos((big - small) / small * a),
                      (big - small) * np.sin(a) - d * small * np.sin((big - small) / small * a)]]
    if kind == "rose":  # r = cos(k theta): 3, 4, 5 or 8 petals
        k = rng.choice([2, 3, 4, 5])
        r = np.cos(k * t)
        return [np.c_[r * np.cos(t), r * np.sin(t)]]
    if kind == "hatched_cloud":  # a bumpy closed outline, and parallel hatching inside it
        r = 0.75 + sum(rng.uniform(0.04, 0.1) * np.abs(np.sin(m * t / 2 + rng.uniform(0, 3))) for m in (5, 7, 9))
        outline = np.c_[r * np.cos(t), r * np.sin(t) * rng.uniform(0.55, 0.8)]
        slope, lines = rng.uniform(-1.2, 1.2), []
        for y in np.linspace(-0.5, 0.5, int(rng.integers(4, 8))):
            lines.append(np.array([[-0.6, y - 0.6 * slope * 0.3], [0.6, y + 0.6 * slope * 0.3]]))
        return [outline] + lines
    return [_catmull_rom(rng.uniform(-1, 1, (int(rng.integers(8, 14)), 2)))]  # spline: through 8-13 points


def _catmull_rom(points: np.ndarray) -> np.ndarray:
    """A smooth curve through the points (a Catmull-Rom spline, 20 samples a segment; the ends repeated)."""
    c = np.vstack([points[:1], points, points[-1:]])
    s = np.linspace(0, 1, 20)[:, None]
    segments = []
    for i in range(1, len(c) - 2):
        p0, p1, p2, p3 = c[i - 1], c[i], c[i + 1], c[i + 2]
        segments.append(0.5 * (2 * p1 + (p2 - p0) * s + (2 * p0 - 5 * p1 + 4 * p2 - p3) * s ** 2
                               + (3 * p1 - p0 - 3 * p2 + p3) * s ** 3))
    return np.vstack(segments)


def doodles_other_procedure(rng: np.random.Generator, per_kind: int) -> list[tuple[str, bytes]]:
    """per_kind doodles of each DOODLE_KINDS kind: scaled to fill a 90-180 px box at a random rotation, drawn
    with cv2 anti-aliased polylines, the pen 1.5-6% of the box wide (a fine liner to a marker)."""
    out = []
    for kind in DOODLE_KINDS:
        for _ in range(per_kind):
            strokes = _doodle_points(rng, kind)
            a = rng.uniform(0, 2 * math.pi)
            turn = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
            strokes = [s @ turn.T for s in strokes]
            every = np.vstack(strokes)
            lo, hi = every.min(0), every.max(0)
            side = rng.uniform(90, 180)
            scale = side / max(hi - lo)
            canvas = np.zeros((int(side * 1.3) + 4,) * 2, np.uint8)
            for s in strokes:
                _polyline(canvas, list((s - lo) * scale + side * 0.15), side * rng.uniform(0.015, 0.06))
            out.append((kind, _photo(rng, canvas.astype(np.float32) / 255)))
    return out


# The digit sets, by row name, in the order the benchmark prints them.
DIGIT_SETS = {"low_resolution": low_resolution, "felt_tip": felt_tip, "ballpoint": ballpoint,
              "faint_ink": faint_ink, "european": european, "open_loops": open_loops, "fast_slanted": fast_slanted}
