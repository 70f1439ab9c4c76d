"""Augmentation of whole batches on the batch's device: per image one random affine map and, if the recipe asks,
a smooth elastic warp, applied with a single affine_grid + grid_sample call; then an optional random change of
stroke weight, and outlines instead of strokes for a share of the images.  No per-sample Python, no extra dependency."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .recipes import Augment


def random_affine(x: torch.Tensor, aug: Augment) -> torch.Tensor:
    """Distort each image of x [N, C, H, W] by its own draws from the global RNG: rotate, scale, widen and shift;
    warp elastically; thicken or thin the strokes; draw some as outlines."""
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
    theta = torch.stack([torch.stack([cos / wide, -sin / wide, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
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
    return out
