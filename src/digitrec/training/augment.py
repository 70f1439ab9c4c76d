"""Augmentation of whole batches on the batch's device: per image one random affine map and, if the recipe asks,
a smooth elastic warp, applied with a single affine_grid + grid_sample call; then an optional random change of
stroke weight, outlines instead of strokes, felt tips, small captures scaled up and skipped strokes, each for a
share of the images.  Before that, for labelled digits, the
strokes European hands add (flags on 1s, crossbars through 7s).  No per-sample Python, no extra dependency."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from digitrec.training.recipes import Augment


def random_affine(x: torch.Tensor, aug: Augment) -> torch.Tensor:
    """Distort each image of x [N, C, H, W] by its own draws from the global RNG: rotate, scale, widen, slant
    and shift; warp elastically; thicken or thin the strokes; draw some as outlines."""
    n, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    rand = lambda: torch.rand(n, device=x.device) * 2 - 1  # uniform in [-1, 1]
    angle = rand() * math.radians(aug.degrees)
    lo, hi = aug.scale
    scale = lo + (rand() + 1) / 2 * (hi - lo)
    # affine_grid maps output coordinates to input ones in [-1, 1] (2 units = image size): invert the zoom.
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    tx, ty = rand() * 2 * aug.translate, rand() * 2 * aug.translate
    # Wider or narrower hands: the width alone scaled by a factor log-uniform in [1/(1+aspect), 1+aspect].
    # (drawn only when asked: a recipe without it keeps the random draws, and so the runs, it had before)
    wide = torch.exp(rand() * math.log1p(aug.aspect)) if aug.aspect > 0 else torch.ones_like(angle)
    # Slant (italic hands): input x also moves with y; composed after the rotation.  Drawn only when asked.
    slant = rand() * aug.shear if aug.shear > 0 else torch.zeros_like(angle)
    a, b, c, d = cos / wide, -sin / wide, sin, cos
    theta = torch.stack([torch.stack([a, a * slant + b, tx], 1), torch.stack([c, c * slant + d, ty], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    if aug.elastic > 0:
        # A random displacement on a coarse 4x4 lattice, smoothly upsampled: the whole digit bends a little, as
        # another hand would draw it (Simard et al. 2003 smooth a per-pixel field; this is the cheap equivalent).
        coarse = torch.randn(n, 2, 4, 4, device=x.device, dtype=x.dtype) * (aug.elastic / 2 * 2 / w)
        grid = grid + F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if aug.thickness > 0:
        # Other pens: move each image part of the way towards its 3x3 dilation (thicker) or erosion (thinner).
        s = (rand() * aug.thickness).view(n, 1, 1, 1).to(x.dtype)
        thicker, thinner = F.max_pool2d(out, 3, 1, 1), -F.max_pool2d(-out, 3, 1, 1)
        out = out + s.clamp(min=0) * (thicker - out) + (-s).clamp(min=0) * (thinner - out)
    if aug.hollow > 0:
        # Outline lettering: the stroke made a pixel bolder (3x3 dilation), minus its 3x3 erosion, leaves a
        # one-to-two-pixel edge on both sides; doubled, since an edge of a soft stroke is fainter than the stroke.
        bold = F.max_pool2d(out, 3, 1, 1)
        outline = ((bold + F.max_pool2d(-bold, 3, 1, 1)) * 2).clamp(0, 1)
        out = torch.where((torch.rand(n, device=x.device) < aug.hollow).view(n, 1, 1, 1), outline, out)
    return other_pens_and_captures(out, aug)


def other_pens_and_captures(x: torch.Tensor, aug: Augment) -> torch.Tensor:
    """Felt tips, small captures scaled up, and pens that skip, each on its own random share of x [N, 1, H, W]
    (augment.felt, lowres, breaks).  Each draws from the global RNG only when asked, so recipes without them
    keep their runs; each works on its chosen images only."""
    n = x.shape[0]
    for share, change in ((aug.felt, felt_tip), (aug.lowres, small_capture), (aug.breaks, skipped_strokes)):
        if share > 0:
            chosen = torch.rand(n, device=x.device) < share
            if chosen.any():
                x = x.clone()
                x[chosen] = change(x[chosen])
    return x


def felt_tip(x: torch.Tensor) -> torch.Tensor:
    """A dilation by a disc of radius 2 (a 3x3 square and a 5-long cross): a 2-3 px MNIST stroke becomes 5-6 px,
    a felt tip's width at this scale, and small loops nearly close.  (A full 5x5 square closed the gaps of 5s
    into 6s; the 3x3 change of `thickness` covers the widths between.)"""
    return torch.maximum(F.max_pool2d(x, 3, 1, 1),
                         torch.maximum(F.max_pool2d(x, (5, 1), 1, (2, 0)), F.max_pool2d(x, (1, 5), 1, (0, 2))))


def small_capture(x: torch.Tensor) -> torch.Tensor:
    """Every image of x as if its digit (20 of the 28 px) had been captured 8-16 px tall, averaged down by area,
    scaled back up bilinearly and its contrast stretched again (what a phone makes of a small digit); half of
    them thresholded back to hard strokes, as an app that binarises its photos does.  One interpolate pair per
    capture size, not per image."""
    n, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    sizes = torch.randint(8, 17, (n,), device=x.device) * h // 20  # image side for a digit 8-16 px tall
    out = x.clone()
    for size in sizes.unique().tolist():
        pick = sizes == size
        small = F.interpolate(x[pick], size=(size, size), mode="area")
        out[pick] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    out = (out / out.amax((2, 3), keepdim=True).clamp(min=1e-3)).clamp(0, 1)
    hard = (torch.rand(n, device=x.device) < 0.5).view(n, 1, 1, 1)
    return torch.where(hard, ((out - 0.35) / 0.3).clamp(0, 1), out)


def skipped_strokes(x: torch.Tensor) -> torch.Tensor:
    """Every image of x with one to three gaps, 1-2 px in radius, cut across its strokes, and a one-pixel pinhole
    at each of the three sites drawn that got no gap (inked points drawn at random: a pen that skips, faint ink,
    a loop left open)."""
    n, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    ink = (x[:, 0] > 0.5).flatten(1).to(x.dtype)
    where = torch.multinomial(ink + 1e-6, 3)  # [N, 3] flat pixel indices, inked ones almost surely
    centres = torch.stack([where % w, where // w], -1).to(x.dtype)  # [N, 3, 2] as x, y
    radius = 1.0 + torch.rand(n, 3, device=x.device, dtype=x.dtype)
    radius = radius * (torch.arange(3, device=x.device) < torch.randint(1, 4, (n, 1), device=x.device))
    ys, xs = torch.meshgrid(torch.arange(h, device=x.device, dtype=x.dtype),
                            torch.arange(w, device=x.device, dtype=x.dtype), indexing="ij")
    distance = ((xs[None, None] - centres[..., 0, None, None]) ** 2
                + (ys[None, None] - centres[..., 1, None, None]) ** 2).sqrt()  # [N, 3, H, W]
    keep = (distance - radius[..., None, None]).clamp(0, 1).amin(1)  # 0 inside a gap (a radius 0 site: its pixel)
    return x * keep[:, None]


def _strokes(h: int, w: int, start: torch.Tensor, end: torch.Tensor, pen: torch.Tensor) -> torch.Tensor:
    """Ink [N, h, w] of one straight stroke per image from start to end ([N, 2] as x, y in pixels), pen pixels
    wide with a one-pixel soft edge (pen 0: no ink)."""
    ys, xs = torch.meshgrid(torch.arange(h, device=start.device, dtype=start.dtype),
                            torch.arange(w, device=start.device, dtype=start.dtype), indexing="ij")
    p = torch.stack([xs, ys], -1)[None]  # [1, h, w, 2]
    a, ab = start[:, None, None], (end - start)[:, None, None]
    t = (((p - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp(min=1e-6)).clamp(0, 1)
    distance = (p - a - t[..., None] * ab).norm(dim=-1)
    return (pen[:, None, None] / 2 + 0.5 - distance).clamp(0, 1) * (pen > 0)[:, None, None]


def european_strokes(x: torch.Tensor, labels: torch.Tensor, share: float) -> torch.Tensor:
    """Add to `share` of the 1s of x [N, 1, H, W] (digits, ink high) a flag from the top of the stem, down and
    to the left, a fifth to four fifths of the digit's height long, and to a third of those a foot; through
    `share` of the 7s a crossbar at mid height.  The pen is the digit's ink per row (a 7's bar included, so its
    crossbar comes out a little bolder than its stroke), 1.2 to 4 pixels.  Left alone: 1s whose stem leans so far
    right that the flag could not fall to its left, 7s with no ink at mid height.  Random draws from the global
    RNG, like random_affine's; the images are otherwise unchanged."""
    n, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    ink = x[:, 0] > 0.5
    rows = ink.any(2)
    inked = rows.any(1)
    top = rows.float().argmax(1)
    bottom = h - 1 - rows.flip(1).float().argmax(1)
    height = (bottom - top + 1).to(x.dtype)
    pen = (x[:, 0].sum((1, 2)) / height.clamp(min=1)).clamp(1.2, 4.0)
    columns = torch.arange(w, device=x.device, dtype=x.dtype)
    index = torch.arange(n, device=x.device)

    def centre(row: torch.Tensor) -> torch.Tensor:  # the mean inked column of each image's given row
        r = ink[index, row.clamp(0, h - 1)].to(x.dtype)
        return (r * columns).sum(1) / r.sum(1).clamp(min=1)

    uniform = lambda lo, hi: lo + torch.rand(n, device=x.device, dtype=x.dtype) * (hi - lo)
    chosen = inked & (torch.rand(n, device=x.device) < share)
    ones, sevens = chosen & (labels == 1), chosen & (labels == 7)
    feet = ones & (torch.rand(n, device=x.device) < 1 / 3)

    stem_top = torch.stack([centre(top), top.to(x.dtype)], 1)
    base = torch.stack([centre(bottom), bottom.to(x.dtype)], 1)
    # The flag leaves the stem to its left.  Without a foot it falls steeply, at most 50 degrees from straight
    # down: a flatter one on a bare stem is how MNIST's writers drew a 7 with a short bar (a first version
    # with flat bare flags misread 7 of the 5,000 validation digits' 7s as 1s, 17 of the test set's).  With a
    # foot (DejaVu's 1) it may be flatter.
    stem = base - stem_top
    slope = torch.atan2(-stem[:, 0], stem[:, 1])  # the stem's angle from straight down, positive leaning right
    footed = feet.to(x.dtype)
    spread = torch.deg2rad(uniform(20, 45) + footed * uniform(5, 20))
    flattest = math.radians(50) + footed * math.radians(20)
    angle = torch.minimum(slope + spread, flattest)
    ones = ones & (slope + math.radians(20) <= flattest)  # (masks only: the random draws stay the same)
    feet = feet & ones
    length = height * uniform(0.2, 0.8)
    flag_end = stem_top + torch.stack([-length * torch.sin(angle), length * torch.cos(angle)], 1)
    foot = height * uniform(0.12, 0.25)
    middle = top + (height * uniform(0.45, 0.6)).long()
    sevens = sevens & ink[index, middle.clamp(0, h - 1)].any(1)
    bar, tilt = height * uniform(0.12, 0.22), uniform(-0.1, 0.1)
    centre_bar = torch.stack([centre(middle), middle.to(x.dtype)], 1)
    half_bar = torch.stack([bar * torch.cos(tilt), bar * torch.sin(tilt)], 1)
    added = torch.maximum(torch.maximum(
        _strokes(h, w, stem_top, flag_end, pen * ones),
        _strokes(h, w, base - torch.stack([foot, 0 * foot], 1), base + torch.stack([foot, 0 * foot], 1), pen * feet)),
        _strokes(h, w, centre_bar - half_bar, centre_bar + half_bar, pen * sevens))
    return torch.maximum(x, added[:, None].to(x.dtype))
