"""Small random affine warps of real images: the perturbations that h's predictions on real data should
not change under (the consistency term, `consistency_weight`).

Why affine and not a pixel roll: a digit stays the same digit under a few degrees of rotation, a few
percent of scale or shear and a few pixels of shift, and these are exactly the nuisances that split one
digit into two clusters (slanted vs upright 1s) or merge two (4 and 9). One batched affine_grid +
grid_sample call warps the whole batch, so the term costs one more forward/backward of h, no Python loop.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_affine(x: torch.Tensor, gen: torch.Generator, rotate_deg: float = 15.0, scale: float = 0.1,
                  shear_deg: float = 10.0, shift_px: float = 3.0, background: float | None = -1.0,
                  flip: bool = False) -> torch.Tensor:
    """Warp each image of x [N, C, H, W] (model range, background `background`) by its own random affine
    map: rotation in +-rotate_deg, isotropic scale in 1 +- scale, shear in +-shear_deg, shift in +-shift_px,
    and with `flip` a left-right mirror with probability 1/2. Random numbers come from `gen` (CPU) so runs
    are reproducible (without `flip` the draws are the same as before the option existed)."""
    n, _, h, w = x.shape
    u = torch.rand(n, 5, generator=gen) * 2 - 1  # U(-1, 1) per parameter
    rot = u[:, 0] * math.radians(rotate_deg)
    s = 1 + u[:, 1] * scale
    sh = u[:, 2] * math.radians(shear_deg)
    tx, ty = u[:, 3] * shift_px * 2 / w, u[:, 4] * shift_px * 2 / h  # grid coordinates span [-1, 1]
    cos, sin, tan = torch.cos(rot), torch.sin(rot), torch.tan(sh)
    # theta maps output coordinates to input coordinates: rotation . shear, scaled.
    theta = torch.stack([
        torch.stack([cos / s, (cos * tan - sin) / s, tx], 1),
        torch.stack([sin / s, (sin * tan + cos) / s, ty], 1)], 1)
    if flip:  # mirror the output's x coordinate: negate the column theta multiplies it by
        sign = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
        theta[:, :, 0] = theta[:, :, 0] * sign[:, None]
    theta = theta.to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    if background is None:  # no single background value (colour images): repeat each image's edge pixels
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # grid_sample pads with zeros: warp (x - background) so the padding is the background colour.
    return F.grid_sample(x - background, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False) + background


def random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by up to max_shift pixels (background -1 padding): cheap augmentation
    that keeps h from memorising a small labeled set."""
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    p = max_shift
    padded = torch.nn.functional.pad(x, (p, p, p, p), value=-1.0)
    dx = torch.randint(0, 2 * p + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * p + 1, (n,), generator=gen)
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


def random_color(x: torch.Tensor, gen: torch.Generator, gain: float = 0.4) -> torch.Tensor:
    """Recolour each RGB image of x [N, 3, H, W] (model range [-1, 1]): a random permutation of its colour
    channels and a random gain in 1 +- gain per channel, applied around the image's darkest value so the
    background stays the background. What the consistency term then asks is that h's mode not depend on
    colour: on data whose colour carries no class (Colored-MNIST), clustering by colour is the failure
    to prevent. Grey images are returned unchanged."""
    n, c = x.shape[:2]
    if c != 3:
        return x
    perm = torch.argsort(torch.rand(n, 3, generator=gen), dim=1).to(x.device)
    x = torch.gather(x, 1, perm[:, :, None, None].expand_as(x))
    g = (1 + (torch.rand(n, 3, 1, 1, generator=gen) * 2 - 1) * gain).to(x.device, x.dtype)
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    return ((x - lo) * g + lo).clamp(-1, 1)
