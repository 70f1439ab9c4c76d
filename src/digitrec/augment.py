"""Augmentation of whole batches on the batch's device: one random affine map per image, applied with a
single affine_grid + grid_sample call (no per-sample Python, no extra dependency)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .recipes import Augment


def random_affine(x: torch.Tensor, aug: Augment) -> torch.Tensor:
    """Rotate, scale and shift each image of x [N, C, H, W] by its own draw from the global RNG."""
    n = x.shape[0]
    rand = lambda: torch.rand(n, device=x.device) * 2 - 1  # uniform in [-1, 1]
    angle = rand() * math.radians(aug.degrees)
    lo, hi = aug.scale
    scale = lo + (rand() + 1) / 2 * (hi - lo)
    # affine_grid maps output coordinates to input ones in [-1, 1] (2 units = image size): invert the zoom.
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    tx, ty = rand() * 2 * aug.translate, rand() * 2 * aug.translate
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
